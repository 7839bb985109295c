"""Delivery to a real HTTP endpoint on loopback playing Slack, Teams and the signed webhook:
signatures checked by an independent HMAC implementation (cryptography's), retries on 5xx and
timeouts, none on 4xx, dead letters and their replay, and no secret in anything sent or stored."""

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, hmac

from gsv_pipelines.lib.alerts import deliver
from gsv_pipelines.lib.alerts.deliver import Channel, Notifier, dead_letters, replay
from gsv_pipelines.lib.alerts.messages import FIRING, Alert
from gsv_pipelines.lib.alerts.policy import load_alerts_policy
from gsv_pipelines.lib.core.leaks import leak_search
from gsv_pipelines.lib.core.store import ArtefactStore
from tests.services.receiver import Receiver

SECRET = "whsec-test-4f1d9a"
SLACK_PATH = "/services/T0GSV/B0ALERTS/xoxb-not-a-real-token"
TEAMS_PATH = "/webhookb2/gsv-teams-token-9c1e"
HOOK_PATH = "/gsv/alerts"


def verify(secret: str, request) -> int:
    """An independent check of X-GSV-Signature (cryptography's HMAC, not the stdlib's): the
    signed timestamp, or an AssertionError."""
    timestamp = request.headers["X-GSV-Timestamp"]
    scheme, _, hexdigest = request.headers["X-GSV-Signature"].partition("=")
    assert scheme == "sha256"
    mac = hmac.HMAC(secret.encode(), hashes.SHA256())
    mac.update(timestamp.encode() + b"." + request.body)
    mac.verify(bytes.fromhex(hexdigest))  # raises InvalidSignature on any other body or key
    return int(timestamp)


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "routes:\n"
        "  - {name: all, severities: [error], channels: [slack, teams, webhook]}\n"
        "  - {name: usage, severities: [warning], domains: [usage], channels: [webhook]}\n"
        "delivery: {timeout_seconds: 0.5, retries: 2, backoff_seconds: 0.2, cooldown_seconds: 60}\n"
    )
    return load_alerts_policy(path)


@pytest.fixture
def store(tmp_path):
    return ArtefactStore(str(tmp_path / "store"))


def channels(receiver, only=("slack", "teams", "webhook")) -> dict[str, Channel]:
    every = {
        "slack": Channel("slack", receiver.url(SLACK_PATH)),
        "teams": Channel("teams", receiver.url(TEAMS_PATH)),
        "webhook": Channel("webhook", receiver.url(HOOK_PATH), SECRET),
    }
    return {name: every[name] for name in only}


def outcome_of(outcomes, channel: str):
    [outcome] = [o for o in outcomes if o.channel == channel]
    return outcome


def alert(summary: str = "1 fixable CRITICAL: CVE-2099-0001 in busybox", **overrides) -> Alert:
    values = {
        "incident": "abc123",
        "status": FIRING,
        "severity": "error",
        "domains": ("scanning",),
        "title": "no_fixable_critical failed: scanning/image_scan [sha256:0123]",
        "summary": summary,
        "since": "2026-05-01T02:00:00+00:00",
        "at": "2026-05-01T02:00:00+00:00",
        "subject": {"kind": "check", "asset": "scanning/image_scan", "partition": "sha256:0123"},
        "figures": {"fixable_critical": 1},
        "links": {"run": "http://127.0.0.1:3000/runs/r1"},
    }
    return Alert(**{**values, **overrides})


def test_each_channel_gets_its_format_once_and_the_webhook_is_signed(receiver, policy, store):
    notifier = Notifier(channels(receiver), policy, store)
    before = int(time.time())
    outcomes = notifier.notify(alert())
    assert [(o.channel, o.delivered, o.attempts) for o in outcomes] == [
        ("slack", True, 1),
        ("teams", True, 1),
        ("webhook", True, 1),
    ]
    [slack] = receiver.at(SLACK_PATH)
    assert slack.json()["text"].startswith("[ERROR] no_fixable_critical failed")
    assert any("CVE-2099-0001" in json.dumps(b) for b in slack.json()["blocks"])
    [teams] = receiver.at(TEAMS_PATH)
    card = teams.json()["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["actions"][0]["url"] == "http://127.0.0.1:3000/runs/r1"
    [hook] = receiver.at(HOOK_PATH)
    assert before <= verify(SECRET, hook) <= int(time.time())
    assert hook.json()["incident"] == "abc123" and hook.json()["version"] == 1
    assert len(hook.headers["X-GSV-Delivery"]) == 32
    # Neither chat channel gets the webhook's signature (it has no secret).
    assert "X-GSV-Signature" not in slack.headers and "X-GSV-Signature" not in teams.headers
    assert dead_letters(store) == []


def test_a_tampered_body_or_another_key_fails_the_independent_verification(receiver, policy, store):
    Notifier(channels(receiver, ["webhook"]), policy, store).notify(alert())
    [hook] = receiver.at(HOOK_PATH)
    forged = type(hook)(hook.path, hook.headers, hook.body.replace(b"CRITICAL", b"LOW"), 200)
    with pytest.raises(Exception, match="Signature"):
        verify(SECRET, forged)
    with pytest.raises(Exception, match="Signature"):
        verify("another-key", hook)


def test_a_5xx_is_retried_with_backoff_and_then_delivered(receiver, policy, store):
    receiver.answer(HOOK_PATH, 500, 503)
    outcome = outcome_of(
        Notifier(channels(receiver, ["webhook"]), policy, store).notify(alert()), "webhook"
    )
    assert (outcome.delivered, outcome.attempts, outcome.status) == (True, 3, 200)
    tries = receiver.at(HOOK_PATH)
    assert [t.status for t in tries] == [500, 503, 200]
    # The same message each time (one delivery id), signed each time.
    assert len({t.headers["X-GSV-Delivery"] for t in tries}) == 1
    assert all(verify(SECRET, t) for t in tries)
    assert len(receiver.at(HOOK_PATH, accepted_only=True)) == 1
    assert dead_letters(store) == []


def test_backoff_grows_with_jitter_from_the_first_retry(policy):
    retry = deliver._Backoff(total=3, backoff_factor=0.2)
    waits = []
    for _ in range(3):
        retry = retry.increment(method="POST", url="/", error=ConnectionError())
        waits.append(retry.get_backoff_time())
    for n, wait in enumerate(waits):
        assert 0.2 * 2**n <= wait <= 0.4 * 2**n
    samples = set()
    for _ in range(20):
        again = deliver._Backoff(total=3, backoff_factor=0.2).increment(
            method="POST", url="/", error=ConnectionError()
        )
        samples.add(again.get_backoff_time())
    assert len(samples) > 1  # jitter: not the same wait every time


def test_a_timeout_is_retried(receiver, policy, store):
    receiver.answer(SLACK_PATH, "stall")
    outcome = outcome_of(
        Notifier(channels(receiver, ["slack"]), policy, store).notify(alert()), "slack"
    )
    assert (outcome.delivered, outcome.attempts) == (True, 2)
    assert [t.status for t in receiver.at(SLACK_PATH)] == [0, 200]


def test_a_4xx_is_not_retried_and_becomes_a_dead_letter_without_the_url(receiver, policy, store):
    receiver.answer(SLACK_PATH, 400)
    outcome = outcome_of(
        Notifier(channels(receiver, ["slack"]), policy, store).notify(alert()), "slack"
    )
    assert (outcome.delivered, outcome.attempts, outcome.status) == (False, 1, 400)
    assert len(receiver.at(SLACK_PATH)) == 1
    [letter] = dead_letters(store)
    assert letter["channel"] == "slack" and letter["status"] == 400
    assert "not retried" in letter["reason"]
    assert letter["alert"]["summary"] == alert().summary
    assert outcome.dead_letter == letter["key"]
    stored = Path(store.root, letter["key"]).read_text()
    assert "xoxb" not in stored and "127.0.0.1:" not in letter["reason"]


def test_an_endpoint_that_keeps_failing_is_dead_lettered_then_cooled_down_then_replayed(
    receiver, policy, store
):
    receiver.answer(HOOK_PATH, 502, 502, 502)
    notifier = Notifier(channels(receiver, ["webhook"]), policy, store)
    first = outcome_of(notifier.notify(alert()), "webhook")
    assert (first.delivered, first.attempts) == (False, 3)
    assert first.reason == "HTTP 502 after 3 attempt(s)"
    # Within the cooldown the next alert is not even tried: it goes straight to a dead letter.
    second = outcome_of(notifier.notify(alert(incident="def456")), "webhook")
    assert second.attempts == 0 and "cooldown" in second.reason
    assert len(receiver.at(HOOK_PATH)) == 3
    letters = dead_letters(store)
    assert sorted(letter["alert"]["incident"] for letter in letters) == ["abc123", "def456"]

    # Replay (the endpoint answers again): both delivered, freshly signed, and removed.
    done = replay(Notifier(channels(receiver, ["webhook"]), policy, store))
    assert [o.delivered for _, o in done] == [True, True]
    delivered = receiver.at(HOOK_PATH, accepted_only=True)
    assert sorted(r.json()["incident"] for r in delivered) == ["abc123", "def456"]
    assert all(verify(SECRET, r) for r in delivered)
    assert dead_letters(store) == []


def test_a_replay_that_fails_again_keeps_the_letter_and_counts_it(receiver, policy, store):
    receiver.answer(TEAMS_PATH, 404, 404)
    notifier = Notifier(channels(receiver, ["teams"]), policy, store)
    notifier.notify(alert())
    [(_, outcome)] = replay(notifier)
    assert not outcome.delivered and outcome.status == 404
    [kept] = dead_letters(store)
    assert kept["replays"] == 1 and "not retried" in kept["last_reason"]
    # A channel that is no longer configured keeps its letters.
    [(_, unset)] = replay(Notifier({}, policy, store))
    assert unset.reason == "not configured now: kept" and len(dead_letters(store)) == 1


def test_unset_channels_and_unrouted_alerts_are_only_logged(receiver, policy, store, caplog):
    caplog.set_level("INFO")
    notifier = Notifier(channels(receiver, ["webhook"]), policy, store)
    outcomes = notifier.notify(alert())
    assert {o.channel: o.reason for o in outcomes if not o.delivered} == {
        "slack": "not configured: logged only",
        "teams": "not configured: logged only",
    }
    assert notifier.notify(alert(severity="warning", domains=("backups",))) == []
    assert "no route" in caplog.text
    assert len(receiver.at(HOOK_PATH)) == 1 and dead_letters(store) == []


def test_no_secret_reaches_a_payload_a_dead_letter_or_a_log(receiver, policy, store, caplog):
    caplog.set_level("DEBUG")
    every = channels(receiver)
    secrets = [SECRET, *(c.url for c in every.values()), SLACK_PATH, TEAMS_PATH]
    # A check description that quotes a URL and the key (the worst case): both are removed.
    leaky = f"posting to {every['slack'].url} failed with key {SECRET}"
    receiver.answer(TEAMS_PATH, 400)
    Notifier(every, policy, store).notify(alert(summary=leaky))
    bodies = b"".join(r.body for r in receiver.requests)
    assert b"[redacted]" in bodies
    assert not [s for s in secrets if s.encode() in bodies]
    assert leak_search(Path(store.root), secrets) == []
    assert not [s for s in secrets if s in caplog.text]
