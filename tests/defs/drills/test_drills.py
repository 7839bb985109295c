"""The drills group end to end in Dagster: embedded Qdrant and real PostgreSQL 15.

Backups are taken by the backups group's own assets, then the drill restores exactly those.
"""

import subprocess
import sys
import uuid
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from gsv_pipelines.definitions import defs as load_defs
from gsv_pipelines.defs.backups.assets import platform_db_backup, qdrant_backup
from gsv_pipelines.defs.backups.partitions import COLLECTIONS
from gsv_pipelines.defs.drills.assets import dr_drill, dr_report
from gsv_pipelines.lib.backups.platform_db import table_stats
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills.scratch import PREFIX
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.qdrant import QdrantResource
from gsv_pipelines.resources.storage import ArtefactStoreResource, DatabaseResource
from gsv_pipelines.resources.vault import VaultResource

TODAY = datetime.now(UTC).strftime("%Y-%m-%d")
SIZES = {"agent_memory_a": 120, "agent_memory_b": 40}
SCHEMA = """
CREATE TABLE tenants (id int PRIMARY KEY, name text NOT NULL, created_at timestamptz);
CREATE TABLE usage_events (tenant_id int REFERENCES tenants (id), tokens bigint, attrs jsonb);
INSERT INTO tenants SELECT g, 'tenant-' || g, timestamptz '2026-01-01' + g * interval '1 hour'
    FROM generate_series(1, 30) g;
INSERT INTO usage_events SELECT 1 + g % 30, g * 3, jsonb_build_object('n', g)
    FROM generate_series(1, 500) g;
"""
POLICY = """
defaults: {rto_minutes: 10, rpo_hours: 26}
targets:
  qdrant: {collections: "*"}
  platform_db: {}
scratch_dir: SCRATCH
"""


def _scratch_databases(postgres) -> list[str]:
    rows = postgres.sql(
        "postgres", f"select datname from pg_database where datname like '{PREFIX}%'"
    )
    return sorted(r[0] for r in rows)


@pytest.fixture
def world(tmp_path, postgres):
    qdrant_path = tmp_path / "qdrant"
    client = QdrantClient(path=str(qdrant_path))
    rng = np.random.default_rng(11)
    for name, size in SIZES.items():
        client.create_collection(
            name, vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE)
        )
        client.upsert(
            name,
            points=[
                models.PointStruct(id=i, vector=rng.normal(size=8).tolist(), payload={"i": i})
                for i in range(size)
            ],
        )
    client.close()
    database = f"platform_{uuid.uuid4().hex[:8]}"
    postgres.create_database(database)
    postgres.sql(database, SCHEMA)
    policy = tmp_path / "drills.yaml"
    policy.write_text(POLICY.replace("SCRATCH", str(tmp_path / "scratch")))
    resources = {
        "qdrant": QdrantResource(path=str(qdrant_path)),
        "artefact_store": ArtefactStoreResource(url=str(tmp_path / "backups")),
        "platform_db": DatabaseResource(url=postgres.url(database)),
        "vault": VaultResource(addr="http://127.0.0.1:9"),
        "policies": PoliciesResource(drill_policy_path=str(policy)),
    }
    yield {
        "resources": resources,
        "store": ArtefactStore(str(tmp_path / "backups")),
        "qdrant_path": qdrant_path,
        "database": database,
        "policy": policy,
    }
    postgres.sql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", autocommit=True)


def _back_up(instance, world, collections=tuple(SIZES)) -> None:
    instance.add_dynamic_partitions(COLLECTIONS.name, list(SIZES))
    for name in collections:
        result = dg.materialize(
            [qdrant_backup],
            partition_key=dg.MultiPartitionKey({"day": TODAY, "collection": name}),
            instance=instance,
            resources=world["resources"],
        )
        assert result.success
    assert dg.materialize(
        [platform_db_backup], partition_key=TODAY, instance=instance, resources=world["resources"]
    ).success


def _drill(instance, world) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [dr_drill, dr_report],
        partition_key=TODAY,
        instance=instance,
        resources=world["resources"],
        raise_on_error=False,
    )


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _record(world, result) -> dict:
    metadata = result.asset_materializations_for_node("drills__dr_drill")[0].metadata
    return world["store"].read_json(metadata["record_key"].value)


def _failed_drill_report(result) -> str:
    """A failed drill fails its run (dr_report does not run), its evidence and report written."""
    assert not result.success
    assert result.asset_materializations_for_node("drills__dr_report") == []
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "drills__dr_drill"
    assert "blocking asset check" in str(failure.event_specific_data.error)
    [materialization] = result.asset_materializations_for_node("drills__dr_drill")
    assert materialization.metadata["result"].value == "failed"
    with open(materialization.metadata["report_path"].value) as f:
        return f.read()


def _collections(world) -> set[str]:
    client = QdrantClient(path=str(world["qdrant_path"]))
    try:
        return {c.name for c in client.get_collections().collections}
    finally:
        client.close()


def test_a_drill_after_the_backups_passes_with_exact_counts_and_reports_it(world, postgres):
    with dg.instance_for_test() as instance:
        _back_up(instance, world)
        result = _drill(instance, world)

    assert result.success
    checks = _checks(result)
    assert {name: e.passed for name, e in checks.items()} == {
        "rto_within_target": True,
        "rpo_within_target": True,
        "drill_verified": True,
    }
    metadata = result.asset_materializations_for_node("drills__dr_drill")[0].metadata
    assert metadata["result"].value == "passed"
    assert metadata["targets"].value == 3 and metadata["targets_failed"].value == 0
    for label in (
        "qdrant/agent_memory_a",
        "qdrant/agent_memory_b",
        f"platform_db/{world['database']}",
    ):
        assert 0 < metadata[f"{label} rto_seconds"].value < 600
        assert 0 <= metadata[f"{label} rpo_hours"].value < 1
    record = _record(world, result)
    by_label = {f"{t['kind']}/{t['target']}": t for t in record["targets"]}
    details = {
        label: {c["name"]: c["detail"] for c in t["checks"]} for label, t in by_label.items()
    }
    assert details["qdrant/agent_memory_a"]["point_count"] == "120 points, the manifest says 120"
    assert details["qdrant/agent_memory_b"]["point_count"] == "40 points, the manifest says 40"
    assert (
        details[f"platform_db/{world['database']}"]["row_counts"]
        == "530 rows in 2 table(s): every count equals the backup's"
    )
    # The drill restored exactly the backups the backups group made.
    [backup_a] = manifests.list_backups(world["store"], "qdrant", "agent_memory_a")
    assert by_label["qdrant/agent_memory_a"]["backup"]["backup_id"] == backup_a.backup_id
    assert by_label["qdrant/agent_memory_a"]["backup"]["files"] == backup_a.files

    report = result.asset_materializations_for_node("drills__dr_report")[0].metadata
    with open(report["report_path"].value) as f:
        text = f.read()
    assert text == report["report"].value
    assert text.startswith(f"# DR drill {record['drill_id']}\n\n**Result: PASS**")
    assert backup_a.files[1]["sha256"] in text
    assert "| point_count | PASS | 120 points, the manifest says 120 |" in text
    assert f"dropped scratch copy {PREFIX}agent_memory_a_" in text
    # Nothing of the drill is left behind.
    assert not [c for c in _collections(world) if c.startswith(PREFIX)]
    assert _scratch_databases(postgres) == []


def test_a_corrupted_backup_fails_the_drill_at_its_checksum(world):
    with dg.instance_for_test() as instance:
        _back_up(instance, world)
        [backup] = manifests.list_backups(world["store"], "qdrant", "agent_memory_b")
        path = world["store"].location(f"{backup.folder}/points.parquet")
        with open(path, "r+b") as f:
            f.seek(64)
            byte = f.read(1)
            f.seek(64)
            f.write(bytes([byte[0] ^ 0x10]))
        result = _drill(instance, world)

    checks = _checks(result)
    assert checks["drill_verified"].passed is False
    assert checks["drill_verified"].description == (
        f"qdrant/agent_memory_b: backup {backup.backup_id} of qdrant/agent_memory_b fails its "
        "checksums: points.parquet: SHA-256 differs from the manifest"
    )
    assert checks["rto_within_target"].passed is False
    assert (
        checks["rto_within_target"].description
        == "qdrant/agent_memory_b: not verified, target 600 s"
    )
    assert checks["rpo_within_target"].passed is True
    report = _failed_drill_report(result)
    assert "**Result: FAIL**" in report
    assert "| backup_checksums | FAIL | points.parquet: SHA-256 differs from the manifest |" in (
        report
    )


def test_silent_corruption_of_the_data_fails_the_point_comparison(world):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with dg.instance_for_test() as instance:
        _back_up(instance, world)
        store = world["store"]
        [backup] = manifests.list_backups(store, "qdrant", "agent_memory_a")
        key = f"{backup.folder}/points.parquet"
        with store.open(key) as f:
            table = pq.read_table(f)
        rows = table.to_pylist()
        rows[7]["vector"] = rows[7]["vector"][::-1]  # another unit vector: cosine keeps it
        with store.open(key, "wb") as f:
            pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), f)
        stored = store.hash(key)
        [entry] = [e for e in backup.files if e["name"] == "points.parquet"]
        entry.update(size=stored.size, sha256=stored.sha256)
        manifests.commit(store, backup)  # the checksum now vouches for the altered data

        result = _drill(instance, world)

    evaluation = _checks(result)["drill_verified"]
    assert evaluation.passed is False
    assert "point_fingerprints" in _failed_drill_report(result)
    assert "backup_checksums" not in evaluation.description
    assert (
        f"point_fingerprints: point {rows[7]['id_int']}: vector differs" in evaluation.description
    )


def test_a_missing_backup_fails_rpo_within_target(world):
    with dg.instance_for_test() as instance:
        _back_up(instance, world, collections=["agent_memory_a"])
        result = _drill(instance, world)

    checks = _checks(result)
    assert "- backup: none found" in _failed_drill_report(result)
    assert checks["rpo_within_target"].passed is False
    assert (
        checks["rpo_within_target"].description == "qdrant/agent_memory_b: no backup, target 26 h"
    )
    assert checks["drill_verified"].passed is False
    metadata = result.asset_materializations_for_node("drills__dr_drill")[0].metadata
    assert "qdrant/agent_memory_b rpo_hours" not in metadata
    assert metadata["qdrant/agent_memory_a rpo_hours"].value < 1


def test_the_drill_refuses_to_restore_into_the_source(world):
    world["policy"].write_text(
        "targets:\n  qdrant: {collections: [agent_memory_a], scratch_name: '{target}'}\n"
    )
    with dg.instance_for_test() as instance:
        _back_up(instance, world)
        result = _drill(instance, world)

    evaluation = _checks(result)["drill_verified"]
    assert evaluation.passed is False
    assert "**Result: FAIL**" in _failed_drill_report(result)
    assert evaluation.description == (
        "qdrant/agent_memory_a: refusing to restore qdrant/agent_memory_a into agent_memory_a: "
        "the scratch copy would be the source itself"
    )
    client = QdrantClient(path=str(world["qdrant_path"]))
    try:
        assert client.count("agent_memory_a", exact=True).count == 120
    finally:
        client.close()


KILLED_DRILL = """
import sys, threading
from qdrant_client import QdrantClient
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.drills.restore import DRILL, RestoreRequest, restore
from gsv_pipelines.lib.drills.platform_db import handler_for
from gsv_pipelines.lib.drills.qdrant import QdrantHandler
from gsv_pipelines.lib.drills.scratch import marker, scratch_name
from gsv_pipelines.lib.core.store import ArtefactStore
from datetime import UTC, datetime

qdrant_path, store_url, db_url, database = sys.argv[1:5]
store, run_id, now = ArtefactStore(store_url), "killed-run-0001", datetime.now(UTC)
# The database's scratch copy is restored completely...
handler = handler_for(db_url, store)
[backup] = manifests.list_backups(store, "platform_db", database)
handler.restore(backup, scratch_name("gsv_drill_{target}_{stamp}", database, now, run_id, 63),
                marker(run_id, DRILL, "platform_db", database, now))
# ... and the collection's is killed halfway through its points.
client = QdrantClient(path=qdrant_path)
upsert, calls = client.upsert, []

def upsert_then_hang(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        print("killing me now leaves scratch copies", flush=True)
        threading.Event().wait()
    return upsert(*args, **kwargs)

client.upsert = upsert_then_hang
restore(QdrantHandler(client, store, batch_size=50), store,
        RestoreRequest("qdrant", "agent_memory_a", DRILL), run_id=run_id)
"""


def test_leftovers_of_a_killed_drill_are_removed_by_the_next_one(world, postgres):
    with dg.instance_for_test() as instance:
        _back_up(instance, world)
        with subprocess.Popen(
            [
                sys.executable,
                "-c",
                KILLED_DRILL,
                str(world["qdrant_path"]),
                world["store"].url,
                world["resources"]["platform_db"].url,
                world["database"],
            ],
            stdout=subprocess.PIPE,
            text=True,
        ) as killed:
            assert killed.stdout.readline().strip() == "killing me now leaves scratch copies"
            killed.kill()
        left_collections = [c for c in _collections(world) if c.startswith(PREFIX)]
        left_databases = _scratch_databases(postgres)
        assert len(left_collections) == 1 and len(left_databases) == 1

        result = _drill(instance, world)

    assert result.success and all(e.passed for e in _checks(result).values())
    removed = _record(world, result)["leftovers_removed"]
    assert len(removed) == 2
    assert any(left_collections[0] in line and "run killed-r" in line for line in removed)
    assert any(left_databases[0] in line for line in removed)
    assert not [c for c in _collections(world) if c.startswith(PREFIX)]
    assert _scratch_databases(postgres) == []
    report = result.asset_materializations_for_node("drills__dr_report")[0].metadata["report"]
    assert f"removed leftover qdrant scratch copy {left_collections[0]}" in report.value


def test_scratch_copies_never_become_partitions_of_the_backups(world):
    from gsv_pipelines.defs.backups.sensors import sensors

    client = QdrantClient(path=str(world["qdrant_path"]))
    client.create_collection(
        f"{PREFIX}agent_memory_a_20261129t040000",
        vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE),
    )
    client.close()
    sensor = sensors().resolve_sensor_def("qdrant_collections_sensor")
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance, resources={"qdrant": world["resources"]["qdrant"]}
        ) as context,
    ):
        [request] = sensor(context).dynamic_partitions_requests
    assert sorted(request.partition_keys) == sorted(SIZES)


def test_the_weekly_schedule_requests_the_day_it_runs():
    defs = load_defs()
    schedule = defs.resolve_schedule_def("dr_drill_schedule")
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 11, 29, 4, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        ) as context,
    ):
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-29"
    assert schedule.cron_schedule == "0 4 * * 0"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_restore_job_refuses_without_confirmation_and_changes_nothing(world):
    job = load_defs().resolve_job_def("restore_job")
    with dg.instance_for_test() as instance:
        _back_up(instance, world)
        before = table_stats(world["resources"]["platform_db"].url)
        result = job.execute_in_process(
            run_config={
                "ops": {
                    "restore": {
                        "config": {
                            "target": f"platform_db/{world['database']}",
                            "destination": world["database"],
                            "dry_run": False,
                        }
                    }
                }
            },
            instance=instance,
            resources=world["resources"],
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"refusing to restore into '{world['database']}' without confirmation" in str(
        failure.event_specific_data.error
    )
    assert table_stats(world["resources"]["platform_db"].url) == before
    assert len(manifests.list_backups(world["store"], "platform_db", world["database"])) == 1


def _restore(instance, world, **config) -> dg.ExecuteInProcessResult:
    job = load_defs().resolve_job_def("restore_job")
    return job.execute_in_process(
        run_config={"ops": {"restore": {"config": config}}},
        instance=instance,
        resources=world["resources"],
        raise_on_error=False,
    )


def _output_metadata(result) -> dict:
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return output.event_specific_data.metadata


def test_a_dry_run_changes_nothing(world, postgres):
    with dg.instance_for_test() as instance:
        _back_up(instance, world)
        client = QdrantClient(path=str(world["qdrant_path"]))
        client.delete("agent_memory_a", points_selector=models.PointIdsList(points=[1, 2, 3]))
        client.close()
        before = table_stats(world["resources"]["platform_db"].url)
        backups_before = len(list(world["store"].glob("*/*/*/manifest.json")))
        collection = _restore(
            instance,
            world,
            target="qdrant/agent_memory_a",
            destination="agent_memory_a",
            dry_run=True,
        )
        # dry_run unsaid: what the launchpad scaffolds, a dry run.
        database = _restore(
            instance,
            world,
            target=f"platform_db/{world['database']}",
            destination=world["database"],
        )
    assert collection.success and database.success
    assert _output_metadata(database)["mode"].value == "dry_run"
    metadata = _output_metadata(collection)
    assert metadata["mode"].value == "dry_run" and metadata["result"].value == "verified"
    assert metadata["destination"].value.startswith(PREFIX)
    assert "destination before: {'points': 117}" in metadata["report"].value
    client = QdrantClient(path=str(world["qdrant_path"]))
    try:
        assert client.count("agent_memory_a", exact=True).count == 117
        assert not [
            c.name for c in client.get_collections().collections if c.name.startswith(PREFIX)
        ]
    finally:
        client.close()
    assert table_stats(world["resources"]["platform_db"].url) == before
    assert _scratch_databases(postgres) == []
    assert len(list(world["store"].glob("*/*/*/manifest.json"))) == backups_before


def test_a_restore_over_a_populated_destination_keeps_a_safety_backup(world, postgres):
    url = world["resources"]["platform_db"].url
    with dg.instance_for_test() as instance:
        _back_up(instance, world)
        backed_up = table_stats(url)
        [backup] = manifests.list_backups(world["store"], "platform_db", world["database"])
        postgres.sql(
            world["database"],
            "DELETE FROM usage_events WHERE tokens > 600; UPDATE tenants SET name = 'x'",
        )
        damaged = table_stats(url)
        client = QdrantClient(path=str(world["qdrant_path"]))
        client.upsert("agent_memory_b", points=[models.PointStruct(id=500, vector=[1.0] * 8)])
        client.close()

        database = _restore(
            instance,
            world,
            target=f"platform_db/{world['database']}",
            destination=world["database"],
            dry_run=False,
            confirm=world["database"],
        )
        collection = _restore(
            instance,
            world,
            target="qdrant/agent_memory_b",
            destination="agent_memory_b",
            backup_id=manifests.list_backups(world["store"], "qdrant", "agent_memory_b")[
                0
            ].backup_id,
            dry_run=False,
            confirm="agent_memory_b",
        )

    assert database.success and collection.success
    metadata = _output_metadata(database)
    assert metadata["mode"].value == "restore" and metadata["backup_id"].value == backup.backup_id
    assert table_stats(url) == backed_up
    [safety] = [
        m
        for m in manifests.list_backups(world["store"], "platform_db", world["database"])
        if m.backup_id == metadata["safety_backup_id"].value
    ]
    assert safety.details["tables"] == damaged
    assert safety.details["reason"] == "safety backup before a restore overwrote it"
    with open(metadata["report_path"].value) as f:
        report = f.read()
    assert f"safety backup of the destination: `{safety.backup_id}`" in report
    assert "**Result: PASS**" in report

    collection_metadata = _output_metadata(collection)
    client = QdrantClient(path=str(world["qdrant_path"]))
    try:
        assert client.count("agent_memory_b", exact=True).count == 40
        assert client.retrieve("agent_memory_b", [500]) == []
    finally:
        client.close()
    [kept] = [
        m
        for m in manifests.list_backups(world["store"], "qdrant", "agent_memory_b")
        if m.backup_id == collection_metadata["safety_backup_id"].value
    ]
    assert kept.details["points"] == 41
