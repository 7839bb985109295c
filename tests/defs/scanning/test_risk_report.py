"""scanning/image_risk_report over two days, with scans stored from real Trivy reports
(tests/data/trivy) and the deployed images of an inventory file or of the (fake) cluster."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from gsv_pipelines.defs.scanning.deployed import MARKDOWN_LIMIT, deployed_images, image_risk_report
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.scanning.deployed import read_frame, risk_key
from gsv_pipelines.lib.scanning.policy import load_scan_policy
from gsv_pipelines.lib.scanning.store import write_scan
from gsv_pipelines.lib.scanning.trivy_report import parse_report
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource
from gsv_pipelines.resources.workloads import InventoryWorkloadsResource
from tests.services.kube_fake import FakeCoreV1Api, fake_cluster_workloads, make_pod

DATA = Path(__file__).parents[2] / "data" / "trivy"
API = "sha256:" + "a" * 64  # debian-buster on day 1, ubuntu-1804 on day 2
WEB = "sha256:" + "b" * 64  # alpine-310
RUNNER = "sha256:" + "c" * 64  # secrets
FRESH = "sha256:" + "d" * 64  # never scanned
HOST = "registry.gsv.example"
INVENTORY = f"""
- {{namespace: platform, workload: api, image: "{HOST}/platform/api@{API}"}}
- {{namespace: platform, workload: web, image: "{HOST}/platform/web@{WEB}"}}
- {{namespace: agents, workload: runner, kind: StatefulSet, image: "{HOST}/agents/runner@{RUNNER}"}}
- {{namespace: agents, workload: fresh, image: "{HOST}/agents/fresh@{FRESH}"}}
"""
# Text of secrets.json that must never leave the scan: the matched lines.
SECRET_TEXT = ("ghp_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", "export GITHUB_PAT", "echo ****")
NEW_ON_DAY_2 = {
    ("CVE-2019-5094", package) for package in ("e2fsprogs", "libcom-err2", "libext2fs2", "libss2")
}


def store_scan(store: ArtefactStore, digest: str, fixture: str, when: datetime, policy_sha256: str):
    raw = json.loads((DATA / f"{fixture}.json").read_text())
    write_scan(
        store,
        digest=digest,
        reference=f"{HOST}/any@{digest}",
        raw_report=raw,
        report=parse_report(raw),
        db_metadata={"Version": 2, "UpdatedAt": f"{when:%Y-%m-%d}T00:00:00Z"},
        policy_sha256=policy_sha256,
        duration_seconds=1.5,
        scanned_at=when,
    )


@pytest.fixture
def world(tmp_path):
    inventory = tmp_path / "deployed-images.yaml"
    inventory.write_text(INVENTORY)
    store = ArtefactStore(str(tmp_path / "store"))
    resources = {
        "workloads": InventoryWorkloadsResource(path=str(inventory)),
        "artefact_store": ArtefactStoreResource(url=store.url),
        "policies": PoliciesResource(),
    }
    return {"store": store, "resources": resources, "tmp": tmp_path, "inventory": inventory}


def run_day(world, day: str, **kw) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [deployed_images, image_risk_report],
            partition_key=day,
            instance=instance,
            resources=world["resources"],
            **kw,
        )


def report_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [materialization] = result.asset_materializations_for_node("scanning__image_risk_report")
    return {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}


def table_rows(metadata: dict) -> dict[str, dict]:
    return {r.data["workload"]: r.data for r in metadata["workloads_table"].records}


def new_findings(store: ArtefactStore, day: str) -> set[tuple[str, str, str]]:
    findings = read_frame(store, risk_key(day, "findings.parquet"))
    new = findings[findings["new"]]
    return set(zip(new["workload"], new["id"], new["package"].fillna(new["target"]), strict=True))


def test_two_days_new_findings_verdicts_and_not_scanned(world):
    store = world["store"]
    sha = load_scan_policy().sha256
    store_scan(store, API, "debian-buster", datetime(2026, 3, 1, 2, tzinfo=UTC), sha)
    store_scan(store, WEB, "alpine-310", datetime(2026, 3, 1, 2, tzinfo=UTC), sha)
    store_scan(store, RUNNER, "secrets", datetime(2026, 3, 1, 2, tzinfo=UTC), sha)

    day1 = report_metadata(run_day(world, "2026-03-01"))
    assert day1["first_report"] is True
    assert "No report of 2026-02-28: this is the first report" in day1["report"]
    rows = table_rows(day1)
    assert {w: r["verdict"] for w, r in rows.items()} == {
        "Deployment/api": "fail",  # CVE-2019-18224, CRITICAL and fixable
        "Deployment/web": "pass",  # MEDIUM only
        "StatefulSet/runner": "fail",  # a CRITICAL secret (aws-access-key-id)
        "Deployment/fresh": "not scanned",
    }
    assert {k: rows["Deployment/api"][k] for k in ("critical", "high", "fixable", "secrets")} == {
        "critical": 1,
        "high": 0,
        "fixable": 1,
        "secrets": 0,
    }
    assert rows["StatefulSet/runner"]["secrets"] == 2
    assert rows["Deployment/fresh"]["new"] == 0
    assert f"no scan of {FRESH} in the store" in day1["report"]
    assert day1["new_findings"] == 2 + 4 + 2  # everything is new on the first day
    assert (day1["containers"], day1["failing"], day1["not_scanned"]) == (4, 2, 1)

    # Day 2: api is rescanned and its findings change; nothing else does.
    store_scan(store, API, "ubuntu-1804", datetime(2026, 3, 2, 2, tzinfo=UTC), sha)
    day2 = report_metadata(run_day(world, "2026-03-02"))
    assert day2["first_report"] is False
    assert new_findings(store, "2026-03-02") == {("api", cve, pkg) for cve, pkg in NEW_ON_DAY_2}
    assert day2["new_findings"] == 4
    assert day2["resolved_findings"] == 1  # CVE-2019-18224 in libidn2-0
    assert (
        "absent from the report of 2026-03-01 (1 of its findings no longer appear)"
        in day2["report"]
    )
    rows = table_rows(day2)
    assert rows["Deployment/api"]["new"] == 4 and rows["Deployment/api"]["verdict"] == "pass"
    assert rows["Deployment/web"]["new"] == 0
    assert "## New findings (4)" in day2["report"]

    summary = store.read_json(risk_key("2026-03-02", "summary.json"))
    assert summary["totals"]["new_findings"] == 4 and summary["first_report"] is False
    assert (
        summary["findings_sha256"] == store.hash(risk_key("2026-03-02", "findings.parquet")).sha256
    )
    with store.open(risk_key("2026-03-02", "report.md")) as stored:
        assert stored.read().decode() == day2["report"]
    assert store.glob("scanning/risk/*/*.partial") == []

    # Re-running a day gives the same report.
    again = report_metadata(run_day(world, "2026-03-02"))
    assert again["report"] == day2["report"] and again["new_findings"] == 4


def test_no_secret_text_reaches_the_report_its_files_or_the_event_log(world):
    store = world["store"]
    store_scan(store, RUNNER, "secrets", datetime(2026, 3, 1, 2, tzinfo=UTC), "x")
    result = run_day(world, "2026-03-01")
    written = []
    for key in store.glob("scanning/risk/2026-03-01/*"):
        with store.open(key) as stored:
            written.append(stored.read())
    written.append(read_frame(store, risk_key("2026-03-01", "findings.parquet")).to_csv().encode())
    events = "\n".join(str(event) for event in result.all_events)
    assert "aws-access-key-id" in events  # the rule is reported; the text is not
    for text in SECRET_TEXT:
        assert text not in events
        assert all(text.encode() not in data for data in written)


def test_ignores_apply_as_of_the_reports_day(world):
    policy = world["tmp"] / "scanning.yaml"
    policy.write_text(
        "ignores:\n"
        "  - id: CVE-2019-18224\n"
        "    reason: libidn2 is not reachable from the api\n"
        "    expires: 2026-03-02\n"
    )
    world["resources"]["policies"] = PoliciesResource(scan_policy_path=str(policy))
    sha = load_scan_policy(policy).sha256
    store_scan(world["store"], API, "debian-buster", datetime(2026, 3, 1, tzinfo=UTC), sha)

    day1 = report_metadata(run_day(world, "2026-03-01"))
    assert table_rows(day1)["Deployment/api"]["verdict"] == "pass"
    assert day1["ignored_findings"] == 1
    assert "ignored until 2026-03-02: libidn2 is not reachable from the api" in day1["report"]
    day2 = report_metadata(run_day(world, "2026-03-02"))
    assert table_rows(day2)["Deployment/api"]["verdict"] == "fail"
    assert "fails: ignore expired on 2026-03-02" in day2["report"]
    assert day2["new_findings"] == 0


def test_containers_without_a_digest_are_reported(world):
    sha = load_scan_policy().sha256
    store_scan(world["store"], WEB, "alpine-310", datetime(2026, 3, 1, tzinfo=UTC), sha)
    pods = [
        make_pod(
            "platform",
            "web-0",
            owner=("StatefulSet", "web"),
            containers=[("web", f"{HOST}/platform/web:1", f"{HOST}/platform/web@{WEB}")],
        ),
        make_pod(
            "platform",
            "web-1",
            owner=("StatefulSet", "web"),
            phase="Pending",
            waiting="ImagePullBackOff",
            containers=[("web", f"{HOST}/platform/web:2", "")],
        ),
    ]
    world["resources"]["workloads"] = fake_cluster_workloads(FakeCoreV1Api(pods))
    metadata = report_metadata(run_day(world, "2026-03-01"))
    assert metadata["without_digest"] == 1
    assert [r.data["verdict"] for r in metadata["workloads_table"].records] == ["no digest", "pass"]
    assert "(waiting: ImagePullBackOff)" in metadata["report"]


def test_a_long_report_is_trimmed_in_metadata_and_whole_in_the_store(world):
    sha = load_scan_policy().sha256
    store_scan(world["store"], WEB, "alpine-310", datetime(2026, 3, 1, tzinfo=UTC), sha)
    world["inventory"].write_text(
        "".join(
            f"- {{namespace: ns-{n:03}, workload: web, image: '{HOST}/platform/web@{WEB}'}}\n"
            for n in range(300)
        )
    )
    metadata = report_metadata(run_day(world, "2026-03-01"))
    location = world["store"].location(risk_key("2026-03-01", "report.md"))
    assert metadata["report"].endswith(f"*Trimmed here: the whole report is {location}*")
    assert len(metadata["report"]) <= MARKDOWN_LIMIT + 200
    with world["store"].open(risk_key("2026-03-01", "report.md")) as stored:
        whole = stored.read().decode()
    assert len(whole) > MARKDOWN_LIMIT and "| ns-299 |" in whole
    assert metadata["containers"] == 300 and metadata["new_findings"] == 1200


def test_a_day_without_deployed_images_fails_clearly(world):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [image_risk_report],
            partition_key="2026-03-05",
            instance=instance,
            resources=world["resources"],
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "materialize scanning/deployed_images for 2026-03-05 first" in str(
        failure.step_failure_data.user_failure_data or failure.step_failure_data.error
    )


def test_the_workloads_read_on_a_1600_px_screen(world):
    # A demo-like inventory: images from OCI layouts deep in a data folder.
    layout = "oci:" + "/home/operator/projects/gsv-platform/.gsv/images" * 2 + "/agent-runtime"
    world["inventory"].write_text(
        f'- {{namespace: agents, workload: agent-runtime, image: "{layout}@{API}"}}\n'
    )
    store_scan(world["store"], API, "debian-buster", datetime(2026, 3, 1, 2, tzinfo=UTC), "x")
    metadata = report_metadata(run_day(world, "2026-03-01"))
    section = metadata["report"].split("## Workloads", 1)[1].split("\n## ", 1)[0]
    header, _, row = [line for line in section.splitlines() if line.startswith("|")][:3]
    columns = [c.strip() for c in header.strip("|").split("|")]
    # The verdict right after the workload, before the long cells.
    assert columns[:4] == ["namespace", "workload", "container", "verdict"]
    assert columns.index("verdict") < columns.index("image") < columns.index("why")
    # No cell holds a word the table cannot wrap (a path, a whole digest).
    assert max(len(word) for word in row.replace("|", " ").split()) <= 40
    assert "oci:agent-runtime" in row
    [table] = metadata["workloads_table"].records
    assert list(table.data)[:4] == ["namespace", "workload", "container", "verdict"]
    assert table.data["image"] == "oci:agent-runtime"
