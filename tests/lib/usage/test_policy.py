"""The usage alert policy: shipped defaults, overrides, and clear errors."""

import pytest

from gsv_pipelines.lib.usage.policy import UsagePolicy, UsagePolicyError, load_usage_policy


def test_the_shipped_policy_is_the_documented_one():
    assert load_usage_policy() == UsagePolicy(
        max_error_rate=0.05, min_calls=100, quota_alert_pct=100
    )


def test_a_policy_file_overrides_the_defaults(tmp_path):
    path = tmp_path / "usage.yaml"
    path.write_text("max_error_rate: 0.1\nmin_calls: 20\nquota_alert_pct: 120\n")
    assert load_usage_policy(path) == UsagePolicy(0.1, 20, 120)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_error_rate: 5\n", "max_error_rate must be in [0, 1), not 5"),
        ("min_calls: 0\n", "min_calls must be a positive integer"),
        ("quota_alert_pct: 90\n", "quota_alert_pct must be one of (80, 100, 120)"),
        ("threshold: 1\n", "unknown key(s) threshold"),
        ("- a\n", "must be a mapping"),
    ],
)
def test_a_bad_policy_names_the_problem(tmp_path, text, message):
    path = tmp_path / "usage.yaml"
    path.write_text(text)
    with pytest.raises(UsagePolicyError) as error:
        load_usage_policy(path)
    assert message in str(error.value) and str(path) in str(error.value)
