"""The backups group end to end in Dagster: embedded Qdrant, SQLite and PostgreSQL, local and S3."""

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from qdrant_client import QdrantClient, models

from gsv_pipelines.definitions import defs as load_defs
from gsv_pipelines.defs.backups.assets import platform_db_backup, qdrant_backup
from gsv_pipelines.defs.backups.checks import (
    platform_db_backup_fresh,
    platform_db_backup_verified,
    qdrant_backup_fresh,
    qdrant_backup_verified,
)
from gsv_pipelines.defs.backups.partitions import COLLECTIONS
from gsv_pipelines.defs.backups.sensors import sensors
from gsv_pipelines.lib.backups import make as backups
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.qdrant import QdrantResource
from gsv_pipelines.resources.storage import ArtefactStoreResource, DatabaseResource
from tests.services.qdrant_fake import FakeQdrantSnapshotServer

TODAY = datetime.now(UTC).strftime("%Y-%m-%d")
QDRANT = [qdrant_backup, qdrant_backup_verified, qdrant_backup_fresh]
DATABASE = [platform_db_backup, platform_db_backup_verified, platform_db_backup_fresh]


@pytest.fixture
def world(tmp_path):
    qdrant_path = tmp_path / "qdrant"
    client = QdrantClient(path=str(qdrant_path))
    for name, size in [("agent_memory_a", 120), ("agent_memory_b", 40)]:
        client.create_collection(
            name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
        )
        client.upsert(
            name,
            points=[
                models.PointStruct(id=i, vector=[i, 1.0, 0.5, -1.0], payload={"i": i})
                for i in range(size)
            ],
        )
    client.close()
    db = tmp_path / "platform.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table tenants (id integer primary key, name text)")
        conn.executemany("insert into tenants values (?, ?)", [(1, "acme"), (2, "globex")])
    resources = {
        "qdrant": QdrantResource(path=str(qdrant_path)),
        "artefact_store": ArtefactStoreResource(url=str(tmp_path / "backups")),
        "platform_db": DatabaseResource(url=f"sqlite:///{db}"),
        "policies": PoliciesResource(),
    }
    return {"resources": resources, "store": ArtefactStore(str(tmp_path / "backups"))}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        f"{e.asset_key.path[-1]}:{e.check_name}": e.passed
        for e in result.get_asset_check_evaluations()
    }


def _backup(instance, world, collection: str, day: str = TODAY) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        QDRANT,
        partition_key=dg.MultiPartitionKey({"day": day, "collection": collection}),
        instance=instance,
        resources=world["resources"],
        raise_on_error=False,
    )


def test_both_collections_and_the_database_are_backed_up_verified_and_fresh(world):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(COLLECTIONS.name, ["agent_memory_a", "agent_memory_b"])
        for name, points in [("agent_memory_a", 120), ("agent_memory_b", 40)]:
            result = _backup(instance, world, name)
            assert result.success
            assert _checks(result) == {
                "qdrant_backup:backup_verified": True,
                "qdrant_backup:backup_fresh": True,
            }
            # Each collection's checks on its own partition, not one verdict for the asset.
            partitions = {e.partition for e in result.get_asset_check_evaluations()}
            assert partitions == {f"{name}|{TODAY}"}
            metadata = result.asset_materializations_for_node("backups__qdrant_backup")[0].metadata
            # Figures named per collection, so each collection's plot is a line of its own.
            assert metadata[f"{name} points"].value == points
            assert metadata["method"].value == "export"
            assert metadata[f"{name} bytes"].value > 0
            plotted = [k for k, v in metadata.items() if isinstance(v, dg.IntMetadataValue)]
            assert plotted and all(k.startswith(f"{name} ") for k in plotted)
        db = dg.materialize(
            DATABASE,
            partition_key=TODAY,
            instance=instance,
            resources=world["resources"],
        )
        assert _checks(db) == {
            "platform_db_backup:backup_verified": True,
            "platform_db_backup:backup_fresh": True,
        }
    store = world["store"]
    [a] = manifests.list_backups(store, "qdrant", "agent_memory_a")
    assert a.details["points"] == 120 and a.method == "export"
    assert {f["name"] for f in a.files} == {"collection.json", "points.parquet"}
    [p] = manifests.list_backups(store, "platform_db", "platform")
    assert p.details["tables"]["tenants"]["rows"] == 2


def test_a_flipped_byte_fails_backup_verified(world):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(COLLECTIONS.name, ["agent_memory_a"])
        assert _backup(instance, world, "agent_memory_a").success
        [backup] = manifests.list_backups(world["store"], "qdrant", "agent_memory_a")
        points = world["store"].fs._strip_protocol(
            world["store"].location(f"{backup.folder}/points.parquet")
        )
        with open(points, "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0xFF]))
        # Run on its own (as from the UI), the check re-verifies the newest backups.
        check = dg.materialize(
            QDRANT,
            selection=dg.AssetSelection.checks(qdrant_backup_verified),
            instance=instance,
            resources=world["resources"],
            raise_on_error=False,
        )
        [evaluation] = check.get_asset_check_evaluations()
        assert evaluation.passed is False
        assert evaluation.description == "points.parquet: SHA-256 differs from the manifest"
        # On the partition the backup was taken for, not on none.
        assert evaluation.partition == f"agent_memory_a|{TODAY}"


def test_backup_fresh_on_its_own_judges_every_collection(world, tmp_path):
    policy = tmp_path / "backups.yaml"
    policy.write_text("collections:\n  agent_memory_b:\n    rpo_hours: 1\n")
    world["resources"]["policies"] = PoliciesResource(backup_policy_path=str(policy))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(COLLECTIONS.name, ["agent_memory_a", "agent_memory_b"])
        assert _backup(instance, world, "agent_memory_a").success
        hourly = dg.materialize(
            QDRANT,
            selection=dg.AssetSelection.checks(qdrant_backup_fresh),
            instance=instance,
            resources=world["resources"],
            raise_on_error=False,
        )
        # Each collection on today's partition: which one is stale shows on its own.
        judged = {
            e.partition: (e.passed, e.description) for e in hourly.get_asset_check_evaluations()
        }
        assert judged[f"agent_memory_b|{TODAY}"] == (False, "agent_memory_b: no backup")
        assert judged[f"agent_memory_a|{TODAY}"][0] is True
        assert len(judged) == 2


def test_a_past_day_can_be_backfilled(world):
    day = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%d")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(COLLECTIONS.name, ["agent_memory_b"])
        result = _backup(instance, world, "agent_memory_b", day=day)
        assert result.success
    [backup] = manifests.list_backups(world["store"], "qdrant", "agent_memory_b")
    assert backup.details["partition"] == f"agent_memory_b|{day}"


def test_the_sensor_adds_new_collections_and_retires_vanished_ones(world):
    sensor = sensors().resolve_sensor_def("qdrant_collections_sensor")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(COLLECTIONS.name, ["agent_memory_a", "retired_one"])
        with dg.build_sensor_context(
            instance=instance, resources={"qdrant": world["resources"]["qdrant"]}
        ) as context:
            result = sensor(context)
        requests = result.dynamic_partitions_requests
        assert [(type(r).__name__, list(r.partition_keys)) for r in requests] == [
            ("AddDynamicPartitionsRequest", ["agent_memory_b"]),
            ("DeleteDynamicPartitionsRequest", ["retired_one"]),
        ]


def test_the_nightly_schedule_requests_one_run_per_collection():
    defs = load_defs()
    schedule = defs.resolve_schedule_def("qdrant_backup_schedule")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(COLLECTIONS.name, ["b", "a"])
        with dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 11, 27, 2, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        ) as context:
            requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["a|2026-11-27", "b|2026-11-27"]


def test_backups_to_s3(world, s3, monkeypatch):
    bucket = "gsv-backups-dagster"
    store = ArtefactStore(f"s3://{bucket}/prod", s3.storage_options())
    store.fs.mkdir(bucket)
    # The resource reads S3 settings the standard AWS way, from the environment.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "gsv-test-access")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "gsv-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    world["resources"]["artefact_store"] = ArtefactStoreResource(url=f"s3://{bucket}/prod")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(COLLECTIONS.name, ["agent_memory_a"])
        result = _backup(instance, world, "agent_memory_a")
        assert result.success and all(_checks(result).values())
    [backup] = manifests.list_backups(store, "qdrant", "agent_memory_a")
    assert manifests.verify(store, backup).ok


def test_the_snapshot_method_on_a_server(world):
    """Through the asset, against the recorded-contract fake of Qdrant's snapshot endpoints."""
    with FakeQdrantSnapshotServer({"agent_memory_a": [0, 1]}, api_key="k-7f3a") as fake:
        world["resources"]["qdrant"] = QdrantResource(url=fake.url, api_key="k-7f3a")
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(COLLECTIONS.name, ["agent_memory_a"])
            result = _backup(instance, world, "agent_memory_a")
            assert result.success and _checks(result)["qdrant_backup:backup_verified"]
            logs = instance.all_logs(result.run_id)
        assert logs and not any("k-7f3a" in str(event) for event in logs)
        [created] = fake.created
        assert fake.snapshot_names("agent_memory_a") == []  # deleted after the verified copy
    [backup] = manifests.list_backups(world["store"], "qdrant", "agent_memory_a")
    assert backup.method == "snapshot"
    assert backup.details["points"] == 2000
    vectors = backup.details["vectors"]
    assert (vectors["size"], vectors["distance"]) == (4, "Cosine")
    [entry] = backup.files
    assert (entry["size"], entry["sha256"]) == (created.size, created.checksum)


KILLED_BACKUP = """
import sys, threading
from qdrant_client import QdrantClient
from gsv_pipelines.lib.backups import qdrant_held
from gsv_pipelines.lib.backups.policy import TargetPolicy
from gsv_pipelines.lib.backups.make import backup_qdrant_collection
from gsv_pipelines.lib.core.store import ArtefactStore

client = QdrantClient(path=sys.argv[1])
batches = qdrant_held.batches

def batches_then_hang(*args, **kwargs):
    for number, batch in enumerate(batches(*args, **kwargs)):
        if number == 1:  # one batch is written: say so, then wait to be killed
            print("first batch written", flush=True)
            threading.Event().wait()
        yield batch

qdrant_held.batches = batches_then_hang
backup_qdrant_collection(client, "agent_memory_a", ArtefactStore(sys.argv[2]),
                         TargetPolicy(batch_size=10), server_url=None, api_key=None)
"""


def test_a_backup_killed_midway_leaves_nothing_that_looks_valid(world, tmp_path):
    store = world["store"]
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_BACKUP, str(tmp_path / "qdrant"), store.url],
        stdout=subprocess.PIPE,
        text=True,
    ) as backup:
        assert backup.stdout.readline().strip() == "first batch written"
        backup.kill()
    [folder] = store.list_dirs("qdrant/agent_memory_a")
    assert store.glob(f"qdrant/agent_memory_a/{folder}/*")  # data files were being written
    assert manifests.list_backups(store, "qdrant", "agent_memory_a") == []
    # The next backup cleans the leftover up once it is older than the grace period.
    later = datetime.now(UTC) + backups.INCOMPLETE_GRACE + timedelta(minutes=1)
    removed = manifests.remove_incomplete(store, "qdrant", "agent_memory_a", later)
    assert removed == [f"qdrant/agent_memory_a/{folder}"]


def test_a_backup_older_than_the_rpo_is_stale(tmp_path):
    from gsv_pipelines.defs.backups.checks import _freshness

    store = ArtefactStore(str(tmp_path / "store"))
    old = datetime.now(UTC) - timedelta(hours=30)
    draft = manifests.Manifest(
        kind="qdrant",
        target="agent_memory_a",
        backup_id=manifests.new_backup_id(old),
        method="export",
        started_at=old.isoformat(),
        finished_at=old.isoformat(),
        consistency_point=old.isoformat(),
    )
    manifests.commit(store, draft)
    result = _freshness(store, "qdrant", "agent_memory_a", 26)
    assert result.passed is False
    assert result.description == "agent_memory_a: newest backup 30.0 h old, RPO 26 h"
    assert _freshness(store, "qdrant", "agent_memory_a", 31).passed is True


def test_a_vault_raft_snapshot_is_backed_up_and_verified(world, openbao_raft):
    from gsv_pipelines.defs.backups.assets import vault_snapshot
    from gsv_pipelines.defs.backups.checks import vault_snapshot_fresh, vault_snapshot_verified
    from gsv_pipelines.resources.vault import VaultResource

    resources = {
        **world["resources"],
        "vault": VaultResource(addr=openbao_raft.addr, token=openbao_raft.token),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [vault_snapshot, vault_snapshot_verified, vault_snapshot_fresh],
            partition_key=TODAY,
            instance=instance,
            resources=resources,
        )
        logs = instance.all_logs(result.run_id)
    # The token the run logged in with appears nowhere in what the run wrote.
    assert logs and not any(openbao_raft.token in str(event) for event in logs)
    assert _checks(result) == {
        "vault_snapshot:backup_verified": True,
        "vault_snapshot:backup_fresh": True,
    }
    [backup] = manifests.list_backups(world["store"], "vault", "vault")
    assert backup.method == "raft_snapshot" and backup.details["raft_index"] > 0


@pytest.mark.parametrize("name", ["platform_db_backup_schedule", "vault_snapshot_schedule"])
def test_the_nightly_database_and_vault_schedules_request_today(name):
    defs = load_defs()
    schedule = defs.resolve_schedule_def(name)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 11, 27, 2, 30, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        ) as context,
    ):
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-27"
