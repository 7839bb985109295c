"""image_rescan_sensor: which deployed digests are due for a rescan, against a real generated
Trivy DB in the cache and scan records stored from real Trivy reports."""

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from gsv_pipelines.definitions import defs as load_defs
from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
from gsv_pipelines.defs.scanning.rescan import build_image_rescan_sensor
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.scanning.deployed import deployed_key, read_inventory, write_frame
from gsv_pipelines.lib.scanning.policy import load_scan_policy
from gsv_pipelines.lib.scanning.store import write_scan
from gsv_pipelines.lib.scanning.trivy import Trivy
from gsv_pipelines.lib.scanning.trivy_report import parse_report
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource
from gsv_pipelines.resources.trivy import TrivyResource

DATA = Path(__file__).parents[2] / "data" / "trivy"
HOST = "registry.gsv.example"
DIGESTS = [f"sha256:{c * 64}" for c in "12345"]


def reference(digest: str) -> str:
    return f"{HOST}/platform/app-{digest[7]}@{digest}"


@pytest.fixture
def world(tmp_path, trivy_cache):
    cache = tmp_path / "trivy-cache"
    shutil.copytree(trivy_cache, cache)
    store = ArtefactStore(str(tmp_path / "store"))
    resources = {
        "artefact_store": ArtefactStoreResource(url=store.url),
        "trivy": TrivyResource(cache_dir=str(cache)),
        "policies": PoliciesResource(),
    }
    return {"store": store, "cache": cache, "resources": resources, "tmp": tmp_path}


def deploy(world, day: str, digests: list[str]) -> None:
    inventory = world["tmp"] / f"inventory-{day}.yaml"
    inventory.write_text(
        "".join(
            f"- {{namespace: platform, workload: app-{d[7]}, image: '{reference(d)}'}}\n"
            for d in digests
        )
    )
    write_frame(world["store"], deployed_key(day), read_inventory(inventory))


def scan(world, digest: str, policy_sha256: str | None = None) -> None:
    """A finished scan of `digest` with the cached DB and (default) the shipped policy."""
    raw = json.loads((DATA / "alpine-310.json").read_text())
    write_scan(
        world["store"],
        digest=digest,
        reference=reference(digest),
        raw_report=raw,
        report=parse_report(raw),
        db_metadata=Trivy(binary=None, cache_dir=world["cache"]).db_metadata(),
        policy_sha256=policy_sha256 or load_scan_policy().sha256,
        duration_seconds=1.0,
        scanned_at=datetime(2026, 3, 1, tzinfo=UTC),
    )


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def tick(world, instance, *, cursor: str | None = None, **build):
    with dg.build_sensor_context(
        instance=instance, resources=world["resources"], cursor=cursor
    ) as context:
        return build_image_rescan_sensor(**build)(context)


def db_updated_at(world) -> str:
    return json.loads((world["cache"] / "db" / "metadata.json").read_text())["UpdatedAt"]


def requested(result) -> dict[str, dict]:
    assert isinstance(result, dg.SensorResult), result
    return {r.partition_key: r for r in result.run_requests}


def test_never_scanned_digests_are_due_with_their_reference_and_partition(world, instance):
    deploy(world, "2026-03-01", DIGESTS[:2])
    result = tick(world, instance)
    runs = requested(result)
    assert sorted(runs) == DIGESTS[:2]
    sha = load_scan_policy().sha256
    first = runs[DIGESTS[0]]
    assert first.run_key == f"{DIGESTS[0]}|{db_updated_at(world)}|{sha[:12]}"
    assert first.run_config == {
        "ops": {"scanning__image_scan": {"config": {"reference": reference(DIGESTS[0])}}}
    }
    [add] = result.dynamic_partitions_requests
    assert add.partitions_def_name == IMAGE_DIGESTS.name
    assert sorted(add.partition_keys) == DIGESTS[:2]


def test_only_digests_not_yet_partitions_are_added(world, instance):
    deploy(world, "2026-03-01", DIGESTS[:2])
    instance.add_dynamic_partitions(IMAGE_DIGESTS.name, [DIGESTS[0]])
    result = tick(world, instance)
    assert sorted(requested(result)) == DIGESTS[:2]
    [add] = result.dynamic_partitions_requests
    assert list(add.partition_keys) == [DIGESTS[1]]


def test_current_scans_are_not_due(world, instance):
    deploy(world, "2026-03-01", DIGESTS[:2])
    scan(world, DIGESTS[0])
    scan(world, DIGESTS[1])
    result = tick(world, instance)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert result.skip_reason.skip_message.startswith("nothing due: 2 of 2 deployed digests")


def test_a_new_vulnerability_db_makes_the_running_images_due(world, instance):
    deploy(world, "2026-03-01", DIGESTS[:2])
    scan(world, DIGESTS[0])
    scan(world, DIGESTS[1])
    path = world["cache"] / "db" / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["UpdatedAt"] = "2099-01-01T00:00:00Z"
    path.write_text(json.dumps(metadata))
    runs = requested(tick(world, instance))
    assert sorted(runs) == DIGESTS[:2]
    assert runs[DIGESTS[1]].run_key.split("|")[1] == "2099-01-01T00:00:00Z"


def test_a_changed_policy_makes_the_running_images_due(world, instance):
    deploy(world, "2026-03-01", DIGESTS[:2])
    scan(world, DIGESTS[0])
    scan(world, DIGESTS[1])
    policy = world["tmp"] / "scanning.yaml"
    policy.write_text("fail_on: HIGH\n")
    world["resources"]["policies"] = PoliciesResource(scan_policy_path=str(policy))
    runs = requested(tick(world, instance))
    assert sorted(runs) == DIGESTS[:2]
    new_sha = load_scan_policy(policy).sha256
    assert new_sha != load_scan_policy().sha256
    assert runs[DIGESTS[0]].run_key.endswith(f"|{new_sha[:12]}")


def test_only_the_newest_deployed_images_count(world, instance):
    deploy(world, "2026-03-01", DIGESTS[:2])
    deploy(world, "2026-03-02", DIGESTS[2:3])
    assert sorted(requested(tick(world, instance))) == DIGESTS[2:3]


def test_requests_are_capped_and_the_rest_come_next_tick(world, instance):
    deploy(world, "2026-03-01", DIGESTS)
    scan(world, DIGESTS[2])  # current: never requested
    first = tick(world, instance, max_requests=2)
    assert list(requested(first)) == DIGESTS[:2]
    second = tick(world, instance, max_requests=2, cursor=first.cursor)
    assert list(requested(second)) == [DIGESTS[3], DIGESTS[4]]
    # A full round: it starts again from the first digest still due.
    third = tick(world, instance, max_requests=2, cursor=second.cursor)
    assert list(requested(third)) == DIGESTS[:2]


def test_a_tick_reads_records_within_its_budget_and_goes_on_next_tick(world, instance):
    deploy(world, "2026-03-01", DIGESTS[:3])
    scan(world, DIGESTS[0])
    first = tick(world, instance, tick_budget_seconds=0)  # one record read per tick
    assert first.run_requests == [] and "1 of 3 deployed digests" in first.skip_reason.skip_message
    second = tick(world, instance, tick_budget_seconds=0, cursor=first.cursor)
    assert list(requested(second)) == [DIGESTS[1]]
    third = tick(world, instance, tick_budget_seconds=0, cursor=second.cursor)
    assert list(requested(third)) == [DIGESTS[2]]


def test_no_cached_db_skips_with_what_to_do(world, instance):
    deploy(world, "2026-03-01", DIGESTS[:1])
    shutil.rmtree(world["cache"] / "db")
    result = tick(world, instance)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message.endswith("materialize scanning/trivy_db first")


def test_no_deployed_images_skips_with_what_to_do(world, instance):
    result = tick(world, instance)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message.endswith("materialize scanning/deployed_images first")


@pytest.mark.parametrize(("env", "status"), [("local", "STOPPED"), ("prod", "RUNNING")])
def test_the_sensor_runs_by_default_only_in_prod_and_targets_the_scan_job(monkeypatch, env, status):
    monkeypatch.setenv("GSV_ENV", env)
    sensor = load_defs().resolve_sensor_def("image_rescan_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus[status]
    assert sensor.minimum_interval_seconds == 3600
    assert sensor.job_name == "image_scan_job"


def test_an_unreadable_scan_record_makes_its_digest_due_without_stopping_the_others(
    world, instance
):
    deploy(world, "2026-03-01", DIGESTS[:2])
    scan(world, DIGESTS[0])
    scan(world, DIGESTS[1])
    store = world["store"]
    latest = Path(store.root) / "scanning" / "images" / f"sha256-{'1' * 64}" / "latest.json"
    latest.write_text("{cut sho")
    assert list(requested(tick(world, instance))) == [DIGESTS[0]]
