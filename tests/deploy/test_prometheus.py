"""deploy/prometheus: the rules are valid and unit-tested with promtool (every rule firing and not),
the PrometheusRule holds the same rules, each rule names its exporter; and a real Prometheus,
scraping the real exporter after a real backup run, fires BackupStale through a real Alertmanager
to a loopback receiver."""

import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml

from gsv_pipelines.lib.core.processes import ManagedProcess, free_port
from tests.conftest import _start
from tests.services.prometheus import PROMTOOL, binary, start_alertmanager, start_prometheus
from tests.services.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "rules_test.yaml"
OPERATOR_RULE = ROOT / "deploy" / "prometheus" / "prometheusrule.yaml"
PIPELINE_RULES = {
    "BackupStale",
    "DRDrillFailed",
    "RotationOverdue",
    "CriticalVulnerabilityDeployed",
    "PipelineRunFailures",
}
PLATFORM_RULES = {
    "AgentRegistryDown",
    "HighErrorRate",
    "DatabaseConnectionExhausted",
    "CertificateExpiringSoon",
    "QuotaExceeded",
    "WebhookProcessingFailures",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    return _start("promtool", lambda: binary(PROMTOOL))


def rules(path: Path = RULES) -> dict[str, dict]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_the_rules_are_valid(promtool):
    out = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout
    assert set(rules()) >= PIPELINE_RULES | PLATFORM_RULES


def test_every_rule_passes_its_unit_tests(promtool):
    out = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_rule_is_tested_firing_and_not_firing():
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert {name: {True, False} for name in rules()} == cases


def test_the_prometheusrule_holds_the_same_rules():
    operator = yaml.safe_load(OPERATOR_RULE.read_text())
    assert (operator["apiVersion"], operator["kind"]) == (
        "monitoring.coreos.com/v1",
        "PrometheusRule",
    )
    assert operator["metadata"]["labels"]["app.kubernetes.io/name"] == "gsv-pipelines"
    assert operator["spec"] == yaml.safe_load(RULES.read_text())


def test_every_rule_names_the_exporter_it_needs():
    lines = RULES.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("- alert:"):
            comments = []
            for above in reversed(lines[:index]):
                if not above.strip().startswith("#"):
                    break
                comments.append(above)
            assert any("Exporter:" in c for c in comments), f"no exporter named for {line.strip()}"


def _firing(prometheus: str) -> list[dict]:
    alerts = requests.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in alerts if a["state"] == "firing"]


def _wait(what: str, ready, attempts: int = 240):
    """Poll `ready` (twice a second) until it returns something; fail saying what never came."""
    for _ in range(attempts):
        found = ready()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} never happened")


def test_a_real_prometheus_fires_backupstale_from_the_exporter_through_alertmanager(
    tmp_path, monkeypatch
):
    # A demo-like run: the real platform_db_backup_job on a SQLite platform database, under a
    # policy whose RPO (under a second) the backup outlives at once.
    database = tmp_path / "platform.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table tenants (id integer primary key, name text)")
        connection.execute("insert into tenants values (1, 'acme')")
    policy = tmp_path / "backups.yaml"
    policy.write_text("platform_db: {rpo_hours: 0.0002}\n")
    home = tmp_path / "dagster"
    home.mkdir()
    env = {
        "GSV_DATA_DIR": str(tmp_path / "data"),
        "GSV_PLATFORM_DB_URL": f"sqlite:///{database}",
        "GSV_BACKUP_URL": str(tmp_path / "store"),
        "GSV_BACKUP_POLICY": str(policy),
        "DAGSTER_HOME": str(home),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from gsv_pipelines.definitions import defs as load_defs

    today = datetime.now(UTC).strftime("%Y-%m-%d")
    with dg.DagsterInstance.get() as instance:
        result = (
            load_defs()
            .resolve_job_def("platform_db_backup_job")
            .execute_in_process(instance=instance, partition_key=today, raise_on_error=False)
        )
    assert result.get_asset_materialization_events(), "the backup was not made"

    port = free_port()
    exporter = ManagedProcess(
        "gsv metrics",
        [sys.executable, "-m", "gsv_pipelines.cli", "metrics", "--port", str(port)],
        tmp_path / "exporter.log",
        env={**os.environ, **env},
        cwd=ROOT,
    ).start()
    with Receiver() as receiver:
        alertmanager = _start(
            "alertmanager",
            lambda: start_alertmanager(tmp_path / "am", receiver.url("/alertmanager")),
        )
        prometheus = _start(
            "prometheus",
            lambda: start_prometheus(
                tmp_path / "prom", [f"127.0.0.1:{port}"], [RULES], alertmanager.url
            ),
        )
        try:
            exporter.wait_ready(
                lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).ok, timeout=120
            )
            metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert (
                'gsv_backup_last_success_timestamp_seconds{kind="platform_db",target="platform"}'
                in metrics
            )
            assert 'gsv_backup_rpo_seconds{kind="platform_db",target="platform"} 0.72' in metrics

            stale = _wait(
                "BackupStale firing in Prometheus",
                lambda: [
                    a for a in _firing(prometheus.url) if a["labels"]["alertname"] == "BackupStale"
                ],
            )
            assert (
                stale[0]["labels"] | {"kind": "platform_db", "target": "platform"}
                == stale[0]["labels"]
            )
            assert stale[0]["labels"]["severity"] == "critical"
            # No other pipeline rule fires on this data.
            assert {a["labels"]["alertname"] for a in _firing(prometheus.url)} == {"BackupStale"}

            delivered = _wait(
                "Alertmanager's notification at the receiver",
                lambda: [r.json() for r in receiver.at("/alertmanager", accepted_only=True)],
            )
            [alert] = [
                a
                for n in delivered
                for a in n["alerts"]
                if a["labels"]["alertname"] == "BackupStale"
            ]
            assert alert["status"] == "firing" and alert["labels"]["target"] == "platform"
            assert "older than its RPO" in alert["annotations"]["summary"]
        finally:
            prometheus.stop()
            alertmanager.stop()
            exporter.stop()
