"""scanning/trivy_db against a real registry serving a generated DB as Trivy's mirror does."""

import json
import shutil
from datetime import UTC, datetime

import dagster as dg
import requests

from gsv_pipelines.defs.scanning.assets import trivy_db
from gsv_pipelines.demo.oci_image import DEMO_PACKAGE_TUPLES, build_alpine_image
from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES, write_trivy_db
from gsv_pipelines.lib.scanning.trivy import Trivy
from gsv_pipelines.lib.scanning.trivy_cache import TrivyCache
from gsv_pipelines.lib.scanning.trivy_server import start_local
from gsv_pipelines.resources.trivy import TrivyResource
from tests.services.trivy_db import push_db_artifact


def test_the_db_is_downloaded_once_from_the_mirror_then_scans_use_it(
    trivy_bin, trivy_cache, registry, tmp_path
):
    mirror = push_db_artifact(trivy_cache, registry, "mirror/trivy-db")
    cache = tmp_path / "shared-cache"
    resource = TrivyResource(binary=trivy_bin, cache_dir=str(cache), db_repository=mirror)
    with dg.instance_for_test() as instance:
        result = dg.materialize([trivy_db], instance=instance, resources={"trivy": resource})
    metadata = result.asset_materializations_for_node("scanning__trivy_db")[0].metadata
    assert metadata["db_version"].value == 2
    assert metadata["changed"].value == "True"
    assert metadata["source"].value == mirror

    layout = tmp_path / "layout"
    build_alpine_image(layout, "1.0", DEMO_PACKAGE_TUPLES)
    report = Trivy(binary=trivy_bin, cache_dir=cache).scan_image(str(layout), layout=True).report
    found = {
        v["VulnerabilityID"] for r in report["Results"] for v in r.get("Vulnerabilities") or []
    }
    assert found == {a.cve_id for a in DEMO_ADVISORIES}


def test_an_unreachable_mirror_fails_clearly_and_keeps_the_old_db(trivy_bin, trivy_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(trivy_cache, cache)
    # A DB past its NextUpdate and not downloaded within the hour: Trivy wants a new one.
    meta = json.loads((cache / "db" / "metadata.json").read_text())
    meta["NextUpdate"] = meta["DownloadedAt"] = "2020-01-01T00:00:00Z"
    (cache / "db" / "metadata.json").write_text(json.dumps(meta))
    resource = TrivyResource(
        binary=trivy_bin, cache_dir=str(cache), db_repository="127.0.0.1:9/nowhere:2"
    )
    before = (cache / "db" / "trivy.db").read_bytes()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [trivy_db], instance=instance, resources={"trivy": resource}, raise_on_error=False
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "trivy image exited with code 1" in failure.step_failure_data.error.to_string()
    assert (cache / "db" / "trivy.db").read_bytes() == before


def _due_cache(trivy_cache, tmp_path):
    """A copy of the test DB whose NextUpdate has passed: a refresh downloads a new one."""
    cache = tmp_path / "cache"
    shutil.copytree(trivy_cache, cache)
    meta = json.loads((cache / "db" / "metadata.json").read_text())
    meta["NextUpdate"] = meta["DownloadedAt"] = "2020-01-01T00:00:00Z"
    (cache / "db" / "metadata.json").write_text(json.dumps(meta))
    return cache


def test_a_refresh_publishes_a_new_generation_once_and_a_current_db_is_not_downloaded_again(
    trivy_bin, trivy_cache, registry, tmp_path
):
    source = tmp_path / "db-b"
    write_trivy_db(source, list(DEMO_ADVISORIES), updated_at=datetime(2026, 6, 1, tzinfo=UTC))
    mirror = push_db_artifact(source, registry, "mirror/trivy-db-refresh")
    cache = _due_cache(trivy_cache, tmp_path)
    resource = TrivyResource(binary=trivy_bin, cache_dir=str(cache), db_repository=mirror)
    with dg.instance_for_test() as instance:
        changed = []
        for _ in range(2):
            result = dg.materialize([trivy_db], instance=instance, resources={"trivy": resource})
            metadata = result.asset_materializations_for_node("scanning__trivy_db")[0].metadata
            changed.append(metadata["changed"].value)
            assert metadata["updated_at"].value == "2026-06-01T00:00:00Z"
    # The first downloaded; the second found it current (Trivy's NextUpdate not reached).
    assert changed == ["True", "False"]
    current = TrivyCache(cache).current()
    assert [p.name for p in (cache / "db-generations").iterdir()] == [current.id]
    assert not list((cache / "db-staging").iterdir())


def test_with_a_trivy_server_the_refresh_returns_once_the_server_holds_the_new_db(
    trivy_bin, trivy_cache, registry, tmp_path
):
    source = tmp_path / "db-c"
    write_trivy_db(source, list(DEMO_ADVISORIES), updated_at=datetime(2026, 7, 1, tzinfo=UTC))
    mirror = push_db_artifact(source, registry, "mirror/trivy-db-server")
    cache = _due_cache(trivy_cache, tmp_path)
    server = start_local(trivy_bin, cache, tmp_path / "logs")
    try:
        before = requests.get(f"{server.url}/version", timeout=5).json()["VulnerabilityDB"]
        resource = TrivyResource(
            binary=trivy_bin,
            cache_dir=str(cache),
            db_repository=mirror,
            server_url=server.url,
            server_token=server.token,
        )
        with dg.instance_for_test() as instance:
            result = dg.materialize([trivy_db], instance=instance, resources={"trivy": resource})
        metadata = result.asset_materializations_for_node("scanning__trivy_db")[0].metadata
        after = requests.get(f"{server.url}/version", timeout=5).json()["VulnerabilityDB"]
    finally:
        server.stop()
    assert before["UpdatedAt"] != "2026-07-01T00:00:00Z"
    assert metadata["server_db_updated_at"].value == "2026-07-01T00:00:00Z"
    assert after["UpdatedAt"] == "2026-07-01T00:00:00Z"
    assert metadata["server"].value == server.url
