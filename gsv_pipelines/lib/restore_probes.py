"""What a Qdrant backup records about its source, so that a restore can be proven against it.

A file's checksum proves the file unchanged since the checksum was computed; a checksum
recomputed after the data changed (silent corruption, a faulty tool) proves nothing. So at backup
time the manifest also records, from the source collection itself:

- point fingerprints: for every point of a small collection, or a seeded sample of a large one,
  the id, the SHA-256 of the payload, and per vector its norm and its projections onto fixed
  pseudo-random directions. Dense vectors are compared with a tolerance, because Qdrant
  renormalizes cosine vectors on insert, which may move their last bit; sparse vectors and
  payloads exactly.
- sample queries: pseudo-random query vectors and the exact top-k (ids and scores) the source
  answered. Each query is asked before and after the backup reads the collection, and only those
  answered the same both times are kept: a write in between would make the answer unreliable.

The directions and query vectors derive from SHAKE-256 of a label, so they are the same on every
machine and numpy version, and the manifest need not store them.
"""

import functools
import hashlib
import json
import random
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

FINGERPRINT_POINTS = 256
PROJECTIONS = 4
SAMPLE_QUERIES = 5
TOP_K = 10
SEED = 20_261_127
# Relative to the vector's norm: float32 renormalization moves a projection by ~1e-7.
VECTOR_TOLERANCE = 1e-5
SCORE_TOLERANCE = 1e-4


def _unit_rows(label: str, rows: int, dim: int) -> np.ndarray:
    raw = hashlib.shake_256(label.encode()).digest(4 * rows * dim)
    values = np.frombuffer(raw, dtype="<u4").astype(np.float64) / 2**32 - 0.5
    matrix = values.reshape(rows, dim)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


@functools.cache
def directions(dim: int) -> np.ndarray:
    return _unit_rows(f"gsv-probe-directions:{dim}", PROJECTIONS, dim)


def query_vectors(dim: int, count: int, seed: int = SEED) -> np.ndarray:
    return _unit_rows(f"gsv-probe-queries:{seed}:{dim}", count, dim).astype(np.float32)


def payload_digest(payload: dict | None) -> str:
    text = json.dumps(payload or {}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _dense(vector: Any) -> list[float]:
    array = np.asarray(vector, dtype=np.float64)
    return [float(np.linalg.norm(array)), *map(float, directions(array.size) @ array)]


def _multi(vectors: Any) -> list[float]:
    array = np.asarray(vectors, dtype=np.float64)
    summed = array.sum(axis=0)
    norms = np.linalg.norm(array, axis=1).sum()
    return [float(len(array)), float(norms), *map(float, directions(summed.size) @ summed)]


def _sparse(vector: models.SparseVector) -> str:
    pairs = sorted(zip(vector.indices, np.float32(vector.values).tolist(), strict=True))
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def fingerprint(record: models.Record) -> dict[str, Any]:
    """A point's fingerprint: id, payload digest, and one entry per vector."""
    vector = record.vector
    vectors: dict[str, Any] = {}
    if isinstance(vector, dict):
        for name, value in sorted(vector.items()):
            if isinstance(value, models.SparseVector):
                vectors[f"sparse:{name}"] = _sparse(value)
            elif value and isinstance(value[0], list):
                vectors[f"multi:{name}"] = _multi(value)
            else:
                vectors[f"dense:{name}"] = _dense(value)
    elif vector is not None:
        vectors["dense:"] = _dense(vector)
    return {"id": record.id, "payload_sha256": payload_digest(record.payload), "vectors": vectors}


def fingerprint_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What differs between a recorded fingerprint and a restored point's (empty: the same)."""
    problems = []
    if expected["payload_sha256"] != actual["payload_sha256"]:
        problems.append("payload differs")
    want, got = expected["vectors"], actual["vectors"]
    for name in sorted(set(want) | set(got)):
        label = name.split(":", 1)[1] or "vector"
        if name not in got or name not in want:
            problems.append(f"{label}: {'missing' if name not in got else 'unexpected'}")
        elif name.startswith("sparse:"):
            if want[name] != got[name]:
                problems.append(f"{label} differs")
        else:
            a, b = np.asarray(want[name]), np.asarray(got[name])
            scale = max(abs(float(a[1 if name.startswith("multi:") else 0])), 1e-12)
            if a.shape != b.shape or not np.all(np.abs(a - b) <= VECTOR_TOLERANCE * scale):
                problems.append(f"{label} differs")
    return problems


class PointSampler:
    """A seeded reservoir sample of the points seen, fingerprinted as they are seen.

    `observe` takes records with vectors and payloads (an export reads them anyway); ids alone
    may be observed instead, and `fingerprint_ids` then reads just the sampled points.
    """

    def __init__(self, size: int = FINGERPRINT_POINTS, seed: int = SEED):
        self.size = size
        self.seen = 0
        self.sample: list[Any] = []
        self._random = random.Random(seed)

    def observe(self, items: Iterable[Any], measure=fingerprint) -> None:
        for item in items:
            if len(self.sample) < self.size:
                self.sample.append(measure(item))
            else:
                slot = self._random.randrange(self.seen + 1)
                if slot < self.size:
                    self.sample[slot] = measure(item)
            self.seen += 1

    def result(self) -> dict[str, Any]:
        return {
            "seed": SEED,
            "projections": PROJECTIONS,
            "points_seen": self.seen,
            "points": sorted(self.sample, key=lambda f: (isinstance(f["id"], str), f["id"])),
        }


def sample_existing_points(client: QdrantClient, collection: str) -> dict[str, Any]:
    """Fingerprints of a seeded sample of the points in `collection` now (snapshot backups):
    the ids are scrolled alone, then only the sampled points are read with their vectors."""
    sampler = PointSampler()
    offset = None
    while True:
        records, offset = client.scroll(
            collection, limit=10_000, offset=offset, with_payload=False, with_vectors=False
        )
        sampler.observe((r.id for r in records), measure=lambda point_id: point_id)
        if offset is None:
            break
    chosen = sampler.sample
    sampler.sample = [
        fingerprint(record)
        for start in range(0, len(chosen), 256)
        for record in client.retrieve(
            collection, chosen[start : start + 256], with_payload=True, with_vectors=True
        )
    ]
    return sampler.result()


def query_target(params: models.CollectionParams) -> tuple[str | None, int] | None:
    """The dense vector sample queries search (name or None, dimension); None if there is none."""
    vectors = params.vectors
    if isinstance(vectors, models.VectorParams):
        return (None, vectors.size) if vectors.multivector_config is None else None
    for name, vector_params in sorted((vectors or {}).items()):
        if vector_params.multivector_config is None:
            return name, vector_params.size
    return None


def ask(
    client: QdrantClient, collection: str, using: str | None, vector: list[float], top_k: int
) -> list[dict[str, Any]]:
    """The exact top-k for `vector`, as [{"id", "score"}]."""
    with warnings.catch_warnings():
        # Embedded Qdrant always searches exactly, and says so when asked to.
        warnings.filterwarnings("ignore", "Local mode performs exact", UserWarning)
        response = client.query_points(
            collection,
            query=vector,
            using=using,
            limit=top_k,
            with_payload=False,
            search_params=models.SearchParams(exact=True),
        )
    return [{"id": p.id, "score": float(p.score)} for p in response.points]


def answers_match(
    expected: list[dict[str, Any]], actual: list[dict[str, Any]], tolerance: float = SCORE_TOLERANCE
) -> bool:
    """The same top-k: the same scores, and the same ids at every score above the k-th.

    Points with equal scores (duplicate vectors) may come back in any order, and at the k-th
    score any of them may be the one cut off; so ties compare as sets, and the last score's
    group only by its scores.
    """
    if len(expected) != len(actual):
        return False
    for e, a in zip(expected, actual, strict=True):
        if abs(e["score"] - a["score"]) > tolerance * max(1.0, abs(e["score"])):
            return False
    if not expected:
        return True
    last = expected[-1]["score"]
    margin = tolerance * max(1.0, abs(last))

    def above(answer):
        return {str(p["id"]) for p in answer if p["score"] > last + margin}

    return above(expected) == above(actual)


class QueryRecorder:
    """Sample queries asked before and after a backup reads the source; the stable ones kept."""

    def __init__(self, client: QdrantClient, collection: str, count: int = SAMPLE_QUERIES):
        self.client, self.collection = client, collection
        target = query_target(client.get_collection(collection).config.params)
        self.using, self.vectors = None, []
        if target is not None:
            self.using, dim = target
            self.vectors = query_vectors(dim, count).tolist()
        self.before = [self._ask(v) for v in self.vectors]

    def _ask(self, vector: list[float]) -> list[dict[str, Any]]:
        return ask(self.client, self.collection, self.using, vector, TOP_K)

    def result(self) -> dict[str, Any]:
        after = [self._ask(v) for v in self.vectors]
        kept = [
            {"vector": vector, "answer": answer}
            for vector, answer, later in zip(self.vectors, self.before, after, strict=True)
            if answers_match(answer, later)
        ]
        return {
            "using": self.using,
            "top_k": TOP_K,
            "queries": kept,
            "unstable": len(self.vectors) - len(kept),
        }


@dataclass
class ProbeResult:
    """One verification of a restore against what the backup recorded."""

    checked: int
    problems: list[str]


def check_fingerprints(client: QdrantClient, collection: str, recorded: dict) -> ProbeResult:
    """Each recorded point, read back from `collection`, against its fingerprint."""
    points = recorded.get("points") or []
    problems = []
    for start in range(0, len(points), 500):
        batch = points[start : start + 500]
        found = {
            r.id: r
            for r in client.retrieve(
                collection, [p["id"] for p in batch], with_payload=True, with_vectors=True
            )
        }
        for expected in batch:
            record = found.get(expected["id"])
            if record is None:
                problems.append(f"point {expected['id']}: missing")
                continue
            differences = fingerprint_differences(expected, fingerprint(record))
            problems += [f"point {expected['id']}: {d}" for d in differences]
    return ProbeResult(len(points), problems)


def check_queries(client: QdrantClient, collection: str, recorded: dict) -> ProbeResult:
    """Each recorded query asked of `collection`: the same top-k as the source answered."""
    problems = []
    queries = recorded.get("queries") or []
    for number, query in enumerate(queries, 1):
        answer = ask(client, collection, recorded.get("using"), query["vector"], recorded["top_k"])
        if not answers_match(query["answer"], answer):
            want = [p["id"] for p in query["answer"]]
            got = [p["id"] for p in answer]
            problems.append(f"query {number}: top-{recorded['top_k']} {got}, at backup {want}")
    return ProbeResult(len(queries), problems)
