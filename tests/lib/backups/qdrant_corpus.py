"""Qdrant collections of every shape, generated from a seed, and an independent reading of them.

`corpus(seed)` gives one collection per shape a backup must carry: unnamed dense vectors of every
distance and several sizes, named dense vectors of mixed distances with points lacking some,
sparse vectors of any length (empty ones too), named and unnamed multivectors, mixed named dense +
sparse + multi, integer and uuid ids (mixed in one collection), payloads with nulls, unicode,
nested objects and arrays, -0.0 and 1e308, and empty collections. Values are float64 draws (not
float32-exact, as embedded Qdrant keeps what it is given), float32-exact values, unit and zero
cosine vectors. `random_spec(rng)` draws a random layout for property-style rounds.

`read_as_held(path, name)` is the comparison's source of truth, written without any of the
backup or restore code: a freshly opened embedded Qdrant, asked through the public API before
anything else touches it, returns what its folder holds (qdrant-client 1.20: the in-memory copy
of a client that upserted or queried is normalized and float32, its file is not; a fresh client
loads the file). Values are compared by their float.hex spelling: bit for bit, -0.0 is not 0.0.
"""

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from qdrant_client import QdrantClient, models

D = models.Distance
DISTANCES = (D.COSINE, D.DOT, D.EUCLID, D.MANHATTAN)
TEXTS = ("", "plain", "Grüße ✓", "日本語のテキスト", "עברית", "e\u0301", "🦜🔗", "tab\tnew\nline")


@dataclass
class Spec:
    name: str
    vectors: Any  # VectorParams, or a dict of them (possibly empty)
    sparse: dict[str, models.SparseVectorParams] = field(default_factory=dict)
    points: list[models.PointStruct] = field(default_factory=list)

    def create(self, client: QdrantClient) -> None:
        client.create_collection(
            self.name, vectors_config=self.vectors, sparse_vectors_config=self.sparse or None
        )
        for start in range(0, len(self.points), 200):
            client.upsert(self.name, self.points[start : start + 200])


def _value(rng: random.Random) -> float:
    kind = rng.random()
    if kind < 0.6:
        return rng.gauss(0, 1)  # a double: not exact in float32
    if kind < 0.8:
        return float(int(rng.uniform(-1, 1) * 2**20)) / 2**20  # exact in float32
    return rng.choice([0.0, -0.0, 1.0, -1.0, 1e-30, 3.5e15, 0.1])


def _dense(rng: random.Random, size: int, distance: D) -> list[float]:
    roll = rng.random()
    if distance == D.COSINE and roll < 0.1:
        return [0.0] * size  # a zero vector: no direction to normalize
    vector = [_value(rng) for _ in range(size)]
    if distance == D.COSINE and roll < 0.3:
        norm = sum(v * v for v in vector) ** 0.5 or 1.0
        vector = [v / norm for v in vector]  # already unit length, in double precision
    return vector


def _multi(rng: random.Random, size: int, distance: D) -> list[list[float]]:
    return [_dense(rng, size, distance) for _ in range(rng.randint(1, 5))]


def _sparse(rng: random.Random) -> models.SparseVector:
    length = rng.choice([0, 0, 1, 2, 3, 7, 40])
    indices = rng.sample(range(100_000), length)
    return models.SparseVector(indices=indices, values=[_value(rng) for _ in indices])


def _payload(rng: random.Random, number: int) -> dict[str, Any] | None:
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.2:
        return {}
    return {
        "n": number,
        "text": rng.choice(TEXTS),
        "missing": None,
        "flags": [True, False, None],
        "nested": {"list": [1, 2.5, {"deep": [None, "ü", []]}], "empty": {}},
        "numbers": [0, -0.0, 1e308, -(2**62), 2**63 + 5, rng.gauss(0, 1)],
        "ключ.with.dots": rng.choice(TEXTS),
    }


def _ids(rng: random.Random, count: int, kind: str) -> list[int | str]:
    ints = list({rng.getrandbits(63): None for _ in range(count)})
    if kind == "int":
        return [0, 2**64 - 1, *ints[2:]][:count]  # the smallest and the largest id Qdrant takes
    uuids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]
    if kind == "uuid":
        return uuids
    return [ints[i] if i % 2 else uuids[i] for i in range(count)]


def _points(rng, count, kind, make_vector) -> list[models.PointStruct]:
    return [
        models.PointStruct(id=point_id, vector=make_vector(i), payload=_payload(rng, i))
        for i, point_id in enumerate(_ids(rng, count, kind))
    ]


def corpus(seed: int, count: int = 23) -> list[Spec]:
    """One collection per shape; `count` points each (with batches of 7, several batches and a
    partial last one), the empty ones aside."""
    rng = random.Random(seed)
    specs = []
    for distance, size in zip(DISTANCES, (1, 3, 17, 64), strict=True):
        specs.append(
            Spec(
                f"dense_{distance.value.lower()}_{size}",
                models.VectorParams(size=size, distance=distance),
                points=_points(rng, count, "int", lambda _i, s=size, d=distance: _dense(rng, s, d)),
            )
        )
    named = {
        "text": models.VectorParams(size=4, distance=D.COSINE),
        "image": models.VectorParams(size=7, distance=D.EUCLID),
        "tiny": models.VectorParams(size=1, distance=D.DOT),
        "half": models.VectorParams(size=3, distance=D.MANHATTAN, datatype=models.Datatype.FLOAT16),
    }

    def some_named(i: int) -> dict[str, Any]:
        chosen = [n for n in named if rng.random() < 0.7] if i % 5 else []
        return {n: _dense(rng, named[n].size, named[n].distance) for n in chosen}

    specs.append(Spec("named_dense", named, points=_points(rng, count, "uuid", some_named)))
    sparse = {"keywords": models.SparseVectorParams(), "tags": models.SparseVectorParams()}

    def some_sparse(_i: int) -> dict[str, Any]:
        return {n: _sparse(rng) for n in sparse if rng.random() < 0.8}

    specs.append(Spec("sparse_only", {}, sparse, _points(rng, count, "mixed", some_sparse)))
    multi = {
        name: models.VectorParams(
            size=size,
            distance=distance,
            multivector_config=models.MultiVectorConfig(
                comparator=models.MultiVectorComparator.MAX_SIM
            ),
        )
        for name, size, distance in (("colbert", 5, D.COSINE), ("patches", 2, D.DOT))
    }

    def some_multi(_i: int) -> dict[str, Any]:
        return {n: _multi(rng, p.size, p.distance) for n, p in multi.items() if rng.random() < 0.8}

    specs.append(Spec("multivectors", multi, points=_points(rng, count, "int", some_multi)))
    unnamed_multi = models.VectorParams(
        size=3,
        distance=D.COSINE,
        multivector_config=models.MultiVectorConfig(
            comparator=models.MultiVectorComparator.MAX_SIM
        ),
    )
    specs.append(
        Spec(
            "unnamed_multivector",
            unnamed_multi,
            points=_points(rng, count, "uuid", lambda _i: _multi(rng, 3, D.COSINE)),
        )
    )
    mixed = {"dense": models.VectorParams(size=6, distance=D.COSINE), "colbert": multi["colbert"]}

    def some_mixed(i: int) -> dict[str, Any]:
        return {**some_multi(i), **some_sparse(i), "dense": _dense(rng, 6, D.COSINE)}

    specs.append(
        Spec(
            "mixed",
            {**mixed, "patches": multi["patches"]},
            sparse,
            _points(rng, count, "mixed", some_mixed),
        )
    )
    specs.append(Spec("empty_dense", models.VectorParams(size=8, distance=D.COSINE)))
    specs.append(Spec("empty_mixed", mixed, sparse))
    return specs


def random_spec(rng: random.Random, name: str) -> Spec:
    """A random layout: unnamed or 1-3 named dense/multi vectors of random distances and sizes,
    0-2 sparse vectors, 0-40 points with random id kinds."""
    count = rng.choice([0, 1, 6, 7, 8, 40])
    kind = rng.choice(["int", "uuid", "mixed"])
    if rng.random() < 0.3:
        distance, size = rng.choice(DISTANCES), rng.randint(1, 12)
        return Spec(
            name,
            models.VectorParams(size=size, distance=distance),
            points=_points(rng, count, kind, lambda _i: _dense(rng, size, distance)),
        )
    vectors = {}
    for number in range(rng.randint(0, 3)):
        config = (
            models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
            if rng.random() < 0.3
            else None
        )
        vectors[f"v{number}"] = models.VectorParams(
            size=rng.randint(1, 9), distance=rng.choice(DISTANCES), multivector_config=config
        )
    sparse = {
        f"s{n}": models.SparseVectorParams() for n in range(rng.randint(0 if vectors else 1, 2))
    }

    def make(_i: int) -> dict[str, Any]:
        vector: dict[str, Any] = {}
        for n, p in vectors.items():
            if rng.random() < 0.8:
                make_one = _multi if p.multivector_config else _dense
                vector[n] = make_one(rng, p.size, p.distance)
        vector.update({n: _sparse(rng) for n in sparse if rng.random() < 0.8})
        return vector

    return Spec(name, vectors, sparse, _points(rng, count, kind, make))


def exact(value: Any) -> Any:
    if isinstance(value, models.SparseVector):
        pairs = zip(value.indices, map(float.hex, value.values), strict=True)
        return ("sparse", tuple(sorted(pairs)))
    if isinstance(value, list):
        return tuple(exact(v) for v in value)
    return float.hex(float(value))


def read_as_held(path: str, name: str) -> dict[Any, tuple[Any, str]]:
    """Every point of `name` in the embedded Qdrant at `path`: id → (vectors, payload JSON),
    read by a client opened for this alone (no other client may hold the folder)."""
    client = QdrantClient(path=path)
    try:
        records, _ = client.scroll(name, limit=1_000_000, with_vectors=True, with_payload=True)
    finally:
        client.close()
    held = {}
    for record in records:
        vector = record.vector
        named = vector if isinstance(vector, dict) else {"": vector}
        vectors = tuple(sorted((n, exact(v)) for n, v in named.items() if v is not None))
        held[record.id] = (vectors, json.dumps(record.payload or {}, sort_keys=True))
    return held


def differences(source: dict, copy: dict) -> list[str]:
    """Every point that differs between two readings, by id (empty: equal)."""
    found = [f"{i}: missing" for i in source.keys() - copy.keys()]
    found += [f"{i}: unexpected" for i in copy.keys() - source.keys()]
    for point_id in source.keys() & copy.keys():
        (want_vectors, want_payload), (got_vectors, got_payload) = source[point_id], copy[point_id]
        if want_vectors != got_vectors:
            found.append(f"{point_id}: vectors differ")
        if want_payload != got_payload:
            found.append(f"{point_id}: payload differs")
    return sorted(found)
