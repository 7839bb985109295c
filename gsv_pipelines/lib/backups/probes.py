"""What a Qdrant backup records about its source, so that a restore can be proven against it.

A file's checksum proves the file unchanged since the checksum was computed; a checksum
recomputed after the data changed (silent corruption, a faulty tool) proves nothing. So at backup
time the manifest also records, from the source collection itself:

- point fingerprints: for every point of a small collection, or a seeded sample of a large one,
  the id, the SHA-256 of the payload, and per vector the SHA-256 of its values exactly as the
  source holds them (qdrant_held.py), as float64. Equal fingerprints mean bit-equal values: no
  tolerance, so a vector that moved by one ulp differs.
- sample queries: pseudo-random query vectors and the exact top-k (ids and scores) the source
  answered. Each query is asked before and after the backup reads the collection, and only those
  answered the same both times are kept: a write in between would make the answer unreliable.

The query vectors derive from SHAKE-256 of a label, so they are the same on every machine and
numpy version, and the manifest need not store them.
"""

import hashlib
import json
import random
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from gsv_pipelines.lib.backups import qdrant_held

FINGERPRINT_FORMAT = 2  # 1: norms and projections compared with a tolerance (before 2026-12)
FINGERPRINT_POINTS = 256
SAMPLE_QUERIES = 5
TOP_K = 10
SEED = 20_261_127
SCORE_TOLERANCE = 1e-4


def _unit_rows(label: str, rows: int, dim: int) -> np.ndarray:
    raw = hashlib.shake_256(label.encode()).digest(4 * rows * dim)
    values = np.frombuffer(raw, dtype="<u4").astype(np.float64) / 2**32 - 0.5
    matrix = values.reshape(rows, dim)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def query_vectors(dim: int, count: int, seed: int = SEED) -> np.ndarray:
    return _unit_rows(f"gsv-probe-queries:{seed}:{dim}", count, dim).astype(np.float32)


def payload_digest(payload: dict | None) -> str:
    text = json.dumps(payload or {}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def vector_digest(value: Any) -> str:
    """SHA-256 of a vector's exact values: kind, shape and float64 bytes (little-endian).

    A sparse vector is taken in index order (every Qdrant sorts it so); a dense vector or a
    multivector by its shape, so [[1, 2]] and [1, 2] differ."""
    digest = hashlib.sha256()
    if qdrant_held.is_sparse(value):
        order = np.argsort(np.asarray(value.indices, dtype=np.int64), kind="stable")
        digest.update(b"sparse")
        digest.update(np.asarray(value.indices, dtype="<i8")[order].tobytes())
        digest.update(np.asarray(value.values, dtype="<f8")[order].tobytes())
    else:
        array = np.asarray(value, dtype="<f8")
        digest.update(f"dense{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def fingerprint(point: Any) -> dict[str, Any]:
    """A point's fingerprint: id, payload digest, and the digest of each vector by name."""
    return {
        "id": point.id,
        "payload_sha256": payload_digest(qdrant_held.payload_of(point)),
        "vectors": {
            name: vector_digest(value)
            for name, value in sorted(qdrant_held.vectors_of(point).items())
        },
    }


def fingerprint_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What differs between a recorded fingerprint and a point's (empty: bit-equal)."""
    problems = []
    if expected["payload_sha256"] != actual["payload_sha256"]:
        problems.append("payload differs")
    want, got = expected["vectors"], actual["vectors"]
    for name in sorted(set(want) | set(got)):
        label = name or "vector"
        if name not in got or name not in want:
            problems.append(f"{label}: {'missing' if name not in got else 'unexpected'}")
        elif want[name] != got[name]:
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
            "format": FINGERPRINT_FORMAT,
            "seed": SEED,
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
    held = qdrant_held.retrieve(client, collection, chosen)
    sampler.sample = [fingerprint(held[i]) for i in chosen if i in held]
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


def compare_fingerprints(recorded: dict, found: dict[Any, Any]) -> ProbeResult | None:
    """Each recorded point against the point of that id in `found` (read from a restored copy,
    or the backup's own rows); None when the record is of an older format, not comparable."""
    if recorded.get("format") != FINGERPRINT_FORMAT:
        return None
    points = recorded.get("points") or []
    problems = []
    for expected in points:
        point = found.get(expected["id"])
        if point is None:
            problems.append(f"point {expected['id']}: missing")
            continue
        differences = fingerprint_differences(expected, fingerprint(point))
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
