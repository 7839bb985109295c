"""Restoring a Qdrant backup into a collection, and proving the copy equals the source.

Export backups (Parquet) restore onto any Qdrant, embedded or server; snapshot backups are uploaded
to a server's recover API (`priority=snapshot`, with the checksum) and only onto the Qdrant minor
version that took them.

How the copy is proven equal to the source, never on our own intermediate copy alone: every value
is read as the destination holds it (qdrant_held.py: a server's answers, embedded Qdrant's file,
not its in-memory copy), and compared bit for bit, with one documented exception.

- point_count: the exact count equals the manifest's;
- collection_config: the copy's vectors and sparse vectors are configured as the backup says;
- points_equal_backup (exports): every point of the copy equals its row in the backup file, up to
  `compare_all_up_to` points; above it, a seeded random sample of `sample_size` rows plus every
  fingerprinted row. Equal means the same payload (as canonical JSON) and the same vector names
  with bit-equal values as the destination holds them given the row's values
  (qdrant_held.held_form): identical on embedded Qdrant, float32 on a server. The exception: a
  server normalizes a cosine vector that is not unit length already (a backup of embedded Qdrant,
  which keeps vectors as given), so such a vector is compared with its float32 normalization to
  1e-6 per component; a server's own backups are unit already and compare bit for bit.
- point_fingerprints: the source's points as fingerprinted at backup time (SHA-256 of exact
  values, restore_probes.py) equal the backup's rows (exports) or the copy's points (snapshots).
  With points_equal_backup this chains source = backup = copy for every fingerprinted point, and
  it catches a backup file altered after its checksum was computed.
- sample_queries: the queries recorded at backup time return the same top-k from the copy.

So a copy that differs from the source in any value, payload, vector name or count fails one of
them; a copy equal to it passes every one, because each side is read as held and compared exactly.
"""

import posixpath
import random
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from qdrant_client import QdrantClient, models

from gsv_pipelines.lib.backups import make as backups
from gsv_pipelines.lib.backups import probes as restore_probes
from gsv_pipelines.lib.backups import qdrant_held
from gsv_pipelines.lib.backups.policy import TargetPolicy
from gsv_pipelines.lib.backups.qdrant_export import (
    CONFIG_FILE,
    POINTS_FILE,
    VectorLayout,
    points_of,
    restore_collection,
    row_ids,
)
from gsv_pipelines.lib.backups.qdrant_snapshot import upload_snapshot
from gsv_pipelines.lib.core.manifest import Manifest
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills import scratch as restore_scratch
from gsv_pipelines.lib.drills.restore import Check, RestoreError

COMPARE_BATCH = 500
PROBLEMS_SHOWN = 5


def _shown(problems: list[str]) -> str:
    more = len(problems) - PROBLEMS_SHOWN
    return "; ".join(problems[:PROBLEMS_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _minor(version: str | None) -> tuple[str, ...]:
    return tuple((version or "").split(".")[:2])


def _point_problems(expected: Any, actual: Any, params: dict, where: str) -> list[str]:
    """Differences between a backup row and the copy's point, as the destination holds it."""
    problems = []
    if restore_probes.payload_digest(qdrant_held.payload_of(expected)) != (
        restore_probes.payload_digest(qdrant_held.payload_of(actual))
    ):
        problems.append("payload differs")
    want, got = qdrant_held.vectors_of(expected), qdrant_held.vectors_of(actual)
    for name in sorted(set(want) | set(got)):
        label = f"vector {name}" if name else "vector"
        if name not in want or name not in got:
            problems.append(f"{label} {'missing' if name in want else 'unexpected'}")
            continue
        held, tolerance = qdrant_held.held_form(where, params.get(name), want[name])
        if not qdrant_held.same_values(held, got[name], tolerance):
            problems.append(f"{label} differs")
    return problems


def _vector_params(config: dict[str, Any]) -> dict[str, models.VectorParams | None]:
    """Each vector's configuration by name ("" for the unnamed one; None for sparse ones)."""
    params = models.CollectionParams(**config["config"]["params"])
    vectors = params.vectors
    named = {"": vectors} if isinstance(vectors, models.VectorParams) else dict(vectors or {})
    return {**named, **dict.fromkeys(params.sparse_vectors or {})}


class QdrantHandler:
    """Restores into collections of one Qdrant (the client's), server or embedded."""

    kind = backups.QDRANT
    name_limit = 200

    def __init__(
        self,
        client: QdrantClient,
        store: ArtefactStore,
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
            ),
            self._compare_config(manifest, name),
        ]
        fingerprints = details.get("point_fingerprints") or {}
        fingerprinted = [f["id"] for f in fingerprints.get("points") or []]
        if manifest.method == "export":
            compared, backup_rows = self._compare_with_file(manifest, name, set(fingerprinted))
            checks.append(compared)
            fingerprint_source, found = "the backup's rows", backup_rows
        else:
            checks.append(
                Check(
                    "points_equal_backup",
                    None,
                    "a snapshot is compared through its fingerprints and queries",
                )
            )
            fingerprint_source = "the copy's points"
            found = qdrant_held.retrieve(self.client, name, fingerprinted)
        checks.append(self._check_fingerprints(fingerprints, found, fingerprint_source))
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

    @staticmethod
    def _check_fingerprints(recorded: dict, found: dict, source: str) -> Check:
        if not recorded:
            return Check("point_fingerprints", None, "none recorded at backup time")
        result = restore_probes.compare_fingerprints(recorded, found)
        if result is None:
            return Check(
                "point_fingerprints", None, "recorded in an older format: not comparable exactly"
            )
        if not result.checked:
            return Check("point_fingerprints", None, "the source held no point to fingerprint")
        return Check(
            "point_fingerprints",
            not result.problems,
            _shown(result.problems)
            or f"{result.checked} point(s) fingerprinted from the source at backup time: "
            f"{source} are bit-equal to them",
        )

    def _compare_config(self, manifest: Manifest, name: str) -> Check:
        """The copy's vector configuration against the backup's (a copy searched by another
        distance, size or datatype is not the source)."""
        if manifest.method == "export":
            config = self.store.read_json(posixpath.join(manifest.folder, CONFIG_FILE))
            wanted = models.CollectionParams(**config["config"]["params"])
        else:
            wanted = models.CollectionParams(
                vectors=manifest.details.get("vectors"),
                sparse_vectors=manifest.details.get("sparse_vectors"),
            )
        got = self.client.get_collection(name).config.params
        differing = [
            part
            for part in ("vectors", "sparse_vectors")
            if getattr(wanted, part) != getattr(got, part)
        ]
        return Check(
            "collection_config",
            not differing,
            f"{' and '.join(differing)} configured otherwise than in the backup"
            if differing
            else "vectors and sparse vectors configured as in the backup",
        )

    def _compare_with_file(
        self, manifest: Manifest, name: str, fingerprinted: set
    ) -> tuple[Check, dict[Any, models.PointStruct]]:
        """Every row of the backup file (or a seeded sample of them, plus every fingerprinted
        row) against the copy as it holds it; also returns the fingerprinted rows."""
        config = self.store.read_json(posixpath.join(manifest.folder, CONFIG_FILE))
        layout = VectorLayout.of(models.CollectionParams(**config["config"]["params"]))
        params = _vector_params(config)
        where = qdrant_held.mode(self.client)
        total = manifest.details.get("points") or 0
        wanted: set[int] | None = None
        if total > self.compare_all_up_to:
            chosen = random.Random(self.seed).sample(range(total), min(self.sample_size, total))
            wanted = set(chosen)
        compared, problems, position = 0, [], 0
        pending: list[models.PointStruct] = []
        rows_fingerprinted: dict[Any, models.PointStruct] = {}

        def flush() -> None:
            nonlocal compared
            if not pending:
                return
            found = qdrant_held.retrieve(self.client, name, [p.id for p in pending])
            for point in pending:
                held = found.get(point.id)
                if held is None:
                    problems.append(f"point {point.id}: missing")
                    continue
                problems.extend(
                    f"point {point.id}: {p}" for p in _point_problems(point, held, params, where)
                )
            compared += len(pending)
            pending.clear()

        with self.store.open(posixpath.join(manifest.folder, POINTS_FILE)) as source:
            for batch in pq.ParquetFile(source).iter_batches(batch_size=COMPARE_BATCH):
                ids = row_ids(batch)
                rows = [
                    i
                    for i, point_id in enumerate(ids)
                    if wanted is None or position + i in wanted or point_id in fingerprinted
                ]
                position += batch.num_rows
                if not rows:
                    continue
                for point in points_of(pa.Table.from_batches([batch.take(pa.array(rows))]), layout):
                    if point.id in fingerprinted:
                        rows_fingerprinted[point.id] = point
                    pending.append(point)
                if len(pending) >= COMPARE_BATCH:
                    flush()
            flush()
        scope = (
            "every point"
            if wanted is None
            else f"a seeded sample (seed {self.seed}) and every fingerprinted point"
        )
        check = Check(
            "points_equal_backup",
            not problems,
            _shown(problems) or f"{scope}: {compared} point(s) equal their rows in the backup",
        )
        return check, rows_fingerprinted

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
