"""scanning/image_scan and its gates: real registry, skopeo pushes, real trivy, generated DB."""

import json
import os
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

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
from gsv_pipelines.demo.oci_image import (
    DEMO_PACKAGE_TUPLES,
    FAKE_GITHUB_TOKEN,
    PLANTED_SECRET_FILES,
    PLANTED_SECRET_PATH,
    PLANTED_SECRET_RULE,
    build_alpine_image,
)
from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES, Advisory, write_trivy_db
from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.scanning import deployed
from gsv_pipelines.lib.scanning import store as scan_store
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.registries import RegistriesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource
from gsv_pipelines.resources.trivy import TrivyResource
from gsv_pipelines.resources.vault import VaultResource
from tests.services.registry import start_registry

ASSETS = [image_scan, no_fixable_critical, no_embedded_secrets]
OP = "scanning__image_scan"
DB_CVES = {a.cve_id for a in DEMO_ADVISORIES}
REPOSITORY = "platform/planted"
LAUNCHED = "GSV_TEST_LAUNCHED_SCAN"  # the resources of launched_scan_job, as JSON


@pytest.fixture(scope="module")
def planted_image(tmp_path_factory, registry) -> dict:
    """DEMO_PACKAGES and the planted fake token, pushed to the real registry."""
    layout = tmp_path_factory.mktemp("planted-layout")
    digest = build_alpine_image(
        layout, "1.0", DEMO_PACKAGE_TUPLES, extra_files=PLANTED_SECRET_FILES
    )
    registry.push(layout, REPOSITORY, "1.0")
    assert registry.digest(REPOSITORY, "1.0") == digest
    return {
        "layout": layout,
        "digest": digest,
        "reference": f"{registry.host}/{REPOSITORY}@{digest}",
    }


@pytest.fixture
def env(tmp_path, trivy_bin, trivy_cache, registry):
    """Resources for one test: its own copy of the DB cache, store, policy and registries file."""
    cache = tmp_path / "trivy-cache"
    shutil.copytree(trivy_cache, cache)
    registries = tmp_path / "registries.yaml"
    registries.write_text(
        f"registries:\n  - name: local\n    url: {registry.url}\n    repositories: [platform/*]\n"
    )
    policy = tmp_path / "scanning.yaml"
    policy.write_text("fail_on: CRITICAL\nignore_unfixed: true\n")
    return {
        "cache": cache,
        "store": ArtefactStore(str(tmp_path / "store")),
        "policy": policy,
        "registries": registries,
        "resources": {
            "trivy": TrivyResource(binary=trivy_bin, cache_dir=str(cache), timeout_seconds=120),
            "artefact_store": ArtefactStoreResource(url=str(tmp_path / "store")),
            "policies": PoliciesResource(scan_policy_path=str(policy)),
            "registries": RegistriesResource(path=str(registries)),
            # Never contacted: no registry here keeps its credentials in Vault.
            "vault": VaultResource(addr="http://127.0.0.1:9"),
        },
    }


def _materialize(instance, env, digest, reference="", force=False, **resources):
    if digest not in instance.get_dynamic_partitions(IMAGE_DIGESTS.name):
        instance.add_dynamic_partitions(IMAGE_DIGESTS.name, [digest])
    return dg.materialize(
        ASSETS,
        instance=instance,
        partition_key=digest,
        resources={**env["resources"], **resources},
        run_config={"ops": {OP: {"config": {"reference": reference, "force": force}}}},
        raise_on_error=False,
    )


def _metadata(result) -> dict:
    [materialization] = result.asset_materializations_for_node(OP)
    return {key: value.value for key, value in materialization.metadata.items()}


def _checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _failure(result) -> str:
    [failure] = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data.error.to_string()


def _latest(env, digest) -> Path:
    return Path(env["store"].root) / scan_store.digest_folder(digest) / "latest.json"


def _failing_ids(check) -> set[str]:
    return {record.data["id"] for record in check.metadata["failing_findings"].value.records}


def _counting_wrapper(tmp_path, trivy_bin) -> tuple[str, Path]:
    """The real trivy behind a script that counts its invocations."""
    calls = tmp_path / "trivy-calls"
    script = tmp_path / "trivy-counting"
    script.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {trivy_bin} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), calls


def _calls(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_a_pushed_image_is_scanned_and_gated_by_the_policy(env, planted_image):
    digest, reference = planted_image["digest"], planted_image["reference"]
    today = datetime.now(UTC).date()
    with dg.instance_for_test() as instance:
        result = _materialize(instance, env, digest, reference)

        metadata = _metadata(result)
        assert metadata["scanned"] is True
        assert metadata["reference"] == reference
        assert (metadata["vulnerabilities_critical"], metadata["fixable_critical"]) == (1, 1)
        assert (metadata["vulnerabilities_high"], metadata["vulnerabilities_medium"]) == (1, 1)
        assert metadata["secrets"] == 1
        assert metadata["db_version"] == 2
        assert metadata["duration_seconds"] > 0
        assert metadata["source"] == "registry local"
        assert Path(metadata["report"]).is_file()
        assert "CVE-2099-0001" in metadata["top_findings"]
        columns = [c.name for c in metadata["dagster/column_schema"].columns]
        assert "vulnerability_id" in columns and "fixed_version" in columns

        record = scan_store.latest_scan(env["store"], digest)
        vulnerabilities = scan_store.read_frame(env["store"], record, "vulnerabilities")
        assert set(vulnerabilities["vulnerability_id"]) == DB_CVES
        secrets = scan_store.read_frame(env["store"], record, "secrets")
        assert list(secrets["rule_id"]) == [PLANTED_SECRET_RULE]

        # Blocking checks failed, so the run failed; the scan itself is recorded.
        assert not result.success
        checks = _checks(result)
        assert not checks[NO_FIXABLE_CRITICAL].passed
        assert _failing_ids(checks[NO_FIXABLE_CRITICAL]) == {"CVE-2099-0001"}
        assert "CVE-2099-0001" in checks[NO_FIXABLE_CRITICAL].description
        assert not checks[NO_EMBEDDED_SECRETS].passed
        [secret] = checks[NO_EMBEDDED_SECRETS].metadata["failing_findings"].value.records
        assert secret.data == {
            "rule": PLANTED_SECRET_RULE,
            "file": "/" + PLANTED_SECRET_PATH,
            "line": "2",
            "severity": "CRITICAL",
            "why": "CRITICAL or above",
        }
        # The token is in the image, never in the event log.
        logged = [str(entry) for entry in instance.all_logs(result.run_id)]
        assert not any(FAKE_GITHUB_TOKEN[4:24] in entry for entry in logged)

        # Accepted until a date to come: the policy changed, so the digest is scanned again.
        until = today + timedelta(days=30)
        env["policy"].write_text(
            "ignores:\n"
            f"  - {{id: CVE-2099-0001, reason: not reachable from the agent, expires: {until}}}\n"
            f"  - {{id: github-pat, reason: a fake planted for the demo, expires: {until}}}\n"
        )
        result = _materialize(instance, env, digest)  # the reference of the last scan
        assert result.success
        assert _metadata(result)["scanned"] is True
        checks = _checks(result)
        assert checks[NO_FIXABLE_CRITICAL].passed
        assert checks[NO_FIXABLE_CRITICAL].description.endswith("(1 ignored until their expiry)")
        [ignored] = checks[NO_FIXABLE_CRITICAL].metadata["ignored_findings"].value.records
        assert ignored.data == {
            "id": "CVE-2099-0001",
            "reason": "not reachable from the agent",
            "expires": until.isoformat(),
        }
        assert checks[NO_EMBEDDED_SECRETS].passed

        # The same ignore once its expiry has passed: it fails, and says which ignore expired.
        gone = today - timedelta(days=1)
        env["policy"].write_text(
            f"ignores:\n  - {{id: CVE-2099-0001, reason: not reachable, expires: {gone}}}\n"
        )
        result = _materialize(instance, env, digest)
        assert not result.success
        check = _checks(result)[NO_FIXABLE_CRITICAL]
        assert not check.passed
        assert f"expired ignores: CVE-2099-0001 ({gone})" in check.description
        assert f"CVE-2099-0001: expired on {gone}" in check.metadata["expired_ignore_list"].value
        [failing] = check.metadata["failing_findings"].value.records
        assert failing.data == {
            "id": "CVE-2099-0001",
            "package": "libcrypto3",
            "installed": "3.1.4-r0",
            "fixed": "3.1.4-r5",
            "severity": "CRITICAL",
            "why": f"ignore expired on {gone}",
        }


def test_a_digest_is_rescanned_only_for_a_new_db_or_policy(env, planted_image, registry, trivy_bin):
    binary, calls = _counting_wrapper(env["cache"].parent, trivy_bin)
    trivy = TrivyResource(binary=binary, cache_dir=str(env["cache"]), timeout_seconds=120)
    digest, reference = planted_image["digest"], planted_image["reference"]
    with dg.instance_for_test() as instance:
        first = _metadata(_materialize(instance, env, digest, reference, trivy=trivy))
        assert (first["scanned"], _calls(calls)) == (True, 1)
        latest = _latest(env, digest).read_bytes()

        # The same bytes pushed again under another tag: the same digest, nothing new to find.
        registry.push(planted_image["layout"], REPOSITORY, "1.0-again")
        again = _materialize(instance, env, digest, reference, trivy=trivy)
        metadata = _metadata(again)
        assert (metadata["scanned"], _calls(calls)) == (False, 1)
        assert metadata["scanned_at"] == first["scanned_at"]
        assert metadata["fixable_critical"] == 1
        assert metadata["reused_scan"].endswith("/scan.json")
        assert _latest(env, digest).read_bytes() == latest
        # The gates still judge that scan.
        assert not _checks(again)[NO_FIXABLE_CRITICAL].passed

        # A newer DB, with one more advisory: scanned again, and the new CVE is found.
        before = json.loads((env["cache"] / "db" / "metadata.json").read_text())["UpdatedAt"]
        extra = Advisory("CVE-2099-0004", "busybox", "1.36.1-r16", "LOW", "busybox: synthetic low")
        write_trivy_db(env["cache"], [*DEMO_ADVISORIES, extra])
        meta_path = env["cache"] / "db" / "metadata.json"
        meta = json.loads(meta_path.read_text())
        later = datetime.strptime(before, "%Y-%m-%dT%H:%M:%SZ") + timedelta(hours=6)
        meta["UpdatedAt"] = later.strftime("%Y-%m-%dT%H:%M:%SZ")
        meta_path.write_text(json.dumps(meta))
        rescan = _metadata(_materialize(instance, env, digest, trivy=trivy))
        assert (rescan["scanned"], _calls(calls)) == (True, 2)
        assert rescan["db_updated_at"] == meta["UpdatedAt"]
        assert rescan["vulnerabilities_low"] == 1
        record = scan_store.latest_scan(env["store"], digest)
        found = scan_store.read_frame(env["store"], record, "vulnerabilities")
        assert set(found["vulnerability_id"]) == {*DB_CVES, "CVE-2099-0004"}

        # `force` scans whatever the record says.
        forced = _metadata(_materialize(instance, env, digest, force=True, trivy=trivy))
        assert (forced["scanned"], _calls(calls)) == (True, 3)


def _stand_in(tmp_path, name: str, body: str) -> str:
    """A stand-in for the trivy binary (not trivy): a shell script with `body`."""
    script = tmp_path / f"trivy-stand-in-{name}"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_broken_trivy_output_or_a_timeout_fails_clearly_and_records_nothing(
    env, planted_image, tmp_path
):
    digest, reference = planted_image["digest"], planted_image["reference"]
    report = json.dumps({"SchemaVersion": 2, "ArtifactName": reference, "Results": []})
    broken = {
        "truncated": (
            f"printf '%s' '{report[: len(report) // 2]}'",
            "wrote unreadable or truncated JSON",
        ),
        "not-a-report": ("""printf '%s' '{"Results": []}'""", "SchemaVersion is missing"),
        "garbled": ("""printf '%s' '{"SchemaVersion": 2, "Results": [7]}'""", "Results[0]"),
        "hangs": ("exec sleep 60", "trivy image timed out after 1 s"),
    }

    def run_each(instance):
        for name, (body, message) in broken.items():
            trivy = TrivyResource(
                binary=_stand_in(tmp_path, name, body),
                cache_dir=str(env["cache"]),
                timeout_seconds=1,
            )
            result = _materialize(instance, env, digest, reference, force=True, trivy=trivy)
            assert not result.success, name
            error = _failure(result)
            assert f"scan of {reference} failed, nothing was recorded" in error, name
            assert message in error, name
            assert not result.asset_materializations_for_node(OP), name

    with dg.instance_for_test() as instance:
        run_each(instance)
        assert not _latest(env, digest).exists()
        assert scan_store.scanned_digests(env["store"]) == []

        good = _materialize(instance, env, digest, reference)
        assert _metadata(good)["scanned"] is True
        latest = _latest(env, digest).read_bytes()
        run_each(instance)
        assert _latest(env, digest).read_bytes() == latest


def test_an_oci_layout_is_scanned_by_digest(env, tmp_path):
    layout = tmp_path / "layout"
    digest = build_alpine_image(layout, "2.0", DEMO_PACKAGE_TUPLES)
    with dg.instance_for_test() as instance:
        result = _materialize(instance, env, digest, f"oci:{layout}")
        metadata = _metadata(result)
        assert (metadata["scanned"], metadata["source"]) == (True, "an OCI layout")
        assert metadata["reference"] == f"oci:{layout}@{digest}"
        assert metadata["secrets"] == 0
        record = scan_store.latest_scan(env["store"], digest)
        found = scan_store.read_frame(env["store"], record, "vulnerabilities")
        assert set(found["vulnerability_id"]) == DB_CVES

        other = build_alpine_image(tmp_path / "other", "3.0", [])
        result = _materialize(instance, env, other, f"oci:{layout}")
        assert f"the OCI layout {layout} does not hold {other}" in _failure(result)
        assert scan_store.latest_scan(env["store"], other) is None
        result = _materialize(instance, env, digest, f"oci:{layout}@{other}")
        assert "not this partition's digest" in _failure(result)


def test_without_a_reference_the_deployed_inventory_names_the_image(env, tmp_path):
    layout = tmp_path / "layout"
    digest = build_alpine_image(layout, "2.0", DEMO_PACKAGE_TUPLES)
    deployed_rows = deployed.typed_frame(
        [
            {
                "namespace": "agents",
                "workload": "runtime",
                "workload_kind": "Deployment",
                "container": "runtime",
                "image": f"oci:{layout}@{digest}",
                "reference": f"oci:{layout}@{digest}",
                "digest": digest,
            }
        ],
        deployed.DEPLOYED_COLUMNS,
    )
    deployed.write_frame(env["store"], deployed.deployed_key("2026-11-26"), deployed_rows)
    with dg.instance_for_test() as instance:
        result = _materialize(instance, env, digest)
        assert _metadata(result)["reference"] == f"oci:{layout}@{digest}"
        other = build_alpine_image(tmp_path / "other", "3.0", [])
        assert "not in the deployed-images inventory" in _failure(
            _materialize(instance, env, other)
        )


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("", "so there is no reference to scan it from"),
        ("127.0.0.1:5000/platform/x@sha256:" + "0" * 64, "not this partition's digest"),
        ("platform/x:latest", "is not an image reference by digest"),
        ("oci:/nonexistent/layout", "is not a readable OCI layout"),
    ],
)
def test_a_reference_that_does_not_name_the_partition_is_refused(
    env, planted_image, reference, message
):
    digest = planted_image["digest"]
    with dg.instance_for_test() as instance:
        result = _materialize(instance, env, digest, reference)
        assert not result.success
        assert message in _failure(result)
        assert not _latest(env, digest).exists()


def test_the_gates_run_on_their_own_judge_every_digest_on_its_partition(
    env, planted_image, tmp_path
):
    layout = tmp_path / "clean"
    clean = build_alpine_image(layout, "clean", [("zlib", "1.3.1-r0", "zlib")])
    never = "sha256:" + "1" * 64
    with dg.instance_for_test() as instance:
        _materialize(instance, env, planted_image["digest"], planted_image["reference"])
        assert _materialize(instance, env, clean, f"oci:{layout}").success
        instance.add_dynamic_partitions(IMAGE_DIGESTS.name, [never])
        result = dg.materialize(
            ASSETS,
            instance=instance,
            resources=env["resources"],
            selection=dg.AssetSelection.checks(no_fixable_critical),
            raise_on_error=False,
        )
    checks = {e.partition: e for e in result.get_asset_check_evaluations()}
    assert {digest: e.passed for digest, e in checks.items()} == {
        planted_image["digest"]: False,
        clean: True,
        never: False,
    }
    planted = checks[planted_image["digest"]]
    assert planted.description.endswith("1 vulnerabilities failing the scan policy: CVE-2099-0001")
    assert planted.description.startswith(planted.metadata["image"].value)
    [failing] = planted.metadata["failing_findings"].value.records
    assert failing.data["id"] == "CVE-2099-0001"
    assert checks[clean].description == "oci:clean: no vulnerabilities failing the scan policy"
    assert "has no scan recorded" in checks[never].description
    # The run fails on the gate, saying which images and why, not with Dagster's traceback.
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error.cls_name == "Failure"
    assert "CVE-2099-0001" in error.message and "has no scan recorded" in error.message


# --- a registry that wants credentials, kept in Vault ------------------------------------------

USERNAME = "gsv-scanner"
PASSWORD = "registry-pw-7f3c1e9a"  # generated for this test registry only


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory):
    """docker-registry with htpasswd authentication, on loopback."""
    root = tmp_path_factory.mktemp("private-registry")
    registry = start_registry(root, users={USERNAME: PASSWORD}, name="private-registry")
    try:
        yield registry
    finally:
        registry.stop()


def _refused_then_scanned(instance, env, digest, reference, listed, trivy, **resources):
    """The image scanned with no registry listed (the failure's text), then with `listed`."""
    refused = _materialize(instance, env, digest, reference, trivy=trivy)
    result = _materialize(
        instance,
        env,
        digest,
        reference,
        registries=RegistriesResource(path=str(listed)),
        trivy=trivy,
        **resources,
    )
    return _failure(refused), result


def test_registry_credentials_come_from_vault_and_go_nowhere_else(
    env, private_registry, openbao, tmp_path, trivy_bin
):
    layout = tmp_path / "layout"
    digest = build_alpine_image(layout, "1.0", DEMO_PACKAGE_TUPLES)
    private_registry.push(layout, "agents/runtime", "1.0", creds=(USERNAME, PASSWORD))
    host = private_registry.host
    reference = f"{host}/agents/runtime@{digest}"
    vault = VaultResource(addr=openbao.addr, token=openbao.token)
    vault_kv.write(
        vault.client(),
        "secret",
        "registries/private",
        {"username": USERNAME, "password": PASSWORD},
        cas=0,
    )
    listed = tmp_path / "private.yaml"
    listed.write_text(
        f"registries:\n  - name: private\n    url: {private_registry.url}\n"
        "    credentials:\n      vault: {path: registries/private}\n"
    )
    binary, calls = _counting_wrapper(tmp_path, trivy_bin)
    trivy = TrivyResource(binary=binary, cache_dir=str(env["cache"]), timeout_seconds=120)
    with dg.instance_for_test() as instance:
        # Not listed: read anonymously, which this registry refuses (its manifest, read to tell
        # an image from an artifact, before Trivy runs).
        refused, result = _refused_then_scanned(
            instance, env, digest, reference, listed, trivy, vault=vault
        )
        assert "the registry requires credentials (none configured)" in refused
        metadata = _metadata(result)
        assert (metadata["scanned"], metadata["source"]) == (True, "registry private")
        record = scan_store.latest_scan(env["store"], digest)
        found = scan_store.read_frame(env["store"], record, "vulnerabilities")
        assert set(found["vulnerability_id"]) == DB_CVES

        logged = [str(entry) for entry in instance.all_logs(result.run_id)]
        assert logged and not any(PASSWORD in entry for entry in logged)
    # Trivy got them in its environment: its command lines (the wrapper's log) never held them.
    assert _calls(calls) == 1
    assert PASSWORD not in calls.read_text()
    for path in Path(env["store"].root).rglob("*"):
        assert not path.is_file() or PASSWORD.encode() not in path.read_bytes()


def test_the_code_location_has_the_job_the_push_sensor_launches(env):
    from gsv_pipelines.definitions import defs

    [job] = [job for job in defs().jobs if job.name == "image_scan_job"]
    # Resolved over this module's objects alone: the asset with both of its gates, per digest.
    resolved = dg.Definitions(
        assets=[trivy_db, image_scan],
        asset_checks=[no_fixable_critical, no_embedded_secrets],
        jobs=[job],
        resources=env["resources"],
    ).resolve_job_def("image_scan_job")
    assert resolved.partitions_def == IMAGE_DIGESTS
    # The scan and its gates in the run's own process: a process (or pod) a step would cost more
    # than the scan (docs/scanning.md).
    assert resolved.executor_def.name == "in_process"
    assert {node.name for node in resolved.graph.node_defs} == {
        OP,
        f"{OP}_{NO_FIXABLE_CRITICAL}",
        f"{OP}_{NO_EMBEDDED_SECRETS}",
    }


def launched_scan_job():
    """image_scan_job over the test's resources (LAUNCHED), loaded from its code pointer as the
    process of a launched run loads its job."""
    spec = json.loads(os.environ[LAUNCHED])
    return dg.Definitions(
        assets=[trivy_db, image_scan],
        asset_checks=[no_fixable_critical, no_embedded_secrets],
        jobs=[image_scan_job],
        resources={
            "trivy": TrivyResource(binary=spec["trivy"], cache_dir=spec["cache"]),
            "artefact_store": ArtefactStoreResource(url=spec["store"]),
            "policies": PoliciesResource(scan_policy_path=spec["policy"]),
            "registries": RegistriesResource(path=spec["registries"]),
            "vault": VaultResource(addr="http://127.0.0.1:9"),
        },
    ).resolve_job_def("image_scan_job")


def test_a_launched_scan_runs_the_scan_and_its_gates_in_the_run_s_process(
    env, planted_image, trivy_bin, monkeypatch
):
    """As a launched run executes (`execute_job` on the job's code pointer: the job's own
    executor runs the steps), the scan and both gates run in the run's process: a process a step
    would load the code location again for each, several times the scan's cost."""
    spec = {
        "trivy": trivy_bin,
        "cache": str(env["cache"]),
        "store": env["store"].root,
        "policy": str(env["policy"]),
        "registries": str(env["registries"]),
    }
    monkeypatch.setenv(LAUNCHED, json.dumps(spec))
    digest = planted_image["digest"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(IMAGE_DIGESTS.name, [digest])
        result = dg.execute_job(
            dg.reconstructable(launched_scan_job),
            instance=instance,
            tags={"dagster/partition": digest},
            run_config={"ops": {OP: {"config": {"reference": planted_image["reference"]}}}},
        )
        events = [e.dagster_event for e in instance.all_logs(result.run_id) if e.is_dagster_event]
    # The planted image fails both gates by design, after its scan was recorded.
    assert not result.success
    assert scan_store.latest_scan(env["store"], digest) is not None
    started = {e.step_key: e.pid for e in events if e.event_type == dg.DagsterEventType.STEP_START}
    assert set(started) == {OP, f"{OP}_{NO_FIXABLE_CRITICAL}", f"{OP}_{NO_EMBEDDED_SECRETS}"}
    assert set(started.values()) == {os.getpid()}
    assert not [e for e in events if e.event_type == dg.DagsterEventType.STEP_WORKER_STARTING]


# --- a registry serving HTTPS with a self-signed certificate ------------------------------------


def test_a_self_signed_registry_is_scanned_only_when_listed_with_tls_verify_false(
    env, tmp_path, trivy_bin
):
    server = start_registry(tmp_path / "registry", tls=True, name="registry-tls")
    try:
        layout = tmp_path / "layout"
        digest = build_alpine_image(layout, "1.0", DEMO_PACKAGE_TUPLES)
        server.push(layout, "agents/tls", "1.0")
        reference = f"{server.host}/agents/tls@{digest}"
        listed = tmp_path / "tls.yaml"
        listed.write_text(
            f"registries:\n  - name: selfsigned\n    url: {server.url}\n    tls_verify: false\n"
        )
        trivy = TrivyResource(binary=trivy_bin, cache_dir=str(env["cache"]), timeout_seconds=120)
        with dg.instance_for_test() as instance:
            # Not listed: Trivy verifies the certificate, and refuses it.
            refused, result = _refused_then_scanned(instance, env, digest, reference, listed, trivy)
        assert "certificate" in refused
        assert _metadata(result)["source"] == "registry selfsigned"
        record = scan_store.latest_scan(env["store"], digest)
        found = scan_store.read_frame(env["store"], record, "vulnerabilities")
        assert set(found["vulnerability_id"]) == DB_CVES
    finally:
        server.stop()
