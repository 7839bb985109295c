"""The alerts policy: the shipped routes, overrides, and clear errors."""

import pytest

from gsv_pipelines.lib.alerts.policy import (
    AlertsPolicyError,
    Delivery,
    alert_severity,
    load_alerts_policy,
)


def test_the_shipped_policy_routes_errors_everywhere_and_usage_warnings_to_chat_and_webhook():
    policy = load_alerts_policy()
    assert policy.recoveries is True
    assert policy.delivery == Delivery(timeout_seconds=5, retries=2, backoff_seconds=0.5)
    assert policy.channels_for("error", ("backups",)) == ("slack", "teams", "webhook")
    assert policy.channels_for("error", ()) == ("slack", "teams", "webhook")
    assert policy.channels_for("warning", ("usage",)) == ("slack", "webhook")
    assert policy.channels_for("warning", ("scanning",)) == ()


def test_check_severities_map_to_alert_severities():
    assert alert_severity("ERROR") == "error"
    assert alert_severity("WARN") == "warning"


def test_routes_combine_and_domains_narrow(tmp_path):
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "routes:\n"
        "  - {name: scans, severities: [error], domains: [scanning], channels: [webhook]}\n"
        "  - {name: all, severities: [error, warning], channels: [teams]}\n"
        "recoveries: false\n"
        "delivery: {timeout_seconds: 0.5, retries: 0}\n"
    )
    policy = load_alerts_policy(path)
    assert policy.channels_for("error", ("scanning", "backups")) == ("teams", "webhook")
    assert policy.channels_for("error", ("backups",)) == ("teams",)
    assert policy.channels_for("warning", ()) == ("teams",)
    assert policy.recoveries is False
    assert policy.delivery == Delivery(timeout_seconds=0.5, retries=0)
    assert policy.source == str(path)


def test_no_routes_means_everything_is_only_logged(tmp_path):
    path = tmp_path / "alerts.yaml"
    path.write_text("recoveries: true\n")
    assert load_alerts_policy(path).channels_for("error", ("backups",)) == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routes: [{name: a, severities: [fatal], channels: [slack]}]\n", "unknown fatal"),
        ("routes: [{name: a, severities: [error], channels: [email]}]\n", "unknown email"),
        (
            "routes: [{name: a, severities: [error], domains: [billing], channels: [slack]}]\n",
            "unknown billing",
        ),
        ("routes: [{severities: [error], channels: [slack]}]\n", "name must be"),
        ("routes: [{name: a, severities: [], channels: [slack]}]\n", "non-empty list"),
        ("delivery: {retries: -1}\n", "retries must be a non-negative integer"),
        ("delivery: {timeout_seconds: 0}\n", "timeout_seconds must be a positive number"),
        ("delivery: {attempts: 3}\n", "unknown key(s) attempts"),
        ("recoveries: sometimes\n", "recoveries must be true or false"),
        ("channels: []\n", "unknown key(s) channels"),
        ("- a\n", "must be a mapping"),
    ],
)
def test_a_bad_policy_names_the_problem(tmp_path, text, message):
    path = tmp_path / "alerts.yaml"
    path.write_text(text)
    with pytest.raises(AlertsPolicyError) as error:
        load_alerts_policy(path)
    assert message in str(error.value) and str(path) in str(error.value)
