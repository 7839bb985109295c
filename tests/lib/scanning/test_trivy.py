"""The Trivy wrapper against the real binary, with a vulnerability DB generated offline."""

import http.server
import json
import shutil
import stat
import threading
import time

import pytest

from gsv_pipelines.demo.oci_image import DEMO_PACKAGE_TUPLES, build_alpine_image
from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES
from gsv_pipelines.lib.core.processes import free_port
from gsv_pipelines.lib.scanning.trivy import Trivy, TrivyError


@pytest.fixture
def trivy(trivy_bin, trivy_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(trivy_cache, cache)
    return Trivy(binary=trivy_bin, cache_dir=cache, timeout_seconds=120)


def _found(report: dict) -> set[str]:
    return {
        v["VulnerabilityID"]
        for r in report.get("Results") or []
        for v in r.get("Vulnerabilities") or []
    }


def test_a_layout_scan_finds_the_generated_cves(trivy, tmp_path):
    layout = tmp_path / "layout"
    build_alpine_image(layout, "1.0", DEMO_PACKAGE_TUPLES)
    run = trivy.scan_image(str(layout), layout=True)
    assert _found(run.report) == {a.cve_id for a in DEMO_ADVISORIES}
    assert run.seconds > 0
    assert trivy.db_metadata()["Version"] == 2


def test_a_registry_scan_by_digest(trivy, registry, alpine_image):
    ref = f"{registry.host}/{alpine_image['repository']}@{alpine_image['digest']}"
    run = trivy.scan_image(ref, insecure_registry=True)
    assert _found(run.report) == {a.cve_id for a in DEMO_ADVISORIES}
    assert run.report["ArtifactName"] == ref


def test_no_db_no_scan(trivy_bin, tmp_path):
    empty = Trivy(binary=trivy_bin, cache_dir=tmp_path / "empty")
    with pytest.raises(TrivyError, match=r"no vulnerability DB in .*materialize scanning/trivy_db"):
        empty.scan_image("alpine:3.19")


def test_a_missing_binary_is_named(tmp_path):
    with pytest.raises(TrivyError, match="no trivy binary at '/nowhere/trivy': set TRIVY_BIN"):
        Trivy(binary="/nowhere/trivy", cache_dir=tmp_path).run(["--version"])


def test_a_failing_scan_reports_trivy_s_error(trivy, tmp_path):
    with pytest.raises(TrivyError, match=r"(?s)trivy image exited with code 1: .*no-such-layout"):
        trivy.scan_image(str(tmp_path / "no-such-layout"), layout=True)


def test_a_timeout_is_a_clear_error(trivy, tmp_path):
    layout = tmp_path / "layout"
    build_alpine_image(layout, "1.0", DEMO_PACKAGE_TUPLES)
    slow = Trivy(binary=trivy.binary, cache_dir=trivy.cache_dir, timeout_seconds=0.01)
    with pytest.raises(TrivyError, match=r"trivy image timed out after 0\.01 s"):
        slow.scan_image(str(layout), layout=True)


def _stand_in(tmp_path, stdout: str):
    """A stand-in for the trivy binary that prints `stdout` (a stand-in, not trivy)."""
    script = tmp_path / "trivy-stand-in"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{stdout}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_truncated_or_malformed_output_is_refused(trivy, tmp_path):
    report = json.dumps({"SchemaVersion": 2, "Results": [{"Target": "x"}]})
    for stdout, message in [
        (report[: len(report) // 2], "unreadable or truncated JSON"),
        ("[1, 2]", "JSON that is not a report object"),
    ]:
        broken = Trivy(binary=_stand_in(tmp_path, stdout), cache_dir=trivy.cache_dir)
        with pytest.raises(TrivyError, match=message):
            broken.scan_image("anything")


def test_config_scan_finds_a_misconfiguration(trivy, tmp_path):
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "Dockerfile").write_text("FROM alpine:3.19\nUSER root\n")
    run = trivy.scan_config(deploy)
    ids = {
        m["ID"] for r in run.report.get("Results") or [] for m in r.get("Misconfigurations") or []
    }
    assert "DS002" in ids  # the image runs as root


def _version_server(port: int, updated_at: str):
    """A stand-in for the server's /version (only the answer await_server_db reads)."""
    body = json.dumps({"VulnerabilityDB": {"UpdatedAt": updated_at}}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)


def test_waiting_for_the_server_s_db_outlasts_its_restart(tmp_path):
    # The supervisor stops the server and starts it on the new DB: between the two, connections
    # are refused. That is the switch being waited for, not a failure.
    port = free_port()
    client = Trivy(binary="trivy", cache_dir=tmp_path, server_url=f"http://127.0.0.1:{port}")
    with pytest.raises(TrivyError, match="did not answer"):
        client.server_db_metadata()
    servers = []

    def come_up():
        time.sleep(1.5)
        servers.append(_version_server(port, "2026-07-01T00:00:00Z"))
        servers[0].serve_forever(poll_interval=0.05)

    thread = threading.Thread(target=come_up, daemon=True)
    thread.start()
    try:
        held = client.await_server_db("2026-07-01T00:00:00Z", timeout_seconds=120)
    finally:
        while not servers:
            time.sleep(0.05)
        servers[0].shutdown()
        servers[0].server_close()
    assert held == {"UpdatedAt": "2026-07-01T00:00:00Z"}


def test_a_server_that_never_comes_back_is_named_when_the_wait_ends(tmp_path):
    port = free_port()
    client = Trivy(binary="trivy", cache_dir=tmp_path, server_url=f"http://127.0.0.1:{port}")
    with pytest.raises(TrivyError, match=f"127.0.0.1:{port} did not answer"):
        client.await_server_db("2026-07-01T00:00:00Z", timeout_seconds=1)
