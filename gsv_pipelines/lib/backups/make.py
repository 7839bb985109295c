"""One backup of one target, start to finish: write, verify, commit, apply retention.

Nothing half-done is ever committed: files go into a new folder, are re-read and checked against
the digests computed while writing, and only then does the manifest make the folder a backup.
On any failure the folder is deleted and the previous backups stay as they were.
"""

import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gsv_pipelines.lib.backups.policy import TargetPolicy
from gsv_pipelines.lib.backups.retention import Backup, RetentionPlan, plan_retention
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.manifest import Manifest, Verification
from gsv_pipelines.lib.core.store import ArtefactStore, StoredFile

QDRANT = "qdrant"
PLATFORM_DB = "platform_db"
VAULT = "vault"
# The platform has one Vault cluster: one target, whatever its (generated) cluster name.
VAULT_TARGET = "vault"

# Folders without a manifest younger than this may belong to a backup still being written.
INCOMPLETE_GRACE = timedelta(hours=6)


class BackupError(RuntimeError):
    """A backup could not be completed and verified; nothing of it was kept."""


@dataclass
class BackupOutcome:
    manifest: Manifest
    verification: Verification
    retention: RetentionPlan
    removed_incomplete: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        started = datetime.fromisoformat(self.manifest.started_at)
        return (datetime.fromisoformat(self.manifest.finished_at) - started).total_seconds()


def _now() -> datetime:
    return datetime.now(UTC)


def _complete(
    store: ArtefactStore,
    draft: Manifest,
    files: list[StoredFile],
    policy: TargetPolicy,
    prune: bool = True,
) -> BackupOutcome:
    """Verify the written files, commit the manifest, then prune per the retention policy.

    Without `prune` nothing is deleted (a safety backup taken by a restore must not delete the
    backup being restored).
    """
    draft.files = [manifests.file_entry(draft.folder, f) for f in files]
    draft.finished_at = _now().isoformat()
    verification = manifests.verify(store, draft)
    if not verification.ok:
        store.delete(draft.folder)
        raise BackupError(
            f"backup of {draft.kind}/{draft.target} failed verification and was discarded: "
            + "; ".join(verification.problems)
        )
    manifests.commit(store, draft)
    removed = manifests.remove_incomplete(
        store, draft.kind, draft.target, started_before=_now() - INCOMPLETE_GRACE
    )
    if prune:
        plan = apply_retention(store, draft.kind, draft.target, policy)
    else:
        plan = RetentionPlan(keep={}, delete=[])
    return BackupOutcome(draft, verification, plan, removed)


def _attempt(store: ArtefactStore, folder: str, work: Callable[[], BackupOutcome]) -> BackupOutcome:
    try:
        return work()
    except BaseException:
        # Interrupted or failed: nothing of this attempt may remain, least of all a manifest.
        store.delete(folder)
        raise


def apply_retention(
    store: ArtefactStore, kind: str, target: str, policy: TargetPolicy, now: datetime | None = None
) -> RetentionPlan:
    """Delete the backups of `target` that the retention policy does not keep."""
    backups = manifests.list_backups(store, kind, target)
    plan = plan_retention(
        [Backup(m.backup_id, m.consistency_time, verified=True) for m in backups],
        policy.retention,
        now or _now(),
    )
    for backup_id in plan.delete:
        store.delete(manifests.backup_folder(kind, target, backup_id))
    return plan


def backup_qdrant_collection(
    client,
    collection: str,
    store: ArtefactStore,
    policy: TargetPolicy,
    *,
    server_url: str | None,
    api_key: str | None,
    node_urls: tuple[str, ...] = (),
    run_id: str = "",
    partition: str = "",
    reason: str = "",
    prune: bool = True,
) -> BackupOutcome:
    """Back up one collection by the policy's method (auto: snapshot on a server, else export).

    `reason` is recorded in the manifest; `prune: False` skips the retention policy.
    """
    # Imported here, as in the functions below: qdrant-client, pyarrow and SQLAlchemy take over
    # a second to import, and every process that loads the code location would pay for them.
    from gsv_pipelines.lib.backups import probes as restore_probes
    from gsv_pipelines.lib.backups import qdrant_held
    from gsv_pipelines.lib.backups.qdrant_export import export_collection
    from gsv_pipelines.lib.backups.qdrant_snapshot import snapshot_collection

    method = policy.method
    if method == "auto":
        method = "snapshot" if server_url else "export"
    if method == "snapshot" and not server_url:
        raise BackupError(
            f"collection {collection!r}: the snapshot method needs a Qdrant server "
            "(GSV_QDRANT_URL); embedded Qdrant supports the export method only"
        )
    started = _now()
    backup_id = manifests.new_backup_id(started, run_id)
    folder = manifests.backup_folder(QDRANT, collection, backup_id)
    version = client.info().version

    def work() -> BackupOutcome:
        details: dict[str, Any] = {
            "collection": collection,
            "qdrant_version": version,
            "qdrant_mode": qdrant_held.mode(client),
            "partition": partition,
        }
        if reason:
            details["reason"] = reason
        # What a restore is proven against, besides the files' checksums (restore_probes.py).
        queries = restore_probes.QueryRecorder(client, collection)
        if method == "export":
            sampler = restore_probes.PointSampler()
            files, exported = export_collection(
                client,
                collection,
                store,
                folder,
                batch_size=policy.batch_size,
                on_batch=sampler.observe,
            )
            details.update(exported)
            details["point_fingerprints"] = sampler.result()
        else:
            nodes = snapshot_collection(
                collection,
                store,
                folder,
                node_urls=list(node_urls or [server_url]),
                api_key=api_key,
            )
            files = [StoredFile(n.key, n.size, n.sha256) for n in nodes]
            # Each shard counted once, however many of its replicas were snapshotted.
            shard_points = {sid: pts for n in nodes for sid, pts in n.shards.items()}
            params = client.get_collection(collection).config.params
            details.update(
                points=sum(shard_points.values()),
                vectors=params.model_dump(mode="json")["vectors"],
                sparse_vectors=params.model_dump(mode="json").get("sparse_vectors"),
                nodes=[
                    {"node": n.node_url, "snapshot": n.name, "shards": sorted(n.shards)}
                    for n in nodes
                ],
                point_fingerprints=restore_probes.sample_existing_points(client, collection),
            )
        details["sample_queries"] = queries.result()
        draft = Manifest(
            kind=QDRANT,
            target=collection,
            backup_id=backup_id,
            method=method,
            started_at=started.isoformat(),
            finished_at="",
            consistency_point=started.isoformat(),
            details=details,
        )
        return _complete(store, draft, files, policy, prune)

    return _attempt(store, folder, work)


def database_name(url: str) -> str:
    """The target name of a database in the store: its database name, or the SQLite file's stem."""
    from gsv_pipelines.lib.backups import platform_db

    sa_url = platform_db.parse_url(url)
    if sa_url.get_backend_name() == "sqlite":
        return platform_db.sqlite_path(url).stem
    return sa_url.database or "postgres"


def backup_platform_database(
    url: str,
    store: ArtefactStore,
    policy: TargetPolicy,
    *,
    run_id: str = "",
    partition: str = "",
    reason: str = "",
    prune: bool = True,
) -> BackupOutcome:
    """pg_dump (PostgreSQL) or the online backup API (SQLite), with per-table stats.

    `reason` is recorded in the manifest; `prune: False` skips the retention policy.
    """
    from gsv_pipelines.lib.backups import platform_db

    target = database_name(url)
    started = _now()
    backup_id = manifests.new_backup_id(started, run_id)
    folder = manifests.backup_folder(PLATFORM_DB, target, backup_id)

    def work() -> BackupOutcome:
        clock = time.monotonic()
        dialect = platform_db.parse_url(url).get_backend_name()
        filename = "platform.pgdump" if dialect == "postgresql" else "platform.sqlite"
        stored, method, stats = platform_db.backup(url, store, posixpath.join(folder, filename))
        draft = Manifest(
            kind=PLATFORM_DB,
            target=target,
            backup_id=backup_id,
            method=method,
            started_at=started.isoformat(),
            finished_at="",
            consistency_point=started.isoformat(),
            details={
                "database": target,
                "dialect": dialect,
                "tables": stats,
                "rows": sum(t["rows"] for t in stats.values()),
                "dump_seconds": round(time.monotonic() - clock, 3),
                "partition": partition,
                **({"reason": reason} if reason else {}),
            },
        )
        return _complete(store, draft, [stored], policy, prune)

    return _attempt(store, folder, work)


def backup_vault(
    client,
    store: ArtefactStore,
    policy: TargetPolicy,
    *,
    run_id: str = "",
    partition: str = "",
    reason: str = "",
    prune: bool = True,
) -> BackupOutcome:
    """A raft snapshot of the Vault/OpenBao cluster `client` is logged in to.

    Just before it, a sentinel (a random nonce, not a secret) is written to KV v2; the manifest
    records it, and a drill reads it back from the restored copy (vault_snapshot.py).
    """
    from gsv_pipelines.lib.backups import vault_snapshot

    health = client.sys.read_health_status(method="GET")
    target = VAULT_TARGET
    started = _now()
    backup_id = manifests.new_backup_id(started, run_id)
    folder = manifests.backup_folder(VAULT, target, backup_id)

    def work() -> BackupOutcome:
        sentinel = vault_snapshot.write_sentinel(client)
        stored = vault_snapshot.take_snapshot(client, store, posixpath.join(folder, "raft.snap"))
        meta = vault_snapshot.check_archive(store, stored.key)
        draft = Manifest(
            kind=VAULT,
            target=target,
            backup_id=backup_id,
            method="raft_snapshot",
            started_at=started.isoformat(),
            finished_at="",
            consistency_point=started.isoformat(),
            details={
                "cluster": health.get("cluster_name"),
                "version": health.get("version"),
                "raft_index": meta.get("Index"),
                "raft_term": meta.get("Term"),
                "partition": partition,
                "sentinel": sentinel,
                **({"reason": reason} if reason else {}),
            },
        )
        return _complete(store, draft, [stored], policy, prune)

    return _attempt(store, folder, work)


def newest_backup(store: ArtefactStore, kind: str, target: str) -> Manifest | None:
    backups = manifests.list_backups(store, kind, target)
    return backups[-1] if backups else None
