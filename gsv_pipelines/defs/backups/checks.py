"""Checks beside the backups: each backup re-verified from the store; every target fresh."""

from datetime import UTC, datetime

import dagster as dg

from gsv_pipelines.defs.backups.assets import platform_db_backup, qdrant_backup, vault_snapshot
from gsv_pipelines.defs.backups.partitions import COLLECTIONS, QDRANT_BACKUP_PARTITIONS
from gsv_pipelines.lib import backups
from gsv_pipelines.lib import manifest as manifests
from gsv_pipelines.lib.store import BackupStore
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import BackupStoreResource, DatabaseResource

BACKUP_VERIFIED = "backup_verified"
BACKUP_FRESH = "backup_fresh"


def _partition_folder(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    folder = records[0].asset_materialization.metadata.get("backup_folder") if records else None
    return folder.value if folder else None


def _verify(
    context: dg.AssetCheckExecutionContext,
    store: BackupStore,
    key: dg.AssetKey,
    kind: str,
    targets: list[str],
) -> dg.AssetCheckResult:
    """In a backup's run: that backup. Run on its own: the newest backup of every target."""
    partition = context.run.tags.get("dagster/partition")
    if partition:
        folders = {partition: _partition_folder(context.instance, key, partition)}
    else:
        folders = {}
        for target in targets:
            newest = backups.newest_backup(store, kind, target)
            folders[target] = newest.folder if newest else None
    problems, files, size = [], 0, 0
    for label, folder in sorted(folders.items()):
        if folder is None:
            problems.append(f"{label}: no backup recorded")
            continue
        try:
            manifest = manifests.load(store, folder)
        except FileNotFoundError:
            problems.append(f"{label}: the manifest of {store.location(folder)} is gone")
            continue
        result = manifests.verify(store, manifest)
        files += result.files_checked
        size += result.bytes_checked
        problems += [f"{label}: {p}" if len(folders) > 1 else p for p in result.problems]
    return dg.AssetCheckResult(
        passed=bool(folders) and not problems,
        description="; ".join(problems)
        or (f"{len(folders)} backup(s): every file matches its checksum" if folders else "none"),
        metadata={
            "backups_checked": dg.MetadataValue.int(len(folders)),
            "files_checked": dg.MetadataValue.int(files),
            "bytes_checked": dg.MetadataValue.int(size),
            "problems": dg.MetadataValue.int(len(problems)),
        },
    )


@dg.asset_check(
    asset=qdrant_backup,
    name=BACKUP_VERIFIED,
    blocking=True,
    description="Re-reads every file of the backup from the store and checks its SHA-256 "
    "(on its own: the newest backup of every collection).",
)
def qdrant_backup_verified(
    context: dg.AssetCheckExecutionContext, backup_store: BackupStoreResource
) -> dg.AssetCheckResult:
    collections = context.instance.get_dynamic_partitions(COLLECTIONS.name)
    return _verify(context, backup_store.store(), qdrant_backup.key, backups.QDRANT, collections)


@dg.asset_check(
    asset=platform_db_backup,
    name=BACKUP_VERIFIED,
    blocking=True,
    description="Re-reads the database backup from the store and checks its SHA-256.",
)
def platform_db_backup_verified(
    context: dg.AssetCheckExecutionContext,
    backup_store: BackupStoreResource,
    platform_db: DatabaseResource,
) -> dg.AssetCheckResult:
    target = backups.database_name(platform_db.url)
    return _verify(
        context, backup_store.store(), platform_db_backup.key, backups.PLATFORM_DB, [target]
    )


def _freshness(store, kind: str, rpo_by_target: dict[str, float]) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    stale, ages = [], {}
    for target, rpo_hours in sorted(rpo_by_target.items()):
        newest = backups.newest_backup(store, kind, target)
        if newest is None:
            stale.append(f"{target}: no backup")
            continue
        age = (now - newest.consistency_time).total_seconds() / 3600
        ages[target] = round(age, 2)
        if age > rpo_hours:
            stale.append(f"{target}: newest backup {age:.1f} h old, RPO {rpo_hours:g} h")
    return dg.AssetCheckResult(
        passed=not stale and bool(rpo_by_target),
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(stale)
        if stale
        else ("every target within its RPO" if rpo_by_target else "no targets known yet"),
        metadata={
            "targets": dg.MetadataValue.int(len(rpo_by_target)),
            "stale": dg.MetadataValue.int(len(stale)),
            "age_hours": dg.MetadataValue.json(ages),
            "oldest_age_hours": dg.MetadataValue.float(max(ages.values(), default=0.0)),
        },
    )


@dg.asset_check(
    asset=qdrant_backup,
    name=BACKUP_FRESH,
    description="The newest backup is younger than the RPO of the backup policy: in a "
    "backup's run, of that collection; on its own (hourly), of every collection.",
)
def qdrant_backup_fresh(
    context: dg.AssetCheckExecutionContext,
    backup_store: BackupStoreResource,
    policies: PoliciesResource,
) -> dg.AssetCheckResult:
    policy = policies.backups()
    partition = context.run.tags.get("dagster/partition")
    if partition:
        key = QDRANT_BACKUP_PARTITIONS.get_partition_key_from_str(partition)
        collections = [key.keys_by_dimension["collection"]]
    else:
        collections = context.instance.get_dynamic_partitions(COLLECTIONS.name)
    rpo = {name: policy.for_collection(name).rpo_hours for name in collections}
    return _freshness(backup_store.store(), backups.QDRANT, rpo)


@dg.asset_check(
    asset=platform_db_backup,
    name=BACKUP_FRESH,
    description="The newest platform database backup is younger than its RPO (backup policy).",
)
def platform_db_backup_fresh(
    backup_store: BackupStoreResource, platform_db: DatabaseResource, policies: PoliciesResource
) -> dg.AssetCheckResult:
    rpo = {backups.database_name(platform_db.url): policies.backups().platform_db.rpo_hours}
    return _freshness(backup_store.store(), backups.PLATFORM_DB, rpo)


@dg.asset_check(
    asset=vault_snapshot,
    name=BACKUP_VERIFIED,
    blocking=True,
    description="Re-reads the raft snapshot from the store and checks its SHA-256.",
)
def vault_snapshot_verified(
    context: dg.AssetCheckExecutionContext, backup_store: BackupStoreResource
) -> dg.AssetCheckResult:
    store = backup_store.store()
    return _verify(context, store, vault_snapshot.key, backups.VAULT, [backups.VAULT_TARGET])


@dg.asset_check(
    asset=vault_snapshot,
    name=BACKUP_FRESH,
    description="The newest raft snapshot of Vault is younger than its RPO.",
)
def vault_snapshot_fresh(
    backup_store: BackupStoreResource, policies: PoliciesResource
) -> dg.AssetCheckResult:
    rpo = {backups.VAULT_TARGET: policies.backups().vault.rpo_hours}
    return _freshness(backup_store.store(), backups.VAULT, rpo)
