"""Scans through a real `trivy server` (the supervisor of scanning/trivy_server.py) on loopback: the
same findings as scans on their own, at once; a DB refresh in the middle of them; a server that
dies in the middle of one."""

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import dagster as dg
import pytest
import requests

from gsv_pipelines.defs.scanning.image_scan import image_scan
from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
from gsv_pipelines.demo.oci_image import PLANTED_SECRET_FILES, build_alpine_image
from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES, Advisory, write_trivy_db
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.scanning import store as scan_store
from gsv_pipelines.lib.scanning.trivy import Trivy, TrivyError
from gsv_pipelines.lib.scanning.trivy_cache import TrivyCache
from gsv_pipelines.lib.scanning.trivy_server import start_local
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.registries import RegistriesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource
from gsv_pipelines.resources.trivy import TrivyResource
from gsv_pipelines.resources.vault import VaultResource
from tests.services.flaky_proxy import FlakyProxy
from tests.services.trivy_db import push_db_artifact

DB_A = datetime(2026, 1, 1, tzinfo=UTC)
DB_B = datetime(2026, 6, 1, tzinfo=UTC)
EXTRA = Advisory("CVE-2099-0004", "busybox", "1.36.1-r16", "HIGH", "busybox: synthetic, new in B")
VULNERABLE = [
    ("libcrypto3", "3.1.4-r0", "openssl"),
    ("busybox", "1.36.1-r15", "busybox"),
]
FIXED = [
    ("libcrypto3", "3.1.4-r5", "openssl"),
    ("busybox", "1.36.1-r16", "busybox"),
]
# Six images with different findings: both, one or none of the vulnerable packages, with and
# without the planted fake token.
IMAGES = {
    "all": (VULNERABLE, {}),
    "openssl-fixed": ([FIXED[0], VULNERABLE[1]], {}),
    "none": (FIXED, {}),
    "all-secret": (VULNERABLE, PLANTED_SECRET_FILES),
    "busybox-fixed": ([VULNERABLE[0], FIXED[1]], {}),
    "none-secret": (FIXED, PLANTED_SECRET_FILES),
}


def _publish(cache: Path, advisories, updated_at: datetime, due: bool = False) -> None:
    """Publish a generated DB into `cache`; `due`: past its NextUpdate, so a refresh downloads."""
    trivy_cache = TrivyCache(cache)
    with trivy_cache.staging() as staged:
        write_trivy_db(staged, list(advisories), updated_at=updated_at)
        if due:
            path = staged / "db" / "metadata.json"
            meta = json.loads(path.read_text())
            meta["NextUpdate"] = meta["DownloadedAt"] = "2020-01-01T00:00:00Z"
            path.write_text(json.dumps(meta))
        trivy_cache.publish(staged)


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _findings(report: dict) -> frozenset:
    """What a scan found, without what differs between runs (times, the order of results)."""
    found = set()
    for result in report.get("Results") or []:
        for v in result.get("Vulnerabilities") or []:
            found.add(
                (
                    "vuln",
                    result["Target"],
                    v["VulnerabilityID"],
                    v["PkgName"],
                    v["InstalledVersion"],
                    v.get("FixedVersion"),
                    v["Severity"],
                )
            )
        for s in result.get("Secrets") or []:
            found.add(("secret", result["Target"], s["RuleID"], s["StartLine"], s["Severity"]))
    return frozenset(found)


@pytest.fixture
def cache(tmp_path) -> Path:
    cache = tmp_path / "cache"
    _publish(cache, DEMO_ADVISORIES, DB_A)
    return cache


@pytest.fixture
def server(trivy_bin, cache, tmp_path):
    server = start_local(trivy_bin, cache, tmp_path / "logs")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory, registry) -> dict[str, tuple[str, bool]]:
    """name → (what Trivy is given, whether it is a layout): three in the registry, three as
    OCI layouts."""
    built = {}
    for n, (name, (packages, files)) in enumerate(IMAGES.items()):
        layout = tmp_path_factory.mktemp(f"layout-{name}")
        digest = build_alpine_image(layout, "1.0", packages, extra_files={**files, "n": f"{n}\n"})
        if n % 2:
            built[name] = (f"{layout}@{digest}", True)
        else:
            registry.push(layout, f"concurrent/{name}", "1.0")
            built[name] = (f"{registry.host}/concurrent/{name}@{digest}", False)
    return built


def _scan(trivy: Trivy, image: tuple[str, bool]):
    reference, layout = image
    return trivy.scan_image(reference, layout=layout, insecure_registry=not layout)


def test_concurrent_scans_through_the_server_find_what_sequential_scans_find(
    trivy_bin, cache, server, images
):
    alone = Trivy(binary=trivy_bin, cache_dir=cache, timeout_seconds=120)
    sequential = {name: _findings(_scan(alone, image).report) for name, image in images.items()}
    # The images differ, so equal findings mean something: each got its own.
    assert len(set(sequential.values())) == len(images)
    assert any(f[0] == "secret" for found in sequential.values() for f in found)

    client = Trivy(
        binary=trivy_bin,
        cache_dir=cache,
        timeout_seconds=120,
        server_url=server.url,
        server_token=server.token,
    )
    spans = []

    def timed(image):
        started = time.monotonic()
        run = _scan(client, image)
        spans.append((started, time.monotonic()))
        return run

    with ThreadPoolExecutor(len(images)) as pool:
        runs = dict(zip(images, pool.map(timed, images.values()), strict=True))
    assert {name: _findings(run.report) for name, run in runs.items()} == sequential
    assert {run.db["UpdatedAt"] for run in runs.values()} == {_stamp(DB_A)}
    # They did run at once: some scan started before another had ended.
    spans.sort()
    assert any(later[0] < earlier[1] for earlier, later in pairwise(spans))


def test_a_db_refresh_during_scans_leaves_every_scan_with_a_complete_db(
    trivy_bin, registry, tmp_path, images
):
    cache = tmp_path / "refreshed-cache"
    _publish(cache, DEMO_ADVISORIES, DB_A, due=True)
    source = tmp_path / "db-b"
    write_trivy_db(source, [*DEMO_ADVISORIES, EXTRA], updated_at=DB_B)
    mirror = push_db_artifact(source, registry, "mirror/trivy-db-b")
    server = start_local(trivy_bin, cache, tmp_path / "logs")
    try:
        client = Trivy(
            binary=trivy_bin, cache_dir=cache, server_url=server.url, server_token=server.token
        )
        image = images["all"]
        expected = {
            _stamp(DB_A): {a.cve_id for a in DEMO_ADVISORIES},
            _stamp(DB_B): {a.cve_id for a in DEMO_ADVISORIES} | {EXTRA.cve_id},
        }
        done, errors, switched_at = [], [], []
        stop = threading.Event()

        def keep_scanning():
            while not stop.is_set():
                started = time.monotonic()
                try:
                    run = _scan(client, image)
                except TrivyError as exc:
                    errors.append(str(exc))
                    continue
                found = {f[2] for f in _findings(run.report) if f[0] == "vuln"}
                done.append((started, run.db["UpdatedAt"], found))

        workers = [threading.Thread(target=keep_scanning) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            while len(done) < 6 and not errors:
                time.sleep(0.05)
            # scanning/trivy_db's own path: a download from the mirror, published when complete.
            refresher = Trivy(binary=trivy_bin, cache_dir=cache, db_repository=mirror)
            assert refresher.download_db()["UpdatedAt"] == _stamp(DB_B)
            held = client.await_server_db(_stamp(DB_B), timeout_seconds=120)
            switched_at.append(time.monotonic())
            assert held["UpdatedAt"] == _stamp(DB_B)
            while len([d for d in done if d[0] > switched_at[0]]) < 6 and not errors:
                time.sleep(0.05)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
    finally:
        server.stop()

    assert errors == []
    # Every scan found exactly what the DB it names holds: never a mix, never a partial DB.
    assert all(found == expected[db] for _, db, found in done)
    assert {db for _, db, _ in done} == set(expected)
    assert all(db == _stamp(DB_B) for started, db, _ in done if started > switched_at[0])
    # The old DB is gone once no scan can use it; the new one stays published.
    trivy_cache = TrivyCache(cache)
    assert [p.name for p in (cache / "db-generations").iterdir()] == [trivy_cache.current().id]


def test_the_server_s_token_is_required_and_never_shown(trivy_bin, cache, server, images):
    wrong = Trivy(binary=trivy_bin, cache_dir=cache, server_url=server.url, server_token="nope")
    with pytest.raises(TrivyError, match="invalid token") as failure:
        _scan(wrong, images["all"])
    assert server.token not in str(failure.value)
    # Given to Trivy in its environment, never on a command line `ps` shows.
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert server.token.encode() not in cmdline.read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_the_supervisor_restarts_a_server_that_died(trivy_bin, cache, server, images):
    [child] = _children(server.process.pid)
    os.kill(child, signal.SIGKILL)
    # The supervisor's next look finds it dead and starts another on the same DB and port.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = _children(server.process.pid)
        if now and now != [child]:
            try:
                if requests.get(f"{server.url}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
        time.sleep(0.1)
    client = Trivy(
        binary=trivy_bin, cache_dir=cache, server_url=server.url, server_token=server.token
    )
    assert {f[2] for f in _findings(_scan(client, images["all"]).report) if f[0] == "vuln"} == {
        a.cve_id for a in DEMO_ADVISORIES
    }


def test_a_server_that_dies_mid_scan_fails_the_scan_clearly_and_records_nothing(
    trivy_bin, cache, server, registry, tmp_path
):
    layout = tmp_path / "layout"
    digest = build_alpine_image(layout, "1.0", VULNERABLE, extra_files={"app/x": "mid-scan\n"})
    registry.push(layout, "concurrent/mid-scan", "1.0")
    manifest = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())
    layer_digest = manifest["layers"][0]["digest"]
    # The registry as the scan sees it holds the image's layer back, and the server as the scan
    # sees it counts the calls: by the time the layer is asked for, the scan has talked to the
    # server (MissingBlobs), and it will need it again (PutBlob, then Scan).
    registry_side = FlakyProxy(registry.url).start()
    server_side = FlakyProxy(server.url).start()
    registry_side.hold(f"/blobs/{layer_digest}")
    store = tmp_path / "store"
    resources = {
        "trivy": TrivyResource(
            binary=trivy_bin,
            cache_dir=str(cache),
            server_url=server_side.url,
            server_token=server.token,
            timeout_seconds=120,
        ),
        "artefact_store": ArtefactStoreResource(url=str(store)),
        "policies": PoliciesResource(),
        "registries": RegistriesResource(),
        "vault": VaultResource(addr="http://127.0.0.1:9"),
    }
    reference = f"{registry_side.host}/concurrent/mid-scan@{digest}"
    outcome = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(IMAGE_DIGESTS.name, [digest])

        def materialize():
            outcome["result"] = dg.materialize(
                [image_scan],
                instance=instance,
                resources=resources,
                partition_key=digest,
                run_config={"ops": {"scanning__image_scan": {"config": {"reference": reference}}}},
                raise_on_error=False,
            )

        runner = threading.Thread(target=materialize)
        runner.start()
        try:
            deadline = time.monotonic() + 120
            while registry_side.requests_to(layer_digest) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server_side.requests_to("MissingBlobs") == 1
            assert server_side.requests_to("/Scan") == 0
            server.stop()  # the supervisor and its trivy server, gone
            server_side.stop()
        finally:
            registry_side.heal()
            runner.join()
            registry_side.stop()

    result = outcome["result"]
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith(f"scan of {reference} failed, nothing was recorded:")
    assert f"client of the Trivy server at {server_side.url}) exited with code 1" in message
    assert server.token not in message
    assert scan_store.latest_scan(ArtefactStore(str(store)), digest) is None
    assert not list(store.rglob("scan.json"))
