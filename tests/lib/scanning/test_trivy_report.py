import json
import math
from pathlib import Path

import pandas as pd
import pytest

from gsv_pipelines.lib.scanning.trivy_report import (
    MISCONFIGURATION_COLUMNS,
    SECRET_COLUMNS,
    SEVERITIES,
    VULNERABILITY_COLUMNS,
    Report,
    TrivyReportError,
    fixable_counts,
    parse_report,
    severity_counts,
)

# Real reports written by Trivy: see tests/data/trivy/README.md.
DATA = Path(__file__).parents[2] / "data" / "trivy"
SCHEMAS = {
    "vulnerabilities": VULNERABILITY_COLUMNS,
    "secrets": SECRET_COLUMNS,
    "misconfigurations": MISCONFIGURATION_COLUMNS,
}


def fixture(name: str) -> bytes:
    return (DATA / f"{name}.json").read_bytes()


def parse_fixture(name: str) -> Report:
    return parse_report(fixture(name))


def report(*results: dict, **top) -> dict:
    return {"SchemaVersion": 2, "ArtifactName": "demo", "Results": list(results), **top}


def vulnerability_result(*vulnerabilities: dict) -> dict:
    return {
        "Target": "app",
        "Class": "lang-pkgs",
        "Type": "npm",
        "Vulnerabilities": [*vulnerabilities],
    }


def only_row(frame: pd.DataFrame, **where) -> pd.Series:
    rows = frame
    for column, value in where.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, f"{len(rows)} rows match {where}"
    return rows.iloc[0]


def assert_schema(parsed: Report) -> None:
    for attribute, columns in SCHEMAS.items():
        frame = getattr(parsed, attribute)
        assert list(frame.columns) == list(columns), attribute
        assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == columns, attribute


# --- the real reports ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "vulnerabilities", "secrets", "misconfigurations"),
    [
        ("alpine-310", 4, 0, 0),
        ("debian-buster", 2, 0, 0),
        ("ubuntu-1804", 5, 0, 0),
        ("pip", 2, 0, 0),
        ("secrets", 0, 2, 0),
        ("dockerfile", 0, 0, 1),
    ],
)
def test_each_real_report_parses_with_its_counts_and_the_fixed_schema(
    name, vulnerabilities, secrets, misconfigurations
):
    parsed = parse_fixture(name)
    assert parsed.schema_version == 2
    assert len(parsed.vulnerabilities) == vulnerabilities
    assert len(parsed.secrets) == secrets
    assert len(parsed.misconfigurations) == misconfigurations
    assert_schema(parsed)


def test_str_bytes_and_decoded_dict_give_the_same_report():
    raw = fixture("debian-buster")
    from_bytes = parse_report(raw)
    for other in (parse_report(raw.decode()), parse_report(json.loads(raw))):
        pd.testing.assert_frame_equal(other.vulnerabilities, from_bytes.vulnerabilities)
        assert other.created_at == from_bytes.created_at


def test_alpine_image_metadata_and_a_fixed_openssl_cve():
    parsed = parse_fixture("alpine-310")
    assert parsed.artifact_name == "testdata/fixtures/images/alpine-310.tar.gz"
    assert parsed.artifact_type == "container_image"
    assert parsed.created_at == pd.Timestamp("2021-08-25T12:20:30.000000005Z")
    assert (parsed.os_family, parsed.os_name) == ("alpine", "3.10.2")
    assert parsed.image_id == (
        "sha256:961769676411f082461f9ef46626dd7a2d1e2b2a38e6a44364bcbecf51e66dd4"
    )
    assert parsed.repo_digests == ()  # the image came from a tar file, not a registry

    row = only_row(parsed.vulnerabilities, vulnerability_id="CVE-2019-1551", pkg_name="libssl1.1")
    assert row["target"] == "testdata/fixtures/images/alpine-310.tar.gz (alpine 3.10.2)"
    assert (row["class"], row["type"]) == ("os-pkgs", "alpine")
    assert row["pkg_id"] == "libssl1.1@1.1.1c-r0"
    assert (row["installed_version"], row["fixed_version"]) == ("1.1.1c-r0", "1.1.1d-r2")
    assert (row["status"], row["severity"], row["severity_source"]) == ("fixed", "MEDIUM", "nvd")
    # nvd's v3 score 5.3 beats redhat's 4.8; nvd's v2 score of 5 is not considered.
    assert (row["cvss_score"], row["cvss_source"]) == (5.3, "nvd")
    assert row["fixable"]
    assert row["layer_digest"] == (
        "sha256:9d48c3bd43c520dc2784e868a780e976b207cbf493eaff8c6596eb871cbd9609"
    )
    assert row["published_date"] == pd.Timestamp("2019-12-06T18:15:00Z")
    assert row["primary_url"] == "https://avd.aquasec.com/nvd/cve-2019-1551"


def test_debian_affected_cve_without_a_fix_is_not_fixable():
    frame = parse_fixture("debian-buster").vulnerabilities
    bash = only_row(frame, vulnerability_id="CVE-2019-18276")
    assert (bash["status"], bash["severity"]) == ("affected", "LOW")
    assert pd.isna(bash["fixed_version"])
    assert not bash["fixable"]
    assert (bash["cvss_score"], bash["cvss_source"]) == (7.8, "nvd")  # nvd and redhat tie

    libidn = only_row(frame, vulnerability_id="CVE-2019-18224")
    assert (libidn["severity"], libidn["fixed_version"]) == ("CRITICAL", "2.0.5-1+deb10u1")
    assert libidn["cvss_score"] == 9.8
    assert libidn["fixable"]

    assert severity_counts(frame) == {"UNKNOWN": 0, "LOW": 1, "MEDIUM": 0, "HIGH": 0, "CRITICAL": 1}
    assert fixable_counts(frame) == {"UNKNOWN": 0, "LOW": 0, "MEDIUM": 0, "HIGH": 0, "CRITICAL": 1}


def test_ubuntu_one_cve_in_four_packages():
    parsed = parse_fixture("ubuntu-1804")
    assert (parsed.os_family, parsed.os_name) == ("ubuntu", "18.04")
    e2fs = parsed.vulnerabilities[parsed.vulnerabilities["vulnerability_id"] == "CVE-2019-5094"]
    assert sorted(e2fs["pkg_name"]) == ["e2fsprogs", "libcom-err2", "libext2fs2", "libss2"]
    assert set(e2fs["fixed_version"]) == {"1.44.1-1ubuntu1.2"}
    assert set(e2fs["cvss_score"]) == {6.7}
    assert e2fs["fixable"].all()
    assert severity_counts(parsed.vulnerabilities)["MEDIUM"] == 4
    assert fixable_counts(parsed.vulnerabilities) == {
        "UNKNOWN": 0,
        "LOW": 0,
        "MEDIUM": 4,
        "HIGH": 0,
        "CRITICAL": 0,
    }


def test_pip_repository_has_no_image_metadata_nor_layers():
    parsed = parse_fixture("pip")
    assert parsed.artifact_type == "repository"
    assert (parsed.os_family, parsed.os_name, parsed.image_id) == (None, None, None)
    frame = parsed.vulnerabilities
    assert set(frame["class"]) == {"lang-pkgs"}
    assert set(frame["type"]) == {"pip"}
    assert frame["layer_digest"].isna().all()
    assert frame["pkg_id"].isna().all()  # Trivy leaves PkgID out for pip packages
    werkzeug = only_row(frame, vulnerability_id="CVE-2019-14806")
    assert (werkzeug["pkg_name"], werkzeug["installed_version"]) == ("Werkzeug", "0.11")
    assert (werkzeug["fixed_version"], werkzeug["severity"]) == ("0.15.3", "HIGH")
    assert (werkzeug["severity_source"], werkzeug["cvss_score"]) == ("ghsa", 7.5)
    assert werkzeug["fixable"]


def test_secrets_keep_rule_and_place_but_never_the_matched_text():
    raw = json.loads(fixture("secrets"))
    parsed = parse_report(raw)
    frame = parsed.secrets
    assert frame.to_dict("records") == [
        {
            "target": "deploy.sh",
            "rule_id": "aws-access-key-id",
            "category": "AWS",
            "severity": "CRITICAL",
            "title": "AWS Access Key ID",
            "start_line": 3,
            "end_line": 3,
        },
        {
            "target": "deploy.sh",
            "rule_id": "mysecret",
            "category": "Custom",
            "severity": "HIGH",
            "title": "My Secret",
            "start_line": 7,
            "end_line": 7,
        },
    ]
    findings = raw["Results"][0]["Secrets"]
    matched = {finding["Match"] for finding in findings}
    matched |= {line["Content"] for f in findings for line in f["Code"]["Lines"] if line["Content"]}
    assert "export GITHUB_PAT=ghp_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" in matched
    cells = [str(value) for value in frame.to_numpy().ravel()]
    for text in [*matched, "****", "ghp_"]:
        assert not [cell for cell in cells if text in cell]
    assert set(frame.columns) == set(SECRET_COLUMNS)  # no Match, no Code
    assert severity_counts(frame) == {"UNKNOWN": 0, "LOW": 0, "MEDIUM": 0, "HIGH": 1, "CRITICAL": 1}


def test_dockerfile_misconfiguration():
    parsed = parse_fixture("dockerfile")
    row = only_row(parsed.misconfigurations, id="DS-0002")
    assert (row["target"], row["type"]) == ("Dockerfile", "dockerfile")
    assert row["title"] == "Image user should not be 'root'"
    assert (row["severity"], row["status"]) == ("HIGH", "FAIL")
    assert row["message"].startswith("Specify at least 1 USER command")
    assert row["resolution"] == "Add 'USER <non root user name>' line to the Dockerfile"
    assert row["primary_url"] == "https://avd.aquasec.com/misconfig/ds-0002"
    # This check has no AVDID and its CauseMetadata no lines.
    assert pd.isna(row["avd_id"])
    assert pd.isna(row["start_line"]) and pd.isna(row["end_line"])


# --- the awkward corners -------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        {"SchemaVersion": 2},
        {"SchemaVersion": 2, "Results": None},
        {"SchemaVersion": 2, "Results": []},
        report({"Target": "app", "Class": "lang-pkgs", "Type": "npm", "Vulnerabilities": None}),
        report({"Target": "app", "Vulnerabilities": None, "Secrets": None}),
        report({"Target": "img (alpine 3.20.3)", "Class": "os-pkgs", "Type": "alpine"}),
    ],
    ids=[
        "results-missing",
        "results-null",
        "results-empty",
        "vulnerabilities-null",
        "all-null",
        "result-without-findings",
    ],
)
def test_reports_with_nothing_found_give_empty_frames_with_every_column(document):
    parsed = parse_report(document)
    assert parsed.vulnerabilities.empty
    assert parsed.secrets.empty
    assert parsed.misconfigurations.empty
    assert_schema(parsed)
    assert parsed.created_at is None
    assert parsed.repo_digests == ()
    for frame in (parsed.vulnerabilities, parsed.secrets, parsed.misconfigurations):
        assert severity_counts(frame) == dict.fromkeys(SEVERITIES, 0)
    assert fixable_counts(parsed.vulnerabilities) == dict.fromkeys(SEVERITIES, 0)


def test_license_results_are_ignored():
    licenses = {
        "Target": "OS Packages",
        "Class": "license",
        "Licenses": [
            {
                "Severity": "HIGH",
                "Category": "restricted",
                "PkgName": "busybox",
                "Name": "GPL-2.0-only",
                "Confidence": 1,
            }
        ],
    }
    loose = {"Target": "LICENSE", "Class": "license-file", "Licenses": None}
    parsed = parse_report(report(licenses, loose, vulnerability_result({"VulnerabilityID": "X"})))
    assert parsed.vulnerabilities["vulnerability_id"].tolist() == ["X"]
    assert parsed.secrets.empty and parsed.misconfigurations.empty


def test_highest_v3_score_over_sources_else_v2():
    parsed = parse_report(
        report(
            vulnerability_result(
                {
                    "VulnerabilityID": "V3-FROM-REDHAT",
                    "CVSS": {
                        "nvd": {"V2Score": 9.3, "V3Score": 5.5},
                        "redhat": {"V3Score": 7.1},
                        "ghsa": {"V3Vector": "CVSS:3.1/AV:N"},
                    },
                },
                {
                    "VulnerabilityID": "V2-ONLY",
                    "CVSS": {"nvd": {"V2Score": 4.3}, "redhat": {"V2Score": 5.0}},
                },
                {"VulnerabilityID": "NO-CVSS"},
                {"VulnerabilityID": "NULL-CVSS", "CVSS": None},
                {"VulnerabilityID": "EMPTY-CVSS", "CVSS": {}},
            )
        )
    )
    scores = parsed.vulnerabilities.set_index("vulnerability_id")[["cvss_score", "cvss_source"]]
    assert tuple(scores.loc["V3-FROM-REDHAT"]) == (7.1, "redhat")  # v3 wins over nvd's v2 9.3
    assert tuple(scores.loc["V2-ONLY"]) == (5.0, "redhat")
    for name in ("NO-CVSS", "NULL-CVSS", "EMPTY-CVSS"):
        assert math.isnan(scores.loc[name, "cvss_score"])
        assert pd.isna(scores.loc[name, "cvss_source"])


def test_fixable_without_status_as_in_older_reports():
    parsed = parse_report(
        report(
            vulnerability_result(
                {"VulnerabilityID": "OLD-FIXED", "FixedVersion": "1.2.4"},
                {"VulnerabilityID": "OLD-UNFIXED"},
                {"VulnerabilityID": "OLD-BLANK", "FixedVersion": ""},
                {"VulnerabilityID": "NEW-FIXED", "Status": "Fixed"},
                {"VulnerabilityID": "WONT", "Status": "will_not_fix"},
            )
        )
    )
    frame = parsed.vulnerabilities.set_index("vulnerability_id")
    assert frame["fixable"].to_dict() == {
        "OLD-FIXED": True,
        "OLD-UNFIXED": False,
        "OLD-BLANK": False,
        "NEW-FIXED": True,
        "WONT": False,
    }
    assert pd.isna(frame.loc["OLD-FIXED", "status"])
    assert frame.loc["NEW-FIXED", "status"] == "fixed"
    assert frame["layer_digest"].isna().all()


def test_severities_in_any_case_and_unknown_values():
    severities = ["critical", "High", " medium ", "LOW", "unknown", "NEGLIGIBLE", None, ""]
    vulnerabilities = [
        {"VulnerabilityID": f"V{index}", "Severity": severity}
        for index, severity in enumerate(severities)
    ]
    vulnerabilities.append({"VulnerabilityID": "NO-SEVERITY-KEY"})
    frame = parse_report(report(vulnerability_result(*vulnerabilities))).vulnerabilities
    assert frame["severity"].tolist()[:4] == ["CRITICAL", "HIGH", "MEDIUM", "LOW"]
    assert severity_counts(frame) == {"UNKNOWN": 5, "LOW": 1, "MEDIUM": 1, "HIGH": 1, "CRITICAL": 1}
    assert list(severity_counts(frame)) == list(SEVERITIES)


def test_findings_of_every_kind_from_one_report():
    document = report(
        vulnerability_result(
            {"VulnerabilityID": "CVE-1", "Severity": "HIGH", "Status": "affected"}
        ),
        {
            "Target": "k8s/deployment.yaml",
            "Class": "config",
            "Type": "kubernetes",
            "MisconfSummary": {"Successes": 10, "Failures": 1},
            "Misconfigurations": [
                {
                    "Type": "Kubernetes Security Check",
                    "ID": "KSV001",
                    "AVDID": "AVD-KSV-0001",
                    "Title": "Can elevate its own privileges",
                    "Severity": "medium",
                    "Status": "fail",
                    "CauseMetadata": {
                        "Provider": "Kubernetes",
                        "StartLine": 12,
                        "EndLine": 30,
                        "Code": {"Lines": [{"Number": 12, "Content": "containers:"}]},
                    },
                }
            ],
        },
        {
            "Target": "/app/.env",
            "Class": "secret",
            "Secrets": [{"RuleID": "generic", "Severity": "low", "StartLine": 1, "EndLine": 2}],
        },
        Metadata={
            "OS": {"Family": "debian", "Name": "12.8"},
            "ImageID": "sha256:abc",
            "RepoDigests": ["registry.example/app@sha256:def"],
        },
        CreatedAt="2025-01-30T10:00:00.123456789+01:00",
    )
    parsed = parse_report(document)
    assert parsed.created_at == pd.Timestamp("2025-01-30T09:00:00.123456789Z")
    assert (parsed.os_family, parsed.os_name, parsed.image_id) == ("debian", "12.8", "sha256:abc")
    assert parsed.repo_digests == ("registry.example/app@sha256:def",)
    assert only_row(parsed.vulnerabilities, vulnerability_id="CVE-1")["status"] == "affected"
    misconfiguration = only_row(parsed.misconfigurations, id="KSV001")
    assert (misconfiguration["type"], misconfiguration["avd_id"]) == ("kubernetes", "AVD-KSV-0001")
    assert (misconfiguration["severity"], misconfiguration["status"]) == ("MEDIUM", "FAIL")
    assert (misconfiguration["start_line"], misconfiguration["end_line"]) == (12, 30)
    secret = only_row(parsed.secrets, rule_id="generic")
    assert (secret["target"], secret["severity"], secret["end_line"]) == ("/app/.env", "LOW", 2)
    assert pd.isna(secret["category"])
    assert_schema(parsed)


# --- what is not a report ------------------------------------------------------------------


def test_a_truncated_report_is_rejected_as_truncated():
    raw = fixture("alpine-310")
    with pytest.raises(TrivyReportError, match=r"not valid JSON.*truncated") as caught:
        parse_report(raw[: len(raw) // 2])
    message = str(caught.value)
    assert len(message) < 200
    assert "CVE-" not in message and "openssl" not in message


@pytest.mark.parametrize("name", ["secrets", "dockerfile"])
def test_a_report_cut_anywhere_is_called_truncated(name):
    raw = fixture(name)
    for length in range(1, len(raw.rstrip())):
        with pytest.raises(TrivyReportError, match="truncated"):
            parse_report(raw[:length])


def test_a_cut_secrets_report_does_not_echo_what_was_read():
    raw = fixture("secrets")
    cut = raw[: raw.index(b"ghp_") + 10]
    with pytest.raises(TrivyReportError, match="truncated") as caught:
        parse_report(cut)
    assert "ghp_" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<html>502 Bad Gateway</html>", "not valid JSON"),
        ("2024-01-01 FATAL image scan failed", "not valid JSON"),
        (b"", "empty"),
        ("  \n", "empty"),
        (b"\xff\xfe{\x00}\x00", "not UTF-8"),
        (b'[{"SchemaVersion": 2}]', "JSON object at the top level, not a list"),
        ("null", "not null"),
        ("42", "not a number"),
        ({"ArtifactName": "x", "Results": []}, "SchemaVersion is missing"),
        ({"SchemaVersion": 1, "Results": []}, "SchemaVersion is 1; only 2 is supported"),
        ({"SchemaVersion": "2"}, "SchemaVersion is a string"),
        ({"SchemaVersion": True}, "SchemaVersion is a boolean"),
        (
            {"SchemaVersion": 2, "Results": {"Target": "x"}},
            "top-level field Results should be a list",
        ),
        ({"SchemaVersion": 2, "Results": ["x"]}, r"Results\[0\] should be an object, got a string"),
        ({"SchemaVersion": 2, "Metadata": []}, "top-level field Metadata should be an object"),
        ({"SchemaVersion": 2, "CreatedAt": "yesterday"}, "CreatedAt is not an RFC 3339 time"),
        (
            report({"Target": "app", "Vulnerabilities": {"VulnerabilityID": "CVE-1"}}),
            r"Results\[0\]\.Vulnerabilities should be a list, got an object",
        ),
        (
            report(vulnerability_result({"VulnerabilityID": "CVE-1", "FixedVersion": 2})),
            r"Results\[0\]\.Vulnerabilities\[0\]\.FixedVersion should be a string, got a number",
        ),
        (
            report(vulnerability_result({"VulnerabilityID": "CVE-1", "CVSS": {"nvd": 9.8}})),
            r"Results\[0\]\.Vulnerabilities\[0\]\.CVSS\.nvd should be an object",
        ),
        (
            report({"Target": "a", "Secrets": [{"RuleID": "r", "StartLine": "3"}]}),
            r"Results\[0\]\.Secrets\[0\]\.StartLine should be an integer, got a string",
        ),
    ],
)
def test_what_is_not_a_trivy_report_is_rejected_clearly(data, message):
    with pytest.raises(TrivyReportError, match=message) as caught:
        parse_report(data)
    assert len(str(caught.value)) < 200
    assert isinstance(caught.value, ValueError)
