"""The exporter's metrics from real sources: a real backup in the store, a drill record, a risk
report's findings, the rotation policy, a warehouse written by the usage writer, run failures,
dead letters and incidents; names and labels as Prometheus's text format carries them."""

import sqlite3
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gsv_pipelines.lib.alerts.incidents import Incidents, Observation
from gsv_pipelines.lib.alerts.metrics import PipelineCollector, Sources
from gsv_pipelines.lib.backups import make as backups
from gsv_pipelines.lib.backups.policy import load_backup_policy
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills.restore import Evidence
from gsv_pipelines.lib.drills.run import DrillRecord, save_record
from gsv_pipelines.lib.rotation.policy import load_rotation_policy
from gsv_pipelines.lib.scanning import deployed
from gsv_pipelines.lib.usage import tables as usage_tables
from gsv_pipelines.lib.usage import warehouse as usage_warehouse

DAY = date(2026, 5, 1)


def scrape(sources: Sources) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(sources, cache_seconds=0))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(column: usage_tables.Column):
    if column.nullable:
        return None
    return {"date": DAY, "text": "x", "int": 1, "float": 0.0, "money": Decimal("0")}.get(
        column.type, datetime(2026, 5, 1, tzinfo=UTC)
    )


def _frame(spec: usage_tables.Table, rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        [{c.name: row.get(c.name, _value(c)) for c in spec.columns} for row in rows]
    )


@pytest.fixture
def sources(tmp_path) -> Sources:
    store = ArtefactStore(str(tmp_path / "store"))
    database = tmp_path / "platform.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table tenants (id integer primary key)")
    policy = load_backup_policy()
    backups.backup_platform_database(f"sqlite:///{database}", store, policy.platform_db)

    started = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    common = {"mode": "drill", "started_at": started, "location": "scratch"}
    save_record(
        store,
        DrillRecord(
            drill_id="20260501T040000Z-aaaa",
            run_id="r",
            started_at=started,
            finished_at=started,
            policy="p",
            store="s",
            targets=[
                Evidence(kind="qdrant", target="support_bot", rto_seconds=12.0, rpo_seconds=3600.0,
                         rto_target_seconds=900, rpo_target_seconds=93600, verified=True, **common),
                Evidence(kind="platform_db", target="platform", rto_seconds=1200.0,
                         rpo_seconds=3600.0, rto_target_seconds=900, rpo_target_seconds=93600,
                         verified=True, **common),
            ],
        ),
    )  # fmt: skip

    def finding(container: str, severity: str, fixable: bool, note: str | None = None) -> dict:
        return {
            "namespace": "agents",
            "workload_kind": "Deployment",
            "workload": "agent-runtime",
            "container": container,
            "kind": "vulnerability",
            "severity": severity,
            "fixable": fixable,
            "policy_note": note,
        }

    findings = deployed.typed_frame(
        [
            finding("runtime", "CRITICAL", True, "fails: CRITICAL, fixable"),
            finding("runtime", "CRITICAL", True, "fails: CRITICAL, fixable"),
            finding("runtime", "CRITICAL", False),  # no fix yet
            finding("runtime", "CRITICAL", True, "ignored until 2099-01-01: accepted"),
            finding("sidecar", "HIGH", True),
        ],
        deployed.FINDING_COLUMNS,
    )
    deployed.write_frame(store, deployed.risk_key("2026-05-01", "findings.parquet"), findings)
    store.write_json_atomic(deployed.risk_key("2026-05-01", "summary.json"), {"day": "2026-05-01"})

    warehouse = f"sqlite:///{tmp_path / 'warehouse.db'}"
    quota = _frame(
        usage_tables.QUOTA_STATUS,
        [
            {"tenant_id": "acme", "plan_id": "free", "usage_pct": 119.3, "level": 100},
            {"tenant_id": "globex", "plan_id": "team", "usage_pct": 12.5, "level": 0},
        ],
    )
    agents = _frame(
        usage_tables.AGENT_PERFORMANCE,
        [{"agent_id": "support_bot", "provider": "openai", "calls": 400, "error_rate": 0.09}],
    )
    usage_warehouse.write_partition(
        warehouse, DAY, {usage_tables.QUOTA_STATUS: quota, usage_tables.AGENT_PERFORMANCE: agents}
    )

    incidents = Incidents(store)
    incidents.observe(
        Observation(
            subject={"kind": "check", "asset": "a", "check": "c", "partition": None},
            what="c",
            label="a",
            failed=True,
            at=1.0,
            severity="error",
            run_id="r",
        ),
        lambda alert: None,
    )
    store.write_json_atomic("alerts/dead-letters/x.json", {"channel": "teams", "alert": {}})
    now = datetime.now(UTC).timestamp()
    return Sources(
        store=store,
        backup_policy=policy,
        rotation_policy=load_rotation_policy(),
        warehouse_url=warehouse,
        run_failures=lambda: {"qdrant_backup_job": 2, "usage_job": 0},
        inventory=lambda: (now, {"webhook-hmac": 10.0}),
    )


def test_every_signal_is_exported_with_its_labels(sources):
    got = scrape(sources)
    [newest] = backups.manifests.list_backups(sources.store, "platform_db", "platform")
    backup = (("kind", "platform_db"), ("target", "platform"))
    assert got["gsv_backup_last_success_timestamp_seconds", backup] == pytest.approx(
        newest.consistency_time.timestamp()
    )
    assert got["gsv_backup_rpo_seconds", backup] == 26 * 3600

    qdrant = (("kind", "qdrant"), ("target", "support_bot"))
    database = (("kind", "platform_db"), ("target", "platform"))
    assert got["gsv_drill_success", qdrant] == 1 and got["gsv_drill_success", database] == 0
    assert got["gsv_drill_rto_seconds", database] == 1200
    assert got["gsv_drill_rto_objective_seconds", database] == 900

    runtime = (
        ("container", "runtime"),
        ("namespace", "agents"),
        ("severity", "CRITICAL"),
        ("workload", "agent-runtime"),
    )
    # The unfixable and the ignored CRITICAL do not count: open and fixable only.
    assert got["gsv_deployed_image_open_fixable_vulnerabilities", runtime] == 2
    assert (
        got["gsv_image_risk_report_timestamp_seconds", ()]
        == datetime(2026, 5, 1, tzinfo=UTC).timestamp()
    )

    rotated = got["gsv_secret_rotated_timestamp_seconds", (("secret", "webhook-hmac"),)]
    assert datetime.now(UTC).timestamp() - rotated == pytest.approx(10 * 86400, abs=60)
    assert got["gsv_secret_max_age_seconds", (("secret", "webhook-hmac"),)] == 60 * 86400
    assert ("gsv_secret_rotated_timestamp_seconds", (("secret", "api-signing"),)) not in got

    assert got["gsv_tenant_quota_usage_ratio", (("plan", "free"), ("tenant", "acme"))] == 1.193
    agent = (("agent", "support_bot"), ("provider", "openai"))
    assert got["gsv_agent_error_ratio", agent] == 0.09 and got["gsv_agent_calls", agent] == 400

    assert got["gsv_pipeline_run_failures_total", (("job", "qdrant_backup_job"),)] == 2
    assert got["gsv_alert_dead_letters", (("channel", "teams"),)] == 1
    assert got["gsv_alert_open_incidents", (("kind", "check"), ("severity", "error"))] == 1
    assert {k[1][0][1] for k, v in got.items() if k[0] == "gsv_metrics_source_up" and v == 1} == {
        "backups", "drills", "scanning", "rotation", "usage", "runs", "alerts"
    }  # fmt: skip


def test_an_unreadable_source_is_reported_and_the_others_still_are(sources):
    sources.warehouse_url = "postgresql+psycopg2://nobody@127.0.0.1:1/warehouse"
    got = scrape(sources)
    assert got["gsv_metrics_source_up", (("source", "usage"),)] == 0
    assert got["gsv_metrics_source_up", (("source", "backups"),)] == 1
    assert not [k for k in got if k[0] == "gsv_tenant_quota_usage_ratio"]
    assert [k for k in got if k[0] == "gsv_backup_last_success_timestamp_seconds"]
