"""Restoring a Qdrant backup into a collection, and proving the copy equals what was backed up.

Export backups (Parquet) restore onto any Qdrant, embedded or server; snapshot backups are uploaded
to a server's recover API (`priority=snapshot`, with the checksum) and only onto the Qdrant minor
version that took them. Verification of the copy:

- point_count: the exact count equals the manifest's;
- points_equal_backup (exports): every point of the copy equals its row in the backup file, up to
  `compare_all_up_to` points; above it, a seeded random sample of `sample_size` rows;
- point_fingerprints: the points fingerprinted from the source at backup time (restore_probes.py)
  equal the copy's: this catches a backup file altered after its checksum was computed;
- sample_queries: the queries recorded at backup time return the same top-k from the copy.
"""

import posixpath
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from qdrant_client import QdrantClient, models

from gsv_pipelines.lib import backups, restore_probes, restore_scratch
from gsv_pipelines.lib.backup_policy import TargetPolicy
from gsv_pipelines.lib.manifest import Manifest
from gsv_pipelines.lib.qdrant_export import (
    CONFIG_FILE,
    POINTS_FILE,
    VectorLayout,
    points_of,
    restore_collection,
)
from gsv_pipelines.lib.qdrant_snapshot import upload_snapshot
from gsv_pipelines.lib.restore import Check, RestoreError
from gsv_pipelines.lib.store import BackupStore

COMPARE_BATCH = 500
PROBLEMS_SHOWN = 5
VECTOR_RTOL = 1e-5


def _shown(problems: list[str]) -> str:
    more = len(problems) - PROBLEMS_SHOWN
    return "; ".join(problems[:PROBLEMS_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _minor(version: str | None) -> tuple[str, ...]:
    return tuple((version or "").split(".")[:2])


def _vector_problems(expected: Any, actual: Any) -> list[str]:
    """Differences between two vectors as Qdrant returns them (dense, named, multi, sparse)."""
    if isinstance(expected, dict) or isinstance(actual, dict):
        expected, actual = expected or {}, actual or {}
        problems = []
        for name in sorted(set(expected) | set(actual)):
            if name not in expected or name not in actual:
                problems.append(f"vector {name} {'missing' if name in expected else 'unexpected'}")
            elif _vector_problems(expected[name], actual[name]):
                problems.append(f"vector {name} differs")
        return problems
    if isinstance(expected, models.SparseVector) or isinstance(actual, models.SparseVector):
        same = (
            isinstance(expected, models.SparseVector)
            and isinstance(actual, models.SparseVector)
            and sorted(zip(expected.indices, np.float32(expected.values).tolist(), strict=True))
            == sorted(zip(actual.indices, np.float32(actual.values).tolist(), strict=True))
        )
        return [] if same else ["sparse vector differs"]
    a = np.asarray(expected, dtype=np.float64)
    b = np.asarray(actual, dtype=np.float64)
    # Cosine vectors are renormalized on insert, which may move their last bit.
    scale = max(float(np.abs(a).max(initial=0.0)), 1e-12)
    if a.shape != b.shape or not np.all(np.abs(a - b) <= VECTOR_RTOL * scale):
        return ["vector differs"]
    return []


class QdrantHandler:
    """Restores into collections of one Qdrant (the client's), server or embedded."""

    kind = backups.QDRANT
    name_limit = 200

    def __init__(
        self,
        client: QdrantClient,
        store: BackupStore,
        *,
        server_url: str | None = None,
        api_key: str | None = None,
        compare_all_up_to: int = 20000,
        sample_size: int = 2000,
        seed: int = 12,
        batch_size: int = 1000,
        safety_policy: TargetPolicy | None = None,
    ):
        self.client, self.store = client, store
        self.server_url, self.api_key = server_url, api_key
        self.compare_all_up_to, self.sample_size, self.seed = compare_all_up_to, sample_size, seed
        self.batch_size = batch_size
        self.safety_policy = safety_policy or TargetPolicy()

    def location(self) -> str:
        return f"Qdrant server {self.server_url}" if self.server_url else "embedded Qdrant"

    def is_source(self, name: str, target: str) -> bool:
        return name == target

    def exists(self, name: str) -> bool:
        return self.client.collection_exists(name)

    def describe(self, name: str) -> dict[str, Any]:
        return {"points": self.client.count(name, exact=True).count}

    def scrub(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text

    def restore(self, manifest: Manifest, name: str, marker: dict | None) -> dict[str, Any]:
        if manifest.method == "export":
            points = restore_collection(
                self.client,
                self.store,
                manifest.folder,
                name,
                batch_size=self.batch_size,
                metadata=marker,
            )
            return {"points_restored": points}
        return self._restore_snapshot(manifest, name, marker)

    def _restore_snapshot(self, manifest: Manifest, name: str, marker: dict | None) -> dict:
        if not self.server_url:
            raise RestoreError(
                f"backup {manifest.backup_id} is a Qdrant snapshot: it restores onto a Qdrant "
                "server only (GSV_QDRANT_URL), not into embedded Qdrant"
            )
        if len(manifest.files) != 1:
            raise RestoreError(
                f"backup {manifest.backup_id} holds {len(manifest.files)} node snapshots (one per "
                "node with shards); a restore recovers single-node snapshots only: upload each "
                "node's snapshot to that node (qdrant_snapshot.upload_snapshot)"
            )
        backed_up = manifest.details.get("qdrant_version")
        running = self.client.info().version
        if _minor(backed_up) != _minor(running):
            raise RestoreError(
                f"backup {manifest.backup_id} is a snapshot of Qdrant {backed_up}; this server "
                f"runs {running}: snapshots restore onto the same minor version only (restore "
                "an export backup instead)"
            )
        [entry] = manifest.files
        key = posixpath.join(manifest.folder, entry["name"])
        upload_snapshot(
            self.server_url,
            self.api_key,
            name,
            self.store.iter_chunks(key),
            checksum=entry["sha256"],
            size=entry["size"],
            priority="snapshot",
        )
        if marker:
            self.client.update_collection(name, metadata=marker)
        return {"snapshot_uploaded": entry["name"], "bytes_uploaded": entry["size"]}

    def verify(self, manifest: Manifest, name: str) -> list[Check]:
        details = manifest.details
        expected = details.get("points")
        actual = self.client.count(name, exact=True).count
        checks = [
            Check(
                "point_count",
                actual == expected,
                f"{actual} points, the manifest says {expected}",
            )
        ]
        if manifest.method == "export":
            checks.append(self._compare_with_file(manifest, name))
        else:
            checks.append(
                Check(
                    "points_equal_backup",
                    None,
                    "a snapshot is compared through its fingerprints and queries",
                )
            )
        fingerprints = details.get("point_fingerprints")
        if fingerprints:
            result = restore_probes.check_fingerprints(self.client, name, fingerprints)
            checks.append(
                Check(
                    "point_fingerprints",
                    not result.problems,
                    _shown(result.problems)
                    or f"{result.checked} point(s) fingerprinted from the source at backup time "
                    "match",
                )
            )
        else:
            checks.append(Check("point_fingerprints", None, "none recorded at backup time"))
        queries = details.get("sample_queries")
        if queries and queries.get("queries"):
            result = restore_probes.check_queries(self.client, name, queries)
            checks.append(
                Check(
                    "sample_queries",
                    not result.problems,
                    _shown(result.problems)
                    or f"{result.checked} sample queries return the top-{queries['top_k']} the "
                    "source returned at backup time",
                )
            )
        else:
            checks.append(Check("sample_queries", None, "none recorded at backup time"))
        return checks

    def _compare_with_file(self, manifest: Manifest, name: str) -> Check:
        """Every row of the backup file (or a seeded sample of them) against the copy."""
        config = self.store.read_json(posixpath.join(manifest.folder, CONFIG_FILE))
        layout = VectorLayout.of(models.CollectionParams(**config["config"]["params"]))
        total = manifest.details.get("points") or 0
        wanted: set[int] | None = None
        if total > self.compare_all_up_to:
            chosen = random.Random(self.seed).sample(range(total), min(self.sample_size, total))
            wanted = set(chosen)
        compared, problems, position = 0, [], 0
        pending: list[models.PointStruct] = []

        def flush() -> None:
            nonlocal compared
            if not pending:
                return
            found = {
                r.id: r
                for r in self.client.retrieve(
                    name, [p.id for p in pending], with_payload=True, with_vectors=True
                )
            }
            for point in pending:
                record = found.get(point.id)
                if record is None:
                    problems.append(f"point {point.id}: missing")
                    continue
                if record.payload != point.payload:
                    problems.append(f"point {point.id}: payload differs")
                problems.extend(
                    f"point {point.id}: {p}" for p in _vector_problems(point.vector, record.vector)
                )
            compared += len(pending)
            pending.clear()

        with self.store.open(posixpath.join(manifest.folder, POINTS_FILE)) as source:
            for batch in pq.ParquetFile(source).iter_batches(batch_size=COMPARE_BATCH):
                if wanted is not None:
                    rows = [i for i in range(batch.num_rows) if position + i in wanted]
                    position += batch.num_rows
                    if not rows:
                        continue
                    batch = batch.take(pa.array(rows))
                pending.extend(points_of(pa.Table.from_batches([batch]), layout))
                if len(pending) >= COMPARE_BATCH:
                    flush()
            flush()
        scope = "every point" if wanted is None else f"a seeded sample (seed {self.seed})"
        return Check(
            "points_equal_backup",
            not problems,
            _shown(problems) or f"{scope}: {compared} point(s) equal their rows in the backup",
        )

    def drop(self, name: str) -> None:
        self.client.delete_collection(name)

    def safety_backup(self, name: str, run_id: str) -> Manifest:
        outcome = backups.backup_qdrant_collection(
            self.client,
            name,
            self.store,
            self.safety_policy,
            server_url=self.server_url,
            api_key=self.api_key,
            run_id=run_id,
            reason="safety backup before a restore overwrote it",
            prune=False,
        )
        return outcome.manifest

    def leftovers(self) -> list[restore_scratch.Leftover]:
        found = []
        for collection in self.client.get_collections().collections:
            if not collection.name.startswith(restore_scratch.PREFIX):
                continue
            metadata = self.client.get_collection(collection.name).config.metadata or {}
            if restore_scratch.MARKER_KEY in metadata:
                found.append(restore_scratch.Leftover(collection.name, dict(metadata)))
        return found
