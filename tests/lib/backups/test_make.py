from datetime import UTC, datetime, timedelta

from gsv_pipelines.lib.backups.make import apply_retention
from gsv_pipelines.lib.backups.policy import TargetPolicy
from gsv_pipelines.lib.backups.retention import RetentionPolicy
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.store import ArtefactStore

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def _history(store: ArtefactStore, days: int) -> list[str]:
    ids = []
    for age in range(days):
        when = NOW - timedelta(days=age, hours=10)
        backup_id = manifests.new_backup_id(when)
        folder = manifests.backup_folder("qdrant", "memory", backup_id)
        stored = store.write_stream(f"{folder}/points.parquet", [backup_id.encode()])
        manifests.commit(
            store,
            manifests.Manifest(
                kind="qdrant",
                target="memory",
                backup_id=backup_id,
                method="export",
                started_at=when.isoformat(),
                finished_at=when.isoformat(),
                consistency_point=when.isoformat(),
                files=[manifests.file_entry(folder, stored)],
            ),
        )
        ids.append(backup_id)
    return ids


def test_retention_deletes_from_the_store_exactly_what_the_plan_says(tmp_path):
    store = ArtefactStore(str(tmp_path))
    ids = _history(store, 60)  # newest first
    policy = TargetPolicy(
        retention=RetentionPolicy(keep_last=2, keep_daily=5, keep_weekly=0, keep_monthly=0)
    )
    plan = apply_retention(store, "qdrant", "memory", policy, now=NOW)
    remaining = [m.backup_id for m in manifests.list_backups(store, "qdrant", "memory")]
    assert remaining == sorted(ids[:5])  # the five newest days; the last two are among them
    assert sorted(plan.delete) == sorted(ids[5:])
    assert store.list_dirs("qdrant/memory") == sorted(ids[:5])  # folders gone, not just manifests


def test_the_newest_backup_survives_a_policy_that_keeps_nothing(tmp_path):
    store = ArtefactStore(str(tmp_path))
    ids = _history(store, 3)
    nothing = TargetPolicy(
        retention=RetentionPolicy(
            keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0, max_age_days=0, min_count=1
        )
    )
    apply_retention(store, "qdrant", "memory", nothing, now=NOW)
    assert [m.backup_id for m in manifests.list_backups(store, "qdrant", "memory")] == [ids[0]]
