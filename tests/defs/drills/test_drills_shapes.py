"""Every collection shape, backed up by `backups/qdrant_backup` and restored by `restore_job` and
by `drills/dr_drill`, compared point by point with its source by an independent reading."""

import json
import shutil
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from qdrant_client import QdrantClient

from gsv_pipelines.definitions import defs as load_defs
from gsv_pipelines.defs.backups.assets import qdrant_backup
from gsv_pipelines.defs.backups.partitions import COLLECTIONS
from gsv_pipelines.defs.drills.assets import dr_drill, dr_report
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills.qdrant import QdrantHandler
from gsv_pipelines.lib.drills.scratch import PREFIX
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.qdrant import QdrantResource
from gsv_pipelines.resources.storage import ArtefactStoreResource, DatabaseResource
from gsv_pipelines.resources.vault import VaultResource
from tests.lib.backups.qdrant_corpus import corpus, differences, read_as_held

TODAY = datetime.now(UTC).strftime("%Y-%m-%d")
SPECS = corpus(31)


@pytest.fixture
def world(tmp_path):
    path = tmp_path / "qdrant"
    client = QdrantClient(path=str(path))
    for spec in SPECS:
        spec.create(client)
    client.close()
    policy = tmp_path / "drills.yaml"
    policy.write_text("targets:\n  qdrant: {collections: '*'}\n")
    backup_policy = tmp_path / "backups.yaml"
    backup_policy.write_text("defaults: {batch_size: 7}\n")
    resources = {
        "qdrant": QdrantResource(path=str(path)),
        "artefact_store": ArtefactStoreResource(url=str(tmp_path / "backups")),
        "platform_db": DatabaseResource(url=f"sqlite:///{tmp_path / 'unused.db'}"),
        "vault": VaultResource(addr="http://127.0.0.1:9"),
        "policies": PoliciesResource(
            drill_policy_path=str(policy), backup_policy_path=str(backup_policy)
        ),
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(COLLECTIONS.name, [s.name for s in SPECS])
        for spec in SPECS:
            assert dg.materialize(
                [qdrant_backup],
                partition_key=dg.MultiPartitionKey({"day": TODAY, "collection": spec.name}),
                instance=instance,
                resources=resources,
            ).success
        yield {
            "instance": instance,
            "resources": resources,
            "path": path,
            "store": ArtefactStore(str(tmp_path / "backups")),
            "tmp": tmp_path,
        }


def _restore(world, **config) -> dg.ExecuteInProcessResult:
    """A real restore (restore_job's default is a dry run)."""
    config = {"dry_run": False, **config}
    return (
        load_defs()
        .resolve_job_def("restore_job")
        .execute_in_process(
            run_config={"ops": {"restore": {"config": config}}},
            instance=world["instance"],
            resources=world["resources"],
            raise_on_error=False,
        )
    )


def _metadata(result) -> dict:
    events = [e for e in result.all_events if e.event_type_value in ("STEP_OUTPUT", "STEP_FAILURE")]
    data = events[-1].event_specific_data
    return data.metadata if hasattr(data, "metadata") else data.user_failure_data.metadata


def test_restore_job_restores_every_shape_equal_to_its_source(world):
    for spec in SPECS:
        result = _restore(
            world,
            target=f"qdrant/{spec.name}",
            destination=f"{spec.name}_r",
            confirm=f"{spec.name}_r",
        )
        assert result.success, spec.name
        assert _metadata(result)["result"].value == "verified"
    found = {
        spec.name: differences(
            read_as_held(str(world["path"]), spec.name),
            read_as_held(str(world["path"]), f"{spec.name}_r"),
        )
        for spec in SPECS
    }
    assert found == {spec.name: [] for spec in SPECS}


def test_the_drill_restores_every_shape_equal_to_its_source(world, monkeypatch):
    kept = world["tmp"] / "kept"
    drop = QdrantHandler.drop

    def keep_then_drop(self, name):
        if name.startswith(PREFIX):
            shutil.copytree(world["path"], kept / name, ignore=shutil.ignore_patterns(".lock"))
        drop(self, name)

    monkeypatch.setattr(QdrantHandler, "drop", keep_then_drop)
    result = dg.materialize(
        [dr_drill, dr_report],
        partition_key=TODAY,
        instance=world["instance"],
        resources=world["resources"],
    )
    assert result.success
    metadata = result.asset_materializations_for_node("drills__dr_drill")[0].metadata
    record = world["store"].read_json(metadata["record_key"].value)
    copies = {t["target"]: t["destination"] for t in record["targets"]}
    assert sorted(copies) == sorted(s.name for s in SPECS)
    assert all(t["verified"] and t["error"] is None for t in record["targets"])
    found = {
        spec.name: differences(
            read_as_held(str(world["path"]), spec.name),
            read_as_held(str(kept / copies[spec.name]), copies[spec.name]),
        )
        for spec in SPECS
    }
    assert found == {spec.name: [] for spec in SPECS}


def _corrupt(world, name: str) -> str:
    """Alter one fingerprinted row of the backup and recompute its checksum (silent corruption
    the checksums cannot see); return the altered point's id."""
    store = world["store"]
    [backup] = manifests.list_backups(store, "qdrant", name)
    point_id = backup.details["point_fingerprints"]["points"][0]["id"]
    key = f"{backup.folder}/points.parquet"
    with store.open(key) as f:
        table = pq.read_table(f)
    rows = table.to_pylist()
    for row in rows:
        if point_id in (row["id_int"], row["id_uuid"]):
            row["payload"] = json.dumps({"altered": True})
    with store.open(key, "wb") as f:
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), f)
    stored = store.hash(key)
    [entry] = [e for e in backup.files if e["name"] == "points.parquet"]
    entry.update(size=stored.size, sha256=stored.sha256)
    manifests.commit(store, backup)
    return point_id


@pytest.mark.parametrize("existing", [False, True])
def test_a_restore_failing_verification_leaves_the_destination_as_it_was(world, existing):
    source, destination = "mixed", "mixed_live"
    path = str(world["path"])
    if existing:  # the destination holds data of its own: a restore of another collection
        assert _restore(
            world, target="qdrant/multivectors", destination=destination, confirm=destination
        ).success
    before = read_as_held(path, destination) if existing else None
    point_id = _corrupt(world, source)

    result = _restore(
        world, target=f"qdrant/{source}", destination=destination, confirm=destination
    )

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert f"point_fingerprints: point {point_id}: payload differs" in message
    after = _metadata(result)["destination_after"].value
    with open(_metadata(result)["report_path"].value) as f:
        report = f.read()
    client = QdrantClient(path=path)
    exists = client.collection_exists(destination)
    client.close()
    if existing:
        assert after.startswith("as before: safety backup ") and after.endswith("verified")
        assert f"Destination {destination} now: {after}." in message
        assert differences(before, read_as_held(path, destination)) == []
    else:
        assert after == "absent, as before (the failed restore removed)"
        assert not exists
    assert f"- destination after: {after}" in report
