"""image_push_sensor against the real registry: pushes become scans, once per digest; registry
errors and timeouts (FlakyProxy in front of the registry) leave the cursor for a later tick."""

import subprocess
import uuid

import dagster as dg
import hvac
import pytest
import requests

from gsv_pipelines.defs.scanning.image_scan import image_scan
from gsv_pipelines.defs.scanning.jobs import image_scan_job
from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
from gsv_pipelines.defs.scanning.sensors import build_image_push_sensor, sensors
from gsv_pipelines.demo.oci_image import build_alpine_image
from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.core.processes import free_port
from gsv_pipelines.lib.scanning.push_watch import load_cursor
from gsv_pipelines.lib.scanning.registry_client import MANIFEST_ACCEPT
from gsv_pipelines.resources.registries import RegistriesResource
from gsv_pipelines.resources.vault import VaultResource
from tests.services.flaky_proxy import FlakyProxy
from tests.services.registry import start_registry

USER, PASSWORD = "gsv-scanner", "basic-auth-password-71aa"


def push_variant(registry_host: str, tmp_path, repository: str, tag: str, variant: str, creds=None):
    """Push an image whose digest depends on `variant` only (skopeo); its digest."""
    layout = tmp_path / f"layout-{variant}"
    digest = build_alpine_image(layout, tag, [("gsv-probe", f"{variant}-r0", "gsv-probe")])
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            *([f"--dest-creds={creds[0]}:{creds[1]}"] if creds else []),
            f"oci:{layout}",
            f"docker://{registry_host}/{repository}:{tag}",
        ],
        check=True,
        capture_output=True,
    )
    return digest


def retag(url: str, repository: str, tag: str, new_tag: str) -> None:
    manifest = requests.get(
        f"{url}/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}, timeout=5
    )
    manifest.raise_for_status()
    requests.put(
        f"{url}/v2/{repository}/manifests/{new_tag}",
        data=manifest.content,
        headers={"Content-Type": manifest.headers["Content-Type"]},
        timeout=5,
    ).raise_for_status()


@pytest.fixture
def prefix() -> str:
    return f"push-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def proxy(registry):
    flaky = FlakyProxy(registry.url).start()
    yield flaky
    flaky.stop()


@pytest.fixture
def no_vault() -> VaultResource:
    """Nothing listens there: a tick that contacted Vault for anonymous registries would fail."""
    return VaultResource(addr=f"http://127.0.0.1:{free_port()}", token="never-used")


def registries_file(tmp_path, *entries: str) -> RegistriesResource:
    path = tmp_path / "registries.yaml"
    path.write_text("registries:\n" + "".join(entries))
    return RegistriesResource(path=str(path))


def entry(name: str, url: str, pattern: str, credentials: str = "") -> str:
    return f"  - name: {name}\n    url: {url}\n    repositories: [{pattern!r}]\n{credentials}"


def tick(sensor, instance, resources, cursor: str | None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return sensor(context)


def scanned(result) -> list[str]:
    return [request.run_key for request in result.run_requests]


def test_a_push_becomes_a_partition_and_a_scan_keyed_by_its_digest(
    registry, tmp_path, prefix, no_vault
):
    digest = push_variant(registry.host, tmp_path, f"{prefix}/api", "1.0", "m1")
    resources = {
        "registries": registries_file(tmp_path, entry("local", registry.url, f"{prefix}/*")),
        "vault": no_vault,
    }
    sensor = build_image_push_sensor()

    with dg.instance_for_test() as instance:
        result = tick(sensor, instance, resources, None)

    reference = f"{registry.host}/{prefix}/api@{digest}"
    [request] = result.run_requests
    assert (request.run_key, request.partition_key) == (digest, digest)
    assert request.run_config == {
        "ops": {
            "scanning__image_scan": {
                "config": {"reference": reference, "image": f"{prefix}/api:1.0"}
            }
        }
    }
    assert request.tags["gsv/image"] == f"{prefix}/api:1.0"
    assert request.tags["gsv/scan-attempt"] == "1"
    [add] = result.dynamic_partitions_requests
    assert (add.partitions_def_name, list(add.partition_keys)) == (IMAGE_DIGESTS.name, [digest])
    assert load_cursor(result.cursor) == {"local": {f"{prefix}/api": {"1.0": digest}}}


def test_repushing_the_same_digest_under_a_new_tag_triggers_no_scan(
    registry, tmp_path, prefix, no_vault
):
    digest = push_variant(registry.host, tmp_path, f"{prefix}/api", "1.0", "n1")
    resources = {
        "registries": registries_file(tmp_path, entry("local", registry.url, f"{prefix}/*")),
        "vault": no_vault,
    }
    sensor = build_image_push_sensor()

    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, resources, None)
        retag(registry.url, f"{prefix}/api", "1.0", "latest")
        push_variant(registry.host, tmp_path, f"{prefix}/mirror", "1.0", "n1")
        second = tick(sensor, instance, resources, first.cursor)

    assert scanned(first) == [digest]
    assert scanned(second) == [] and second.dynamic_partitions_requests == []
    assert "no new digest" in second.skip_reason.skip_message
    assert load_cursor(second.cursor) == {
        "local": {
            f"{prefix}/api": {"1.0": digest, "latest": digest},
            f"{prefix}/mirror": {"1.0": digest},
        }
    }


def test_registry_500s_keep_the_cursor_and_the_next_tick_catches_up(
    registry, tmp_path, prefix, proxy, no_vault, capfd
):
    push_variant(registry.host, tmp_path, f"{prefix}/api", "1.0", "o1")
    push_variant(registry.host, tmp_path, f"{prefix}/worker", "1.0", "o2")
    resources = {
        "registries": registries_file(tmp_path, entry("local", proxy.url, f"{prefix}/*")),
        "vault": no_vault,
    }
    sensor = build_image_push_sensor()

    with dg.instance_for_test() as instance:
        baseline = tick(sensor, instance, resources, None)
        api_new = push_variant(registry.host, tmp_path, f"{prefix}/api", "1.1", "o3")
        worker_new = push_variant(registry.host, tmp_path, f"{prefix}/worker", "1.1", "o4")

        # Every request fails: the tick fails, so Dagster keeps the cursor it had.
        proxy.fail("^/v2/")
        with pytest.raises(RuntimeError, match=r"no registry could be read.*HTTP 500"):
            tick(sensor, instance, resources, baseline.cursor)

        # One repository fails: the other progresses, the failing one keeps its cursor part.
        proxy.heal()
        proxy.fail(f"^/v2/{prefix}/api/")
        partial = tick(sensor, instance, resources, baseline.cursor)

        proxy.heal()
        caught_up = tick(sensor, instance, resources, partial.cursor)
        settled = tick(sensor, instance, resources, caught_up.cursor)

    assert scanned(partial) == [worker_new]
    warned = [line for line in capfd.readouterr().err.splitlines() if " - WARNING - " in line]
    assert any(f"repository {prefix}/api: HTTP 500" in line for line in warned)
    before, during = load_cursor(baseline.cursor), load_cursor(partial.cursor)
    assert during["local"][f"{prefix}/api"] == before["local"][f"{prefix}/api"]
    assert scanned(caught_up) == [api_new]
    assert scanned(settled) == []


def test_registry_timeouts_keep_the_cursor_and_the_next_tick_catches_up(
    registry, tmp_path, prefix, proxy, no_vault
):
    push_variant(registry.host, tmp_path, f"{prefix}/api", "1.0", "k1")
    resources = {
        "registries": registries_file(tmp_path, entry("local", proxy.url, f"{prefix}/*")),
        "vault": no_vault,
    }
    sensor = build_image_push_sensor(timeout=(2.0, 0.5))

    with dg.instance_for_test() as instance:
        baseline = tick(sensor, instance, resources, None)
        missed = [
            push_variant(registry.host, tmp_path, f"{prefix}/api", "1.1", "k2"),
            push_variant(registry.host, tmp_path, f"{prefix}/batch", "1.0", "k3"),
        ]
        proxy.stall("^/v2/")
        with pytest.raises(RuntimeError, match="no answer within"):
            tick(sensor, instance, resources, baseline.cursor)
        proxy.heal()
        caught_up = tick(sensor, instance, resources, baseline.cursor)

    assert sorted(scanned(caught_up)) == sorted(missed)
    assert len(scanned(baseline)) == 1


def test_a_digest_already_a_partition_is_scanned_without_adding_it_again(
    registry, tmp_path, prefix, no_vault
):
    digest = push_variant(registry.host, tmp_path, f"{prefix}/api", "1.0", "j1")
    resources = {
        "registries": registries_file(tmp_path, entry("local", registry.url, f"{prefix}/api")),
        "vault": no_vault,
    }

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(IMAGE_DIGESTS.name, [digest])
        result = tick(build_image_push_sensor(), instance, resources, None)

    assert scanned(result) == [digest]
    assert result.dynamic_partitions_requests == []


def test_without_registries_the_sensor_skips_saying_so(no_vault):
    resources = {"registries": RegistriesResource(), "vault": no_vault}
    result = tick(build_image_push_sensor(), dg.DagsterInstance.ephemeral(), resources, None)
    assert isinstance(result, dg.SkipReason)
    assert "GSV_REGISTRIES is unset" in result.skip_message


def test_the_sensor_targets_the_scan_job_partitioned_by_digest():
    [sensor] = [s for s in sensors().sensors if s.name == "image_push_sensor"]
    assert sensor.job_name == "image_scan_job"
    assert sensor.minimum_interval_seconds == 30
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # GSV_ENV is not prod here
    assert set(sensor.required_resource_keys) == {"registries", "vault"}

    # The run config and partition key the sensor sends fit the job's asset.
    assert image_scan_job.name == sensor.job_name
    assert image_scan.op.name == "scanning__image_scan"
    assert image_scan.partitions_def == IMAGE_DIGESTS


# Registries that require credentials.


@pytest.fixture(scope="module")
def basic_auth_registry(registry, tmp_path_factory):
    """A second docker-registry requiring Basic auth from an htpasswd file."""
    root = tmp_path_factory.mktemp("registry-basic")
    private = start_registry(root, users={USER: PASSWORD}, name="registry-basic")
    try:
        creds = (USER, PASSWORD)
        digest = push_variant(private.host, root, "private/app", "1.0", "basic1", creds=creds)
        yield {"host": private.host, "url": private.url, "digest": digest}
    finally:
        private.stop()


def test_a_self_signed_registry_is_watched_only_with_tls_verify_false(
    tmp_path, no_vault, monkeypatch
):
    # As in many images: a CA bundle named in the environment, which requests would let override
    # a session's verify=False.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    server = start_registry(tmp_path / "registry", tls=True, name="registry-tls")
    try:
        digest = push_variant(server.host, tmp_path, "selfsigned/app", "1.0", "tls1")
        listed = {}
        for verify in (True, False):
            (tmp_path / str(verify)).mkdir()
            setting = "" if verify else "    tls_verify: false\n"
            listed[verify] = {
                "registries": registries_file(
                    tmp_path / str(verify), entry("tls", server.url, "selfsigned/app", setting)
                ),
                "vault": no_vault,
            }
        sensor = build_image_push_sensor()
        with dg.instance_for_test() as instance:
            with pytest.raises(RuntimeError) as refused:
                tick(sensor, instance, listed[True], None)
            result = tick(sensor, instance, listed[False], None)
    finally:
        server.stop()
    assert "TLS verification failed" in str(refused.value)
    assert scanned(result) == [digest]


def test_credentials_from_the_environment_open_a_basic_auth_registry(
    basic_auth_registry, tmp_path, monkeypatch, no_vault
):
    env_credentials = "    credentials:\n      env: {username: GSV_T_USER, password: GSV_T_PASS}\n"
    resources = {
        "registries": registries_file(
            tmp_path,
            entry("private", basic_auth_registry["url"], "private/app", env_credentials),
        ),
        "vault": no_vault,
    }
    sensor = build_image_push_sensor()
    monkeypatch.setenv("GSV_T_USER", USER)

    with dg.instance_for_test() as instance:
        monkeypatch.setenv("GSV_T_PASS", "not-the-password-55c0")
        with pytest.raises(RuntimeError) as refused:
            tick(sensor, instance, resources, None)
        monkeypatch.setenv("GSV_T_PASS", PASSWORD)
        result = tick(sensor, instance, resources, None)

    assert "HTTP 401" in str(refused.value) and "refused the credentials" in str(refused.value)
    assert "not-the-password-55c0" not in str(refused.value)
    assert scanned(result) == [basic_auth_registry["digest"]]
    [request] = result.run_requests
    assert request.tags["gsv/image"] == "private/app:1.0"
    assert request.run_config["ops"]["scanning__image_scan"]["config"]["reference"] == (
        f"{basic_auth_registry['host']}/private/app@{basic_auth_registry['digest']}"
    )


def test_credentials_from_vault_open_a_basic_auth_registry_next_to_an_anonymous_one(
    basic_auth_registry, registry, openbao, tmp_path, prefix
):
    client = hvac.Client(url=openbao.addr, token=openbao.token)
    path = f"registries/{prefix}"
    vault_kv.write(client, "secret", path, {"username": USER, "password": PASSWORD}, cas=0)
    anonymous = push_variant(registry.host, tmp_path, f"{prefix}/api", "1.0", "h1")
    vault_credentials = f"    credentials:\n      vault: {{path: {path}}}\n"
    resources = {
        "registries": registries_file(
            tmp_path,
            entry("open", registry.url, f"{prefix}/*"),
            entry("private", basic_auth_registry["url"], "private/app", vault_credentials),
        ),
        "vault": VaultResource(addr=openbao.addr, token=openbao.token),
    }

    with dg.instance_for_test() as instance:
        result = tick(build_image_push_sensor(), instance, resources, None)

    assert scanned(result) == [anonymous, basic_auth_registry["digest"]]
    assert set(load_cursor(result.cursor)) == {"open", "private"}


def test_an_unreachable_vault_fails_only_the_registry_whose_credentials_live_there(
    basic_auth_registry, registry, tmp_path, prefix, no_vault
):
    anonymous = push_variant(registry.host, tmp_path, f"{prefix}/api", "1.0", "g1")
    vault_credentials = "    credentials:\n      vault: {path: registries/private}\n"
    previous = '{"private": {"private/app": {"0.9": "sha256:' + "3" * 64 + '"}}}'
    resources = {
        "registries": registries_file(
            tmp_path,
            entry("open", registry.url, f"{prefix}/*"),
            entry("private", basic_auth_registry["url"], "private/app", vault_credentials),
        ),
        "vault": no_vault,
    }

    with dg.instance_for_test() as instance:
        result = tick(build_image_push_sensor(), instance, resources, previous)

    assert scanned(result) == [anonymous]
    assert load_cursor(result.cursor)["private"] == load_cursor(previous)["private"]
