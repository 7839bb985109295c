"""The alert sensors over real runs: one message per incident and per recovery, per partition,
on every channel (a loopback receiver playing Slack, Teams and the signed webhook), through a
restart of the sensor's process; WARN checks routed as warnings; undeliverable alerts
dead-lettered."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from gsv_pipelines.lib.alerts.deliver import dead_letters
from gsv_pipelines.lib.core.store import ArtefactStore
from tests.defs.alerts import flows
from tests.lib.alerts.test_deliver import verify
from tests.services.receiver import Receiver

ROOT = Path(__file__).resolve().parents[3]
SECRET = "whsec-sensor-test-77"
PATHS = {
    "slack": "/services/T1/B1/slacktoken",
    "teams": "/webhookb2/teamstoken",
    "webhook": "/hook",
}


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


@pytest.fixture
def world(tmp_path, monkeypatch, receiver):
    """A fresh instance (DAGSTER_HOME), store, policy and outcome file; the sensors primed."""
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    policy = tmp_path / "alerts.yaml"
    policy.write_text(
        "routes:\n"
        "  - {name: errors, severities: [error], channels: [slack, teams, webhook]}\n"
        "  - {name: usage, severities: [warning], domains: [usage], channels: [webhook]}\n"
        "delivery: {timeout_seconds: 2, retries: 1, backoff_seconds: 0.05}\n"
    )
    env = {
        "DAGSTER_HOME": str(home),
        "GSV_BACKUP_URL": str(tmp_path / "store"),
        "GSV_ALERTS_POLICY": str(policy),
        "GSV_SLACK_WEBHOOK_URL": receiver.url(PATHS["slack"]),
        "GSV_TEAMS_WEBHOOK_URL": receiver.url(PATHS["teams"]),
        "GSV_ALERT_WEBHOOK_URL": receiver.url(PATHS["webhook"]),
        "GSV_ALERT_WEBHOOK_SECRET": SECRET,
        flows.STATE: str(tmp_path / "outcomes.json"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    state = World(flows.build_defs(), tmp_path / "outcomes.json", receiver)
    state.set()
    with dg.DagsterInstance.get() as instance:
        state.instance = instance
        for name in ("run_failure_alert_sensor", "check_failure_alert_sensor"):
            state.cursors[name] = flows.tick(state.defs, name, None).cursor
        yield state


class World:
    def __init__(self, defs, outcomes: Path, receiver: Receiver):
        self.defs, self.outcomes, self.receiver = defs, outcomes, receiver
        self.cursors: dict[str, str] = {}
        self.instance = None

    def set(self, **failing: list[str]) -> None:
        self.outcomes.write_text(json.dumps(failing))

    def run(self, job: str, partition: str) -> bool:
        return (
            self.defs.resolve_job_def(job)
            .execute_in_process(
                instance=self.instance, partition_key=partition, raise_on_error=False
            )
            .success
        )

    def tick(self, sensor: str) -> str:
        result = flows.tick(self.defs, sensor, self.cursors[sensor])
        self.cursors[sensor] = result.cursor
        return result.skip_reason.skip_message

    def tick_in_new_process(self, sensor: str) -> str:
        """One tick in a process of its own: nothing carried over but the instance and store."""
        out = subprocess.run(
            [sys.executable, "-m", "tests.defs.alerts.flows", sensor, self.cursors[sensor]],
            cwd=ROOT,
            env=os.environ,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        self.cursors[sensor] = result["cursor"]
        return result["skip_reason"]

    def hooks(self) -> list[dict]:
        """What the webhook received, each verified by the independent implementation."""
        received = self.receiver.at(PATHS["webhook"], accepted_only=True)
        for request in received:
            verify(SECRET, request)
        return [r.json() for r in received]


def test_a_failing_check_alerts_once_for_its_partition_and_once_when_it_passes(world):
    sensor = "check_failure_alert_sensor"
    world.set(critical=["sha256:aaa"])
    assert world.run("probe_scan_job", "sha256:aaa") and world.run("probe_scan_job", "sha256:bbb")
    assert (
        "1 alert(s): firing: probe_critical failed: scanning/probe_scan [sha256:aaa]"
        in world.tick(sensor)
    )
    [firing] = world.hooks()
    assert firing["status"] == "firing" and firing["severity"] == "error"
    assert firing["subject"] == {
        "kind": "check",
        "asset": "scanning/probe_scan",
        "check": "probe_critical",
        "partition": "sha256:aaa",
    }
    assert firing["summary"] == "1 fixable CRITICAL: CVE-2099-0001 (busybox)"
    assert firing["figures"] == {"fixable_critical": 1}  # markdown stays in the UI
    assert firing["domains"] == ["scanning"]
    assert firing["links"]["partition"] == (
        "http://dagster.test/assets/scanning/probe_scan?view=partitions&partition=sha256%3Aaaa"
    )
    assert firing["links"]["check"].endswith("?view=checks&checkDetail=probe_critical")
    assert firing["links"]["run"].startswith("http://dagster.test/runs/")
    for channel in ("slack", "teams"):
        [message] = world.receiver.at(PATHS[channel])
        assert "scanning/probe_scan [sha256:aaa]" in message.body.decode()

    # Still failing, twice, the second time read by a new process: no message.
    assert world.run("probe_scan_job", "sha256:aaa")
    assert "0 alert(s)" in world.tick(sensor)
    assert world.run("probe_scan_job", "sha256:aaa")
    assert "0 alert(s)" in world.tick_in_new_process(sensor)
    assert len(world.hooks()) == 1

    # Fixed: the recovery, read by yet another process, once, on every channel.
    world.set()
    assert world.run("probe_scan_job", "sha256:aaa")
    assert "resolved: probe_critical recovered" in world.tick_in_new_process(sensor)
    assert "0 alert(s)" in world.tick(sensor)
    _, resolved = world.hooks()
    assert resolved["status"] == "resolved" and resolved["incident"] == firing["incident"]
    assert resolved["since"] == firing["since"]
    assert "3 failure(s)" in resolved["summary"]
    for channel in ("slack", "teams"):
        assert len(world.receiver.at(PATHS[channel])) == 2


def test_a_failing_run_alerts_once_per_job_and_partition_and_recovers(world):
    sensor = "run_failure_alert_sensor"
    world.set(**{"raise": ["sha256:bbb"]})
    assert not world.run("probe_scan_job", "sha256:bbb")
    assert world.run("probe_scan_job", "sha256:aaa")
    assert "1 alert(s)" in world.tick(sensor)
    [firing] = world.hooks()
    assert firing["title"] == "run failed: probe_scan_job [sha256:bbb]"
    assert firing["subject"] == {"kind": "run", "job": "probe_scan_job", "partition": "sha256:bbb"}
    assert "1 step(s) failed: scanning__probe_scan" in firing["summary"]
    assert "the scanner crashed" in firing["summary"]
    assert firing["figures"]["failed_steps"] == 1 and firing["domains"] == ["scanning"]

    assert not world.run("probe_scan_job", "sha256:bbb")
    assert "0 alert(s)" in world.tick_in_new_process(sensor)
    world.set()
    assert world.run("probe_scan_job", "sha256:bbb")
    assert "1 alert(s): resolved: run recovered: probe_scan_job [sha256:bbb]" in world.tick(sensor)
    assert [h["status"] for h in world.hooks()] == ["firing", "resolved"]
    # The check sensor read the same runs: a crashed scan evaluated no check, so no check alert.
    assert "0 alert(s)" in world.tick("check_failure_alert_sensor")


def test_a_warn_check_is_a_warning_for_the_runs_partition_routed_by_domain(world):
    world.set(error_rate=["2026-01-05"])
    assert world.run("probe_usage_job", "2026-01-05")
    assert "1 alert(s)" in world.tick("check_failure_alert_sensor")
    [warning] = world.hooks()
    assert warning["severity"] == "warning" and warning["subject"]["partition"] == "2026-01-05"
    assert warning["title"] == "probe_error_rate failed: usage/probe_usage [2026-01-05]"
    # The policy routes usage warnings to the webhook only.
    assert world.receiver.at(PATHS["slack"]) == [] and world.receiver.at(PATHS["teams"]) == []


def test_an_alert_that_cannot_be_delivered_is_a_dead_letter_and_is_not_sent_again(world):
    world.receiver.answer(PATHS["teams"], 400)
    world.set(critical=["sha256:bbb"])
    assert world.run("probe_scan_job", "sha256:bbb")
    world.tick("check_failure_alert_sensor")
    [letter] = dead_letters(ArtefactStore(os.environ["GSV_BACKUP_URL"]))
    assert letter["channel"] == "teams" and letter["status"] == 400
    assert letter["alert"]["subject"]["partition"] == "sha256:bbb"
    assert "teamstoken" not in json.dumps(letter)
    # The incident is open (Slack and the webhook have it): the next failure sends nothing.
    assert world.run("probe_scan_job", "sha256:bbb")
    world.tick("check_failure_alert_sensor")
    assert len(world.receiver.at(PATHS["teams"])) == 1 and len(world.hooks()) == 1


def test_a_fresh_sensor_starts_after_what_already_ended(world):
    world.set(critical=["sha256:aaa"])
    assert world.run("probe_scan_job", "sha256:aaa")
    first = flows.tick(world.defs, "check_failure_alert_sensor", None)
    assert first.skip_reason.skip_message.startswith("starting after run-end event")
    assert world.receiver.requests == []
