from datetime import date

import pandas as pd
import pytest

from gsv_pipelines.lib.scanning.policy import (
    ScanPolicyError,
    load_scan_policy,
    secret_verdict,
    vulnerability_verdict,
)

REF = "registry.gsv.example/agents/runtime@sha256:aa"
DIGEST = "sha256:aa"
TODAY = date(2026, 11, 27)


def _policy(tmp_path, text: str):
    path = tmp_path / "scanning.yaml"
    path.write_text(text)
    return load_scan_policy(path)


def _vulns() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "vulnerability_id": ["CVE-1", "CVE-2", "CVE-3", "CVE-4"],
            "pkg_name": ["openssl", "openssl", "busybox", "zlib"],
            "severity": ["CRITICAL", "HIGH", "CRITICAL", "CRITICAL"],
            "fixable": [True, True, True, False],
        }
    )


def test_the_shipped_policy_loads_with_its_documented_defaults():
    policy = load_scan_policy()
    assert (policy.fail_on, policy.ignore_unfixed, policy.secrets, policy.ignores) == (
        "CRITICAL",
        True,
        True,
        (),
    )


def test_fixable_criticals_fail_and_unfixed_ones_do_not(tmp_path):
    verdict = vulnerability_verdict(load_scan_policy(), _vulns(), REF, DIGEST, TODAY)
    assert not verdict.passed
    assert sorted(verdict.failing["id"]) == ["CVE-1", "CVE-3"]
    strict = _policy(tmp_path, "fail_on: HIGH\nignore_unfixed: false\n")
    verdict = vulnerability_verdict(strict, _vulns(), REF, DIGEST, TODAY)
    assert sorted(verdict.failing["id"]) == ["CVE-1", "CVE-2", "CVE-3", "CVE-4"]


def test_an_ignore_holds_until_its_expiry_and_then_fails_the_check(tmp_path):
    policy = _policy(
        tmp_path,
        "ignores:\n"
        "  - {id: CVE-1, reason: no exploit path, expires: 2026-11-28}\n"
        "  - {id: CVE-3, reason: patched upstream soon, expires: 2026-12-31}\n",
    )
    before = vulnerability_verdict(policy, _vulns(), REF, DIGEST, date(2026, 11, 27))
    assert before.passed and sorted(before.ignored["id"]) == ["CVE-1", "CVE-3"]
    assert "2 ignored" in before.describe("fixable critical vulnerabilities")
    after = vulnerability_verdict(policy, _vulns(), REF, DIGEST, date(2026, 11, 28))
    assert not after.passed
    assert list(after.failing["id"]) == ["CVE-1"]
    assert after.failing["why"].iloc[0] == "ignore expired on 2026-11-28"
    assert "expired ignores: CVE-1 (2026-11-28)" in after.describe("findings")


def test_an_expired_ignore_fails_even_a_finding_below_the_threshold(tmp_path):
    policy = _policy(tmp_path, "ignores:\n  - {id: CVE-2, reason: old, expires: 2026-01-01}\n")
    verdict = vulnerability_verdict(policy, _vulns().iloc[[1]], REF, DIGEST, TODAY)
    assert not verdict.passed and [i.id for i in verdict.expired_ignores] == ["CVE-2"]


def test_ignores_scoped_to_images(tmp_path):
    policy = _policy(
        tmp_path,
        "ignores:\n"
        "  - {id: CVE-1, reason: r, expires: 2027-01-01, images: ['agents/*']}\n"
        "  - {id: CVE-3, reason: r, expires: 2027-01-01, images: ['sha256:bb']}\n",
    )
    verdict = vulnerability_verdict(policy, _vulns(), REF, DIGEST, TODAY)
    assert list(verdict.failing["id"]) == ["CVE-3"]
    other = vulnerability_verdict(policy, _vulns(), "h/platform/x@sha256:bb", "sha256:bb", TODAY)
    assert list(other.failing["id"]) == ["CVE-1"]


def test_secrets_fail_unless_ignored_by_rule(tmp_path):
    secrets = pd.DataFrame({"rule_id": ["private-key"], "severity": ["HIGH"]})
    high = _policy(tmp_path, "fail_on: HIGH\n")
    assert not secret_verdict(high, secrets, REF, DIGEST, TODAY).passed
    assert secret_verdict(load_scan_policy(), secrets, REF, DIGEST, TODAY).passed  # CRITICAL
    ignored = _policy(
        tmp_path,
        "fail_on: HIGH\nignores:\n  - {id: private-key, reason: test key, expires: 2027-01-01}\n",
    )
    assert secret_verdict(ignored, secrets, REF, DIGEST, TODAY).passed


def test_the_policy_digest_follows_content_not_formatting(tmp_path):
    a = _policy(tmp_path, "fail_on: HIGH\n")
    b = _policy(tmp_path, "# comment\nfail_on:   high\nsecrets: true\n")
    c = _policy(tmp_path, "fail_on: CRITICAL\n")
    assert a.sha256 == b.sha256 != c.sha256


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fail_on: SEVERE\n", "fail_on must be one of"),
        ("ignores:\n  - {id: CVE-1, expires: 2027-01-01}\n", "`reason` is mandatory"),
        ("ignores:\n  - {id: CVE-1, reason: r}\n", "`expires` is mandatory"),
        ("ignores:\n  - {id: CVE-1, reason: r, expires: soon}\n", "YYYY-MM-DD"),
        ("ignore: []\n", "takes only"),
        ("ignores:\n  - {id: C, reason: r, expires: 2027-01-01, owner: me}\n", "unknown key"),
    ],
)
def test_bad_policies_are_named(tmp_path, text, message):
    with pytest.raises(ScanPolicyError, match=message):
        _policy(tmp_path, text)
