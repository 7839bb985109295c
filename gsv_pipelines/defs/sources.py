"""The real systems the code location reads, one source asset each, shared by every domain that
reads it: so the global lineage shows the domains connected through what they share.

Their keys and group (`backups`, where they first appeared) are a contract.
"""

import dagster as dg

OWNERS = ["team:platform"]

qdrant_collections = dg.AssetSpec(
    ["backups", "qdrant_collections"],
    description=(
        "The platform's Qdrant (GSV_QDRANT_URL, or embedded at GSV_QDRANT_PATH): its collections "
        "are the agents' vector memory. Discovered, not configured: qdrant_collections_sensor "
        "keeps one partition of backups/qdrant_backup per collection; the DR drills restore "
        "them into scratch collections on the same Qdrant."
    ),
    group_name="backups",
    owners=OWNERS,
    kinds={"qdrant"},
)

platform_database = dg.AssetSpec(
    ["backups", "platform_database"],
    description=(
        "The platform database (GSV_PLATFORM_DB_URL; PostgreSQL in prod, SQLite locally): "
        "backed up by backups/platform_db_backup, and the source of every usage asset (tables "
        "`usage_events`, `tenants`, `agents`, `plans`, `subscriptions`: each usage asset's "
        "`source_tables` says which it reads)."
    ),
    group_name="backups",
    owners=OWNERS,
    kinds={"postgres", "sqlite"},
)

vault_storage = dg.AssetSpec(
    ["backups", "vault_storage"],
    description=(
        "Vault / OpenBao (VAULT_ADDR) and its integrated (raft) storage: every secret of the "
        "platform. Snapshotted by backups/vault_snapshot; its KV metadata is what "
        "rotation/secret_inventory reads and rotation/rotated_secret rotates; image scans read "
        "registry credentials from it for the GSV_REGISTRIES entries that keep them there."
    ),
    group_name="backups",
    owners=OWNERS,
    kinds={"vault"},
)
