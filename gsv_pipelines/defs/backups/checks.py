"""Checks beside the backups, per partition: each backup re-verified from the store; every
target fresh. A backup's run judges its own partition; run on their own (from the UI, or the
hourly backup_freshness_job) they judge every target, each on its partition: for
backup_verified the newest backup's, for backup_fresh today's."""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import dagster as dg

from gsv_pipelines.defs.backups.assets import platform_db_backup, qdrant_backup, vault_snapshot
from gsv_pipelines.defs.backups.partitions import COLLECTIONS, DAILY, QDRANT_BACKUP_PARTITIONS
from gsv_pipelines.defs.partitioned_checks import (
    partitioned_asset_check,
    per_partition,
    run_partition,
)
from gsv_pipelines.lib.backups import make as backups
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource, DatabaseResource

BACKUP_VERIFIED = "backup_verified"
BACKUP_FRESH = "backup_fresh"

# A target's partition on a day: `<collection>|<day>` for Qdrant, the day for the others.
PartitionOf = Callable[[str, str], str]


def _collection_partition(collection: str, day: str) -> str:
    return str(dg.MultiPartitionKey({"day": day, "collection": collection}))


def _day_partition(_target: str, day: str) -> str:
    return day


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _partition_folder(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    folder = records[0].asset_materialization.metadata.get("backup_folder") if records else None
    return folder.value if folder else None


def _verify_folder(store: ArtefactStore, folder: str | None) -> dg.AssetCheckResult:
    problems, files, size = [], 0, 0
    if folder is None:
        problems.append("no backup recorded")
    else:
        try:
            manifest = manifests.load(store, folder)
        except FileNotFoundError:
            problems.append(f"the manifest of {store.location(folder)} is gone")
        else:
            result = manifests.verify(store, manifest)
            files, size = result.files_checked, result.bytes_checked
            problems += result.problems
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems)
        or f"every file of {folder} matches its checksum ({files} files)",
        metadata={
            "backup_folder": folder or "none",
            "files_checked": dg.MetadataValue.int(files),
            "bytes_checked": dg.MetadataValue.int(size),
            "problems": dg.MetadataValue.int(len(problems)),
        },
    )


def _verify(
    context: dg.AssetCheckExecutionContext,
    store: ArtefactStore,
    key: dg.AssetKey,
    kind: str,
    targets: list[str],
    partition_of: PartitionOf,
) -> Iterator:
    """In a backup's run: that backup. On its own: the newest backup of every target, on the
    partition it was taken for (a target without any backup: on today's)."""
    partition = run_partition(context)
    if partition:
        folders = {partition: _partition_folder(context.instance, key, partition)}
    else:
        folders = {}
        for target in targets:
            newest = backups.newest_backup(store, kind, target)
            if newest is None:
                folders[partition_of(target, _today())] = None
                continue
            taken_for = newest.details.get("partition") or partition_of(
                target, newest.consistency_time.date().isoformat()
            )
            folders[taken_for] = newest.folder
    yield from per_partition(
        context, {part: _verify_folder(store, folder) for part, folder in folders.items()}
    )


@partitioned_asset_check(
    asset=qdrant_backup,
    partitions_def=QDRANT_BACKUP_PARTITIONS,
    name=BACKUP_VERIFIED,
    blocking=True,
    description="Re-reads every file of the partition's backup from the store and checks its "
    "SHA-256 (on its own: the newest backup of every collection).",
)
def qdrant_backup_verified(
    context: dg.AssetCheckExecutionContext, artefact_store: ArtefactStoreResource
):
    collections = context.instance.get_dynamic_partitions(COLLECTIONS.name)
    yield from _verify(
        context,
        artefact_store.store(),
        qdrant_backup.key,
        backups.QDRANT,
        collections,
        _collection_partition,
    )


@partitioned_asset_check(
    asset=platform_db_backup,
    partitions_def=DAILY,
    name=BACKUP_VERIFIED,
    blocking=True,
    description="Re-reads the day's database backup from the store and checks its SHA-256.",
)
def platform_db_backup_verified(
    context: dg.AssetCheckExecutionContext,
    artefact_store: ArtefactStoreResource,
    platform_db: DatabaseResource,
):
    target = backups.database_name(platform_db.url)
    yield from _verify(
        context,
        artefact_store.store(),
        platform_db_backup.key,
        backups.PLATFORM_DB,
        [target],
        _day_partition,
    )


def _freshness(store, kind: str, target: str, rpo_hours: float) -> dg.AssetCheckResult:
    newest = backups.newest_backup(store, kind, target)
    age = None
    if newest is None:
        problem = f"{target}: no backup"
    else:
        age = round((datetime.now(UTC) - newest.consistency_time).total_seconds() / 3600, 2)
        problem = (
            f"{target}: newest backup {age:.1f} h old, RPO {rpo_hours:g} h"
            if age > rpo_hours
            else ""
        )
    return dg.AssetCheckResult(
        passed=not problem,
        severity=dg.AssetCheckSeverity.ERROR,
        description=problem or f"{target}: newest backup {age:.1f} h old, within its RPO",
        metadata={
            "target": target,
            "rpo_hours": dg.MetadataValue.float(float(rpo_hours)),
            **({"age_hours": dg.MetadataValue.float(age)} if age is not None else {}),
        },
    )


def _fresh(
    context: dg.AssetCheckExecutionContext,
    store: ArtefactStore,
    kind: str,
    rpo_by_target: dict[str, float],
    partition_of: PartitionOf,
    target_of: Callable[[str], str],
) -> Iterator:
    """In a backup's run: its target, on its partition. On its own (hourly): every target, each
    on today's partition, so a target whose backups stopped shows as stale today."""
    partition = run_partition(context)
    if partition:
        partitions = {partition: target_of(partition)}
    else:
        partitions = {partition_of(target, _today()): target for target in sorted(rpo_by_target)}
        if not partitions:
            context.log.warning("no backup targets known yet: nothing to judge")
    yield from per_partition(
        context,
        {
            part: _freshness(store, kind, target, rpo_by_target[target])
            for part, target in partitions.items()
        },
    )


def _collection_of(partition: str) -> str:
    key = QDRANT_BACKUP_PARTITIONS.get_partition_key_from_str(partition)
    return key.keys_by_dimension["collection"]


@partitioned_asset_check(
    asset=qdrant_backup,
    partitions_def=QDRANT_BACKUP_PARTITIONS,
    name=BACKUP_FRESH,
    description="The collection's newest backup is younger than the RPO of the backup policy: "
    "in a backup's run, of that collection; on its own (hourly), of every collection, each on "
    "today's partition.",
)
def qdrant_backup_fresh(
    context: dg.AssetCheckExecutionContext,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
):
    policy = policies.backups()
    partition = run_partition(context)
    collections = (
        [_collection_of(partition)]
        if partition
        else context.instance.get_dynamic_partitions(COLLECTIONS.name)
    )
    rpo = {name: policy.for_collection(name).rpo_hours for name in collections}
    yield from _fresh(
        context, artefact_store.store(), backups.QDRANT, rpo, _collection_partition, _collection_of
    )


@partitioned_asset_check(
    asset=platform_db_backup,
    partitions_def=DAILY,
    name=BACKUP_FRESH,
    description="The newest platform database backup is younger than its RPO (backup policy).",
)
def platform_db_backup_fresh(
    context: dg.AssetCheckExecutionContext,
    artefact_store: ArtefactStoreResource,
    platform_db: DatabaseResource,
    policies: PoliciesResource,
):
    target = backups.database_name(platform_db.url)
    rpo = {target: policies.backups().platform_db.rpo_hours}
    yield from _fresh(
        context, artefact_store.store(), backups.PLATFORM_DB, rpo, _day_partition, lambda _: target
    )


@partitioned_asset_check(
    asset=vault_snapshot,
    partitions_def=DAILY,
    name=BACKUP_VERIFIED,
    blocking=True,
    description="Re-reads the day's raft snapshot from the store and checks its SHA-256.",
)
def vault_snapshot_verified(
    context: dg.AssetCheckExecutionContext, artefact_store: ArtefactStoreResource
):
    yield from _verify(
        context,
        artefact_store.store(),
        vault_snapshot.key,
        backups.VAULT,
        [backups.VAULT_TARGET],
        _day_partition,
    )


@partitioned_asset_check(
    asset=vault_snapshot,
    partitions_def=DAILY,
    name=BACKUP_FRESH,
    description="The newest raft snapshot of Vault is younger than its RPO.",
)
def vault_snapshot_fresh(
    context: dg.AssetCheckExecutionContext,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
):
    rpo = {backups.VAULT_TARGET: policies.backups().vault.rpo_hours}
    yield from _fresh(
        context,
        artefact_store.store(),
        backups.VAULT,
        rpo,
        _day_partition,
        lambda _: backups.VAULT_TARGET,
    )
