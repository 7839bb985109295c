"""`gsv demo` and `gsv dev` from the outside, as `make demo` and `make dev` run them."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import requests

from gsv_pipelines.lib.demo_data import DEMO_COLLECTIONS, DEMO_SECRETS
from gsv_pipelines.lib.processes import ManagedProcess, free_port, port_open

GSV = [sys.executable, "-m", "gsv_pipelines.cli"]


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return {**env, "GSV_DATA_DIR": str(tmp_path / "data")}


def test_demo_runs_on_embedded_defaults_and_stops_what_it_started(tmp_path):
    result = subprocess.run(
        [*GSV, "demo", "--scale", "0.1"], env=_env(tmp_path), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "data" / "demo_summary.json").read_text())
    assert summary["seed"]["qdrant"] == {
        name: max(1, int(count * 0.1)) for name, count in DEMO_COLLECTIONS.items()
    }
    assert summary["seed"]["vault"] == dict.fromkeys(DEMO_SECRETS, "created")
    assert summary["services"]["vault"]["server"] == "OpenBao on raft storage (started by gsv)"
    assert summary["dagster_home"] == str(tmp_path / "data" / "dagster")
    assert summary["success"] is True
    assert summary["seed"]["platform_db"]["tenants"] == 6
    backed_up = {(a["asset"], (a["partition"] or "").split("|")[0]) for a in summary["assets"]}
    assert {name for asset, name in backed_up if asset == "backups/qdrant_backup"} == set(
        DEMO_COLLECTIONS
    )
    assert ("backups/platform_db_backup", datetime.now(UTC).strftime("%Y-%m-%d")) in backed_up
    for row in summary["assets"]:
        assert row["status"] == "materialized"
        if row["asset"].startswith("backups/"):
            assert row["checks"] == {"backup_verified": True, "backup_fresh": True}
    assert any(a["asset"] == "backups/vault_snapshot" for a in summary["assets"])
    [db] = [a for a in summary["assets"] if a["asset"] == "scanning/trivy_db"]
    assert db["metadata"]["origin"].startswith("demo DB generated offline by gsv")
    rotations = [a for a in summary["assets"] if a["asset"] == "rotation/rotated_secret"]
    assert {a["partition"] for a in rotations} == {
        "webhook-hmac",
        "api-signing",
        "qdrant-api-key",
        "keycloak-client",
    }
    assert all(a["metadata"]["action"] == "rotated" for a in rotations)
    # 5 seeded values, and a new one for each of the 4 rotated: none in anything the runs wrote.
    # the Vault values, the fake token planted in the demo image, the Trivy server's token
    assert summary["leak_search"] == {"values": 11, "found": []}
    scans = {a["partition"]: a for a in summary["assets"] if a["asset"] == "scanning/image_scan"}
    runtime = summary["seed"]["images"]["agents/agent-runtime"]["digest"]
    gateway = summary["seed"]["images"]["platform/web-gateway"]["digest"]
    assert set(scans) == {runtime, gateway}
    # Both through the Trivy server the demo started.
    trivy = summary["services"]["trivy"]
    assert trivy["started"] is True
    assert {s["metadata"]["trivy_server"] for s in scans.values()} == {trivy["server"]}
    assert scans[runtime]["metadata"]["fixable_critical"] == 1
    assert scans[runtime]["metadata"]["secrets"] == 1
    assert scans[runtime]["checks"] == {"no_fixable_critical": False, "no_embedded_secrets": False}
    assert scans[gateway]["checks"] == {"no_fixable_critical": True, "no_embedded_secrets": True}
    assert summary["expected_gate_failures"] == [f"scanning/image_scan [{runtime}]"]
    assert summary["runs_all_succeeded"] is False and summary["problems"] == []
    [risk] = [a for a in summary["assets"] if a["asset"] == "scanning/image_risk_report"]
    assert (risk["metadata"]["digests"], risk["metadata"]["failing"]) == (2, 1)
    assert "# Image risk report" in result.stdout and "risk report: " in result.stdout
    [drill] = [a for a in summary["assets"] if a["asset"] == "drills/dr_drill"]
    assert drill["checks"] == {
        "rto_within_target": True,
        "rpo_within_target": True,
        "drill_verified": True,
    }
    assert drill["metadata"]["targets"] == 4 and drill["metadata"]["targets_failed"] == 0
    assert "DR drill qdrant/agent_memory_support_bot: RTO " in result.stdout
    assert "DR drill report (passed): " in result.stdout
    days = summary["seed"]["usage"]["partitions"]
    assert len(days) == 7 and summary["seed"]["usage"]["duplicate_deliveries"] > 0
    billed = [a for a in summary["assets"] if a["asset"] == "usage/billing"]
    assert [a["partition"] for a in billed] == days  # every seeded day, oldest first
    assert all(a["status"] == "materialized" for a in billed)
    assert f"Usage on {days[-1]}" in result.stdout
    assert "summary written to" in result.stdout and "make dev" in result.stdout
    vault_port = int(summary["services"]["vault"]["address"].rsplit(":", 1)[1])
    assert not port_open(vault_port), "the OpenBao dev server outlived the demo"
    trivy_port = int(trivy["server"].rsplit(":", 1)[1])
    assert not port_open(trivy_port), "the Trivy server outlived the demo"
    # Secret values are generated by the demo: none may reach its output or summary.
    assert "token" not in json.dumps(summary["services"]).lower()


def test_dev_serves_the_ui_on_loopback_and_stops_cleanly(tmp_path):
    port = free_port()
    dev = ManagedProcess(
        "gsv dev", [*GSV, "dev", "--port", str(port), "--scale", "0.05"],
        tmp_path / "dev.log", env=_env(tmp_path),
    ).start()  # fmt: skip
    try:
        dev.wait_ready(
            lambda: requests.get(f"http://127.0.0.1:{port}/server_info", timeout=1).ok,
            timeout=180,
        )
        info = requests.get(f"http://127.0.0.1:{port}/server_info", timeout=5).json()
        assert info["dagster_version"] == "1.13.27"
    finally:
        dev.stop(timeout=60)
    assert not port_open(port)
    log = dev.log_path.read_text()
    assert "stopped OpenBao" in log, log[-2000:]
    assert "stopped the Trivy server" in log, log[-2000:]
