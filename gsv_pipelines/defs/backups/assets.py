"""The `backups` group: verified, off-site, retained backups of Qdrant and the platform DB."""

import dagster as dg

from gsv_pipelines.defs.backups.partitions import DAILY, QDRANT_BACKUP_PARTITIONS
from gsv_pipelines.defs.sources import platform_database, qdrant_collections, vault_storage
from gsv_pipelines.lib.backups import make as backups
from gsv_pipelines.lib.core import pod_sizes
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.qdrant import QdrantResource
from gsv_pipelines.resources.storage import ArtefactStoreResource, DatabaseResource
from gsv_pipelines.resources.vault import VaultResource

OWNERS = ["team:platform"]


def outcome_metadata(outcome: backups.BackupOutcome, store) -> dict:
    manifest = outcome.manifest
    seconds = max(outcome.seconds, 1e-6)
    total = manifest.total_bytes
    metadata = {
        "backup_id": manifest.backup_id,
        "method": manifest.method,
        "store_path": dg.MetadataValue.path(store.location(manifest.folder)),
        "backup_folder": manifest.folder,
        "bytes": dg.MetadataValue.int(total),
        "files": dg.MetadataValue.int(len(manifest.files)),
        "duration_seconds": dg.MetadataValue.float(round(seconds, 3)),
        "throughput_mb_per_s": dg.MetadataValue.float(round(total / seconds / 1e6, 3)),
        "checksum_sha256": max(manifest.files, key=lambda f: f["size"])["sha256"],
        "verified_bytes": dg.MetadataValue.int(outcome.verification.bytes_checked),
        "retention": outcome.retention.summary(),
        "retention_deleted": dg.MetadataValue.int(len(outcome.retention.delete)),
        "retention_deleted_ids": ", ".join(outcome.retention.delete) or "none",
        "incomplete_removed": dg.MetadataValue.int(len(outcome.removed_incomplete)),
    }
    return metadata


@dg.asset(
    key=["backups", "qdrant_backup"],
    group_name="backups",
    partitions_def=QDRANT_BACKUP_PARTITIONS,
    deps=[qdrant_collections],
    owners=OWNERS,
    kinds={"qdrant", "parquet"},
    tags={"gsv/domain": "backups"},
    op_tags=pod_sizes.BACKUP,
)
def qdrant_backup(
    context: dg.AssetExecutionContext,
    qdrant: QdrantResource,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
) -> dg.MaterializeResult:
    """A verified backup of one Qdrant collection for one day, in the backup store.

    Method per the backup policy: Qdrant's snapshot on a server (every node holding shards,
    checksummed, server copy deleted after a verified download), or a portable Parquet export
    (every point with vectors and payloads, plus the collection's configuration). A manifest
    with every file's SHA-256 is written last; then the retention policy prunes older backups.
    """
    keys = context.partition_key.keys_by_dimension
    collection = keys["collection"]
    policy = policies.backups()
    store = artefact_store.store()
    with qdrant.open() as client:
        outcome = backups.backup_qdrant_collection(
            client,
            collection,
            store,
            policy.for_collection(collection),
            server_url=qdrant.url,
            api_key=qdrant.api_key,
            node_urls=policy.qdrant_nodes,
            run_id=context.run.run_id,
            partition=context.partition_key,
        )
    details = outcome.manifest.details
    points = details.get("points") or 0
    context.log.info(
        f"{collection}: {points} points backed up by {outcome.manifest.method} to "
        f"{store.location(outcome.manifest.folder)}; retention {outcome.retention.summary()}"
    )
    metadata = {
        **outcome_metadata(outcome, store),
        "points": dg.MetadataValue.int(points),
        "points_per_s": dg.MetadataValue.float(round(points / max(outcome.seconds, 1e-6), 1)),
    }
    # The UI plots a figure over every partition's materializations: named per collection, each
    # collection's points, bytes and durations make a line of their own.
    figures = (dg.IntMetadataValue, dg.FloatMetadataValue)
    return dg.MaterializeResult(
        metadata={
            "collection": collection,
            "qdrant_version": details["qdrant_version"],
            **{
                f"{collection} {name}" if isinstance(value, figures) else name: value
                for name, value in metadata.items()
            },
        }
    )


@dg.asset(
    key=["backups", "platform_db_backup"],
    group_name="backups",
    partitions_def=DAILY,
    deps=[platform_database],
    owners=OWNERS,
    kinds={"postgres", "sqlite"},
    tags={"gsv/domain": "backups"},
    op_tags=pod_sizes.BACKUP,
)
def platform_db_backup(
    context: dg.AssetExecutionContext,
    platform_db: DatabaseResource,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
) -> dg.MaterializeResult:
    """A verified backup of the platform database for one day, in the backup store.

    PostgreSQL: `pg_dump -Fc` streamed to the store, from an exported snapshot whose per-table
    row counts and checksums go into the manifest. SQLite (the embedded default): the online
    backup API. The DR drills restore it and compare those counts and checksums.
    """
    store = artefact_store.store()
    outcome = backups.backup_platform_database(
        platform_db.url,
        store,
        policies.backups().platform_db,
        run_id=context.run.run_id,
        partition=context.partition_key,
    )
    details = outcome.manifest.details
    return dg.MaterializeResult(
        metadata={
            **outcome_metadata(outcome, store),
            "database": details["database"],
            "tables": dg.MetadataValue.int(len(details["tables"])),
            "rows": dg.MetadataValue.int(details["rows"]),
            "row_counts": dg.MetadataValue.table(
                records=[
                    dg.TableRecord({"table": name, "rows": int(t["rows"])})
                    for name, t in sorted(details["tables"].items())
                ],
                schema=dg.TableSchema(
                    columns=[dg.TableColumn("table", "string"), dg.TableColumn("rows", "int")]
                ),
            ),
        }
    )


@dg.asset(
    key=["backups", "vault_snapshot"],
    group_name="backups",
    partitions_def=DAILY,
    deps=[vault_storage],
    owners=OWNERS,
    kinds={"vault"},
    tags={"gsv/domain": "backups"},
    op_tags=pod_sizes.BACKUP,
)
def vault_snapshot(
    context: dg.AssetExecutionContext,
    vault: VaultResource,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
) -> dg.MaterializeResult:
    """A verified raft snapshot of Vault / OpenBao for one day, in the backup store.

    Streamed from `sys/storage/raft/snapshot`; besides the SHA-256 of the file, every member of
    the archive is checked against the snapshot's own SHA256SUMS before it is committed.
    """
    store = artefact_store.store()
    outcome = backups.backup_vault(
        vault.client(),
        store,
        policies.backups().vault,
        run_id=context.run.run_id,
        partition=context.partition_key,
    )
    details = outcome.manifest.details
    return dg.MaterializeResult(
        metadata={
            **outcome_metadata(outcome, store),
            "cluster": details["cluster"] or "unknown",
            "vault_version": details["version"] or "unknown",
            "raft_index": dg.MetadataValue.int(details["raft_index"] or 0),
        }
    )
