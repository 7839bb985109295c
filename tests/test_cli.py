"""`gsv demo` and `gsv dev` from the outside, as `make demo` and `make dev` run them."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import requests

from gsv_pipelines.demo.data import DEMO_COLLECTIONS, DEMO_SECRETS
from gsv_pipelines.lib.core.processes import ManagedProcess, free_port, port_open
from tests.services.webserver import ROOT, check_partitions, webserver

GSV = [sys.executable, "-m", "gsv_pipelines.cli"]


# The tests' own partition start (conftest.py) is left out: `gsv` chooses the install day.
LEFT_OUT = {"DAGSTER_HOME", "GSV_PARTITIONS_START", "GSV_USAGE_PARTITIONS_START"}
RUNS = """
query ($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results {
  jobName tags { key value } repositoryOrigin { repositoryLocationName repositoryName }
} } } }
"""


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LEFT_OUT}
    return {**env, "GSV_DATA_DIR": str(tmp_path / "data")}


@contextlib.contextmanager
def _instance(home: Path):
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        os.environ["DAGSTER_HOME"] = saved or ""


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
    # the Vault values, the fake token planted in the demo image, the alert channels' key,
    # token and 3 URLs (in the instance, the alerts received, the store's incidents), and the
    # Trivy server's token
    assert summary["leak_search"] == {"values": 16, "found": []}
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
    # The planted CVE's alert reached the demo's receiver, signed, with what and where.
    alerts = summary["alerts"]
    cve = alerts["planted_cve_alert"]
    assert cve["subject"] == {
        "kind": "check",
        "asset": "scanning/image_scan",
        "check": "no_fixable_critical",
        "partition": runtime,
    }
    assert "CVE-2099-0001" in cve["summary"] and cve["severity"] == "error"
    assert cve["links"]["run"].startswith("http://127.0.0.1:3000/runs/")
    assert alerts["signatures_verified"] is True
    assert f"no_embedded_secrets failed: scanning/image_scan [{runtime}]" in alerts["webhook"]
    # Errors go to the three channels; usage's WARN checks (HighErrorRate, QuotaExceeded) are
    # warnings, to Slack and the webhook only (the shipped alerts policy).
    assert alerts["received"]["teams"] == sum("usage/" not in title for title in alerts["webhook"])
    assert alerts["received"]["slack"] == alerts["received"]["webhook"] == len(alerts["webhook"])
    assert any(t.startswith("quota_exceeded failed: usage/quota_status") for t in alerts["webhook"])
    assert "The planted critical CVE's alert, as the webhook received it" in result.stdout
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
    # Partitions start on the install day; usage's on the first day the seed wrote.
    today = datetime.now(UTC).date()
    assert summary["services"]["partitions"] == {
        "GSV_PARTITIONS_START": today.isoformat(),
        "GSV_USAGE_PARTITIONS_START": days[0],
    }
    # Every run is a named job's, tagged as the demo's; the inventory shows the rotated versions.
    assert {a["job"] for a in summary["assets"]} >= {"qdrant_backup_job", "usage_job"}
    home = Path(summary["dagster_home"])
    with _instance(home) as instance:
        inventory = instance.get_latest_materialization_event(
            dg.AssetKey(["rotation", "secret_inventory"])
        )
        versions = inventory.asset_materialization.metadata["versions"].value
    assert set(versions.values()) == {2}

    # What the UI reads (GraphQL of dagster-webserver over the demo's instance, as `make dev`).
    env = {**_env(tmp_path), **summary["services"]["partitions"]}
    with webserver(home, ["-w", str(ROOT / "workspace.yaml")], tmp_path / "ui.log", env) as ui:
        scans = check_partitions(ui, ["scanning", "image_scan"])
        backups = check_partitions(ui, ["backups", "qdrant_backup"])
        usage = check_partitions(ui, ["usage", "usage_events"])
        demo_runs = ui(RUNS, filter={"tags": [{"key": "gsv/demo", "value": "true"}]})
        job_page = ui(
            RUNS,
            filter={
                "pipelineName": "qdrant_backup_job",
                "tags": [{"key": ".dagster/repository", "value": "__repository__@gsv_pipelines"}],
            },
        )
    # The failing demo image's partition shows its failed gates, the clean one's passed gates.
    assert scans == {
        name: {"succeeded": [gateway], "failed": [runtime]}
        for name in ("no_fixable_critical", "no_embedded_secrets")
    }
    backed_up = [f"{today}|{name}" for name in sorted(DEMO_COLLECTIONS)]
    assert backups == {
        name: {"succeeded": backed_up} for name in ("backup_verified", "backup_fresh")
    }
    assert usage == {"events_reconciled": {"succeeded": [f"{days[0]}..{days[-1]}"]}}
    runs = demo_runs["runsOrError"]["results"]
    assert len(runs) == len(summary["runs"])
    assert all(run["repositoryOrigin"]["repositoryLocationName"] == "gsv_pipelines" for run in runs)
    assert "__ASSET_JOB" not in {run["jobName"] for run in runs}
    assert len(job_page["runsOrError"]["results"]) == len(DEMO_COLLECTIONS)


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


def test_alerts_list_and_replay_send_the_dead_letters_again(tmp_path):
    from gsv_pipelines.lib.alerts.deliver import Channel, Notifier, dead_letters
    from gsv_pipelines.lib.alerts.policy import load_alerts_policy
    from gsv_pipelines.lib.core.store import ArtefactStore
    from tests.lib.alerts.test_deliver import SECRET, alert, verify
    from tests.services.receiver import Receiver

    store = ArtefactStore(str(tmp_path / "store"))
    with Receiver() as receiver:
        url = receiver.url("/hook/token-123")
        receiver.answer("/hook/token-123", 400)
        Notifier({"webhook": Channel("webhook", url, SECRET)}, load_alerts_policy(), store).notify(
            alert()
        )
        [letter] = dead_letters(store)
        env = {
            **_env(tmp_path),
            "GSV_BACKUP_URL": store.root,
            "GSV_ALERT_WEBHOOK_URL": url,
            "GSV_ALERT_WEBHOOK_SECRET": SECRET,
        }
        listed = subprocess.run([*GSV, "alerts", "list"], env=env, capture_output=True, text=True)
        assert listed.returncode == 0, listed.stderr
        assert (
            f"dead letter {letter['id']} (webhook, HTTP 400: refused, not retried)" in listed.stdout
        )
        replayed = subprocess.run(
            [*GSV, "alerts", "replay"], env=env, capture_output=True, text=True
        )
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "replayed 1 dead letter(s), 1 delivered" in replayed.stdout
        [first, second] = receiver.at("/hook/token-123")
        assert (first.status, second.status) == (400, 200) and verify(SECRET, second)
        assert second.json()["incident"] == letter["alert"]["incident"]
    assert dead_letters(store) == []
    assert "token-123" not in listed.stdout + replayed.stdout + listed.stderr + replayed.stderr


def test_ctrl_c_under_dev_stops_everything_without_a_traceback(tmp_path):
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
        # Ctrl-C under `make dev` reaches gsv more than once (the terminal, and `uv run`
        # passing it on), the second while it waits for dagster dev to stop.
        dev.proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        dev.proc.send_signal(signal.SIGINT)
        code = dev.proc.wait(timeout=120)
    finally:
        dev.stop(timeout=60)
    log = dev.log_path.read_text()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert "stopped OpenBao" in log
    assert not port_open(port)
