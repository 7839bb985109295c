import dagster as dg

from gsv_pipelines.defs.automation import schedule_status
from gsv_pipelines.defs.backups.assets import platform_db_backup, qdrant_backup, vault_snapshot
from gsv_pipelines.defs.backups.checks import (
    platform_db_backup_fresh,
    qdrant_backup_fresh,
    vault_snapshot_fresh,
)
from gsv_pipelines.defs.backups.partitions import COLLECTIONS

qdrant_backup_job = dg.define_asset_job(
    "qdrant_backup_job",
    selection=dg.AssetSelection.assets(qdrant_backup),
    description="Back up one Qdrant collection for one day (and verify it).",
)
platform_db_backup_job = dg.define_asset_job(
    "platform_db_backup_job",
    selection=dg.AssetSelection.assets(platform_db_backup),
    description="Back up the platform database for one day (and verify it).",
)
vault_snapshot_job = dg.define_asset_job(
    "vault_snapshot_job",
    selection=dg.AssetSelection.assets(vault_snapshot),
    description="Take today's raft snapshot of Vault / OpenBao (and verify it).",
)
backup_freshness_job = dg.define_asset_job(
    "backup_freshness_job",
    selection=dg.AssetSelection.checks(
        qdrant_backup_fresh, platform_db_backup_fresh, vault_snapshot_fresh
    ),
    description="Check that every target's newest backup is within its RPO.",
)


@dg.definitions
def schedules() -> dg.Definitions:
    status = schedule_status()

    @dg.schedule(
        job=qdrant_backup_job,
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        default_status=status,
        description="Nightly: one run per known Qdrant collection, for today's partition.",
    )
    def qdrant_backup_schedule(context: dg.ScheduleEvaluationContext):
        day = context.scheduled_execution_time.strftime("%Y-%m-%d")
        collections = context.instance.get_dynamic_partitions(COLLECTIONS.name)
        if not collections:
            return dg.SkipReason("no Qdrant collections known yet (qdrant_collections_sensor)")
        return [
            dg.RunRequest(
                run_key=f"{day}|{name}",
                partition_key=dg.MultiPartitionKey({"day": day, "collection": name}),
            )
            for name in sorted(collections)
        ]

    # Nightly: today's partition (the daily partitions end today: end_offset=1).
    platform_db_backup_schedule = dg.build_schedule_from_partitioned_job(
        platform_db_backup_job,
        name="platform_db_backup_schedule",
        description="Nightly: today's backup of the platform database.",
        hour_of_day=2,
        minute_of_hour=30,
        default_status=status,
    )
    vault_snapshot_schedule = dg.build_schedule_from_partitioned_job(
        vault_snapshot_job,
        name="vault_snapshot_schedule",
        description="Nightly: today's raft snapshot of Vault / OpenBao.",
        hour_of_day=2,
        minute_of_hour=45,
        default_status=status,
    )

    backup_freshness_schedule = dg.ScheduleDefinition(
        name="backup_freshness_schedule",
        job=backup_freshness_job,
        cron_schedule="15 * * * *",
        execution_timezone="UTC",
        default_status=status,
        description="Hourly: a target whose backups stopped is noticed within its RPO.",
    )
    return dg.Definitions(
        jobs=[qdrant_backup_job, platform_db_backup_job, vault_snapshot_job, backup_freshness_job],
        schedules=[
            qdrant_backup_schedule,
            platform_db_backup_schedule,
            vault_snapshot_schedule,
            backup_freshness_schedule,
        ],
    )
