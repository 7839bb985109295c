"""The whole path, as the daemon runs it: a push to the real registry, an image_push_sensor tick,
the run it requests executed through image_scan_job with real Trivy and the generated DB, the
gates under the scan policy; then a re-tag (no new run) and a new DB (a rescan)."""

import shutil
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg

from gsv_pipelines.defs.scanning.assets import trivy_db
from gsv_pipelines.defs.scanning.image_scan import (
    NO_EMBEDDED_SECRETS,
    NO_FIXABLE_CRITICAL,
    image_scan,
    no_embedded_secrets,
    no_fixable_critical,
)
from gsv_pipelines.defs.scanning.jobs import image_scan_job
from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
from gsv_pipelines.defs.scanning.sensors import build_image_push_sensor
from gsv_pipelines.demo.oci_image import (
    DEMO_PACKAGE_TUPLES,
    PLANTED_SECRET_FILES,
    PLANTED_SECRET_RULE,
    build_alpine_image,
)
from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES, Advisory, write_trivy_db
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.scanning import store as scan_store
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.registries import RegistriesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource
from gsv_pipelines.resources.trivy import TrivyResource
from gsv_pipelines.resources.vault import VaultResource
from tests.defs.scanning.test_push_sensor import retag


def _tick(sensor, instance, resources, cursor):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return sensor(context)


def _run(job, instance, request) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        run_config=request.run_config,
        raise_on_error=False,
    )


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_push_tick_scan_gate_ignore_expiry_retag_and_new_db(
    registry, trivy_bin, trivy_cache, tmp_path
):
    repository = f"flow-{uuid.uuid4().hex[:8]}/agent"
    layout = tmp_path / "layout"
    digest = build_alpine_image(
        layout, "1.0", DEMO_PACKAGE_TUPLES, extra_files=PLANTED_SECRET_FILES
    )
    cache = tmp_path / "cache"
    shutil.copytree(trivy_cache, cache)
    registries = tmp_path / "registries.yaml"
    registries.write_text(
        f"registries:\n  - name: local\n    url: {registry.url}\n"
        f"    repositories: ['{repository}']\n"
    )
    policy = tmp_path / "scanning.yaml"
    policy.write_text("fail_on: CRITICAL\n")
    resources = {
        "trivy": TrivyResource(binary=trivy_bin, cache_dir=str(cache)),
        "artefact_store": ArtefactStoreResource(url=str(tmp_path / "store")),
        "policies": PoliciesResource(scan_policy_path=str(policy)),
        "registries": RegistriesResource(path=str(registries)),
        "vault": VaultResource(addr="http://127.0.0.1:9"),
    }
    defs = dg.Definitions(
        assets=[trivy_db, image_scan],
        asset_checks=[no_fixable_critical, no_embedded_secrets],
        jobs=[image_scan_job],
        resources=resources,
    )
    job = defs.resolve_job_def("image_scan_job")
    sensor = build_image_push_sensor()
    store = ArtefactStore(str(tmp_path / "store"))

    with dg.instance_for_test() as instance:
        registry.push(layout, repository, "1.0")
        first = _tick(sensor, instance, resources, None)
        [request] = first.run_requests
        assert (request.run_key, request.partition_key) == (digest, digest)
        [added] = first.dynamic_partitions_requests
        assert list(added.partition_keys) == [digest]
        instance.add_dynamic_partitions(IMAGE_DIGESTS.name, [digest])

        result = _run(job, instance, request)
        # The gates block the run: a fixable critical CVE and the planted (fake) token.
        assert not result.success
        assert _checks(result) == {NO_FIXABLE_CRITICAL: False, NO_EMBEDDED_SECRETS: False}
        record = scan_store.latest_scan(store, digest)
        assert record.reference == f"{registry.host}/{repository}@{digest}"
        found = scan_store.read_frame(store, record, "vulnerabilities")
        assert set(found["vulnerability_id"]) == {a.cve_id for a in DEMO_ADVISORIES}
        secrets = scan_store.read_frame(store, record, "secrets")
        assert list(secrets["rule_id"]) == [PLANTED_SECRET_RULE]

        # Accepted until tomorrow: the policy changed, so the same request rescans and passes.
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
        policy.write_text(
            "fail_on: CRITICAL\nignores:\n"
            f"  - {{id: CVE-2099-0001, reason: fix rolls out Monday, expires: {tomorrow}}}\n"
            f"  - {{id: {PLANTED_SECRET_RULE}, reason: fake demo token, expires: {tomorrow}}}\n"
        )
        result = _run(job, instance, request)
        assert result.success
        assert _checks(result) == {NO_FIXABLE_CRITICAL: True, NO_EMBEDDED_SECRETS: True}

        # Once the expiry has passed, the same findings fail again, naming the ignore.
        today = datetime.now(UTC).date()
        policy.write_text(
            "fail_on: CRITICAL\nignores:\n"
            f"  - {{id: CVE-2099-0001, reason: fix rolls out Monday, expires: {today}}}\n"
        )
        result = _run(job, instance, request)
        assert not result.success
        [gate] = [
            e for e in result.get_asset_check_evaluations() if e.check_name == NO_FIXABLE_CRITICAL
        ]
        assert not gate.passed and f"CVE-2099-0001 ({today})" in gate.description
        scans_so_far = scan_store.latest_scan(store, digest).scanned_at

        # The same digest under a new tag: the next tick requests nothing.
        retag(registry.url, repository, "1.0", "stable")
        again = _tick(sensor, instance, resources, first.cursor)
        assert not getattr(again, "run_requests", None)

        # A new DB version: the digest's scan is stale, so a run for it scans again.
        newer = tmp_path / "newer-db"
        extra = Advisory("CVE-2099-0009", "busybox", "1.36.1-r16", "LOW", "busybox: synthetic")
        write_trivy_db(newer, [*DEMO_ADVISORIES, extra])
        shutil.rmtree(cache / "db")
        shutil.copytree(newer / "db", cache / "db")
        result = _run(job, instance, request)
        rescanned = scan_store.latest_scan(store, digest)
        assert rescanned.scanned_at != scans_so_far
        assert "CVE-2099-0009" in set(
            scan_store.read_frame(store, rescanned, "vulnerabilities")["vulnerability_id"]
        )
