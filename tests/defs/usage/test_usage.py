"""The usage group end to end in Dagster, on the crafted data (crafted.py), with the source and
the warehouse both in PostgreSQL or both SQLite (the embedded default). Expectations by hand."""

from datetime import date, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from gsv_pipelines.definitions import defs as load_defs
from gsv_pipelines.defs.usage import assets, checks
from gsv_pipelines.defs.usage.schedules import usage_job
from gsv_pipelines.lib.usage import sketch as usage_sketch
from gsv_pipelines.lib.usage import tables
from gsv_pipelines.lib.usage.warehouse import read
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import DatabaseResource
from gsv_pipelines.resources.warehouse import WarehouseResource
from tests.defs.usage import crafted

USAGE = [
    assets.usage_events,
    assets.tenant_usage,
    assets.agent_performance,
    assets.billing,
    assets.subscription_metrics,
    assets.quota_status,
    checks.events_reconciled,
    checks.agent_error_rate,
    checks.quota_exceeded,
]
ALL_TABLES = tables.EVENT_TABLES + tables.AGGREGATE_TABLES


@pytest.fixture(params=["postgres", "sqlite"])
def world(request, tmp_path) -> dict:
    source, warehouse = crafted.databases(request.param, request, tmp_path)
    crafted.build(source)
    return {
        "source": source,
        "warehouse": warehouse,
        "resources": {
            "platform_db": DatabaseResource(url=source),
            "warehouse": WarehouseResource(url=warehouse),
            "policies": PoliciesResource(),
        },
    }


def _run(world, instance, day: date) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        USAGE,
        partition_key=day.isoformat(),
        instance=instance,
        resources=world["resources"],
        raise_on_error=False,
    )


def _checks(result) -> dict[str, tuple[bool, str]]:
    return {
        e.check_name: (e.passed, e.severity.value) for e in result.get_asset_check_evaluations()
    }


def _table(world, table: tables.Table, day: date = crafted.DAY) -> pd.DataFrame:
    frame = read(world["warehouse"], table, day, day)
    return frame.sort_values(list(table.key), ignore_index=True)


def _rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    """Rows as tuples, NULL as None whatever dtype the engine gave the column."""
    frame = frame[columns].astype(object)
    return [tuple(r) for r in frame.where(frame.notna(), None).itertuples(index=False)]


def _snapshot(world) -> dict[str, list]:
    out = {}
    for table in ALL_TABLES:
        frame = read(world["warehouse"], table, crafted.PREVIOUS_DAY, crafted.DAY)
        frame = frame.drop(columns=["extracted_at"], errors="ignore")
        out[table.name] = sorted(map(str, frame.itertuples(index=False)))
    return out


@pytest.fixture
def materialized(world):
    with dg.instance_for_test() as instance:
        first = _run(world, instance, crafted.PREVIOUS_DAY)
        second = _run(world, instance, crafted.DAY)
        yield {"world": world, "instance": instance, "results": (first, second)}


def test_both_days_materialize_with_their_checks(materialized):
    first, second = materialized["results"]
    assert first.success and second.success
    # gamma used 125% of its plan's calls on Mar 3 (crossed 120%); alpha 90% on Mar 2.
    assert _checks(second) == {
        "events_reconciled": (True, "ERROR"),
        "agent_error_rate": (True, "WARN"),
        "quota_exceeded": (False, "WARN"),
    }
    assert _checks(first)["quota_exceeded"] == (True, "WARN")
    [evaluation] = [
        e for e in second.get_asset_check_evaluations() if e.check_name == "quota_exceeded"
    ]
    assert evaluation.description == (
        "QuotaExceeded gamma (pro) on 2026-03-03: 125.0% of the included usage, crossed 120%"
    )
    metadata = second.asset_materializations_for_node("usage__usage_events")[0].metadata
    assert metadata["deliveries"].value == 40
    assert metadata["events"].value == 37
    assert metadata["duplicate_deliveries"].value == 3
    assert metadata["quarantined_events"].value == 6
    # The row count of the day's events is the events counted, not the rollup's rows.
    assert metadata["dagster/row_count"].value == metadata["valid_events"].value == 31
    assert metadata["rollup_rows"].value == 4
    quarantined = metadata["quarantined_by_reason"].value.records
    assert {r.data["reason"]: r.data["events"] for r in quarantined} == dict.fromkeys(
        tables.REASONS, 1
    )
    assert "days" not in metadata
    for node in ("tenant_usage", "agent_performance", "billing", "quota_status"):
        md = second.asset_materializations_for_node(f"usage__{node}")[0].metadata
        assert md["dagster/row_count"].value == 3 if node != "agent_performance" else 2
    performance = second.asset_materializations_for_node("usage__agent_performance")[0].metadata
    frame = _table(materialized["world"], tables.AGENT_PERFORMANCE)
    assert performance["error_rate"].value == round(frame["errors"].sum() / frame["calls"].sum(), 4)
    assert performance["worst_agent_error_rate"].value == round(frame["error_rate"].max(), 4)
    # Over every agent's calls: between the agents' own p95s.
    p95 = performance["latency_p95_ms"].value
    assert frame["latency_p95_ms"].min() - 0.1 <= p95 <= frame["latency_p95_ms"].max() + 0.1


def test_tenant_usage(materialized):
    frame = _table(materialized["world"], tables.TENANT_USAGE)
    assert _rows(frame, tables.TENANT_USAGE.column_names[1:]) == [
        # name, calls, errors, rate, in, out, tokens, agents, mean ms, calls mtd, tokens mtd
        ("alpha", "Alpha", 4, 1, 0.25, 400, 150, 550, 2, 150.0, 13, 1900),
        ("beta", "Beta", 2, 0, 0.0, 20, 20, 40, 1, 200.0, 4, 80),
        ("gamma", "Gamma", 25, 0, 0.0, 25_000, 25_000, 50_000, 1, 130.0, 25, 50_000),
    ]


def test_agent_performance_with_daily_and_month_to_date_percentiles(materialized):
    frame = _table(materialized["world"], tables.AGENT_PERFORMANCE).set_index("agent_id")
    r = usage_sketch.representative
    b = usage_sketch.bucket
    bot, coder = frame.loc["bot"], frame.loc["coder"]
    # bot: 100, 100, 100 (alpha), 200, 200 (beta); on Mar 2 nine at 100 and two at 200
    assert (bot["agent_name"], bot["provider"]) == ("Bot", "openai")
    assert (bot["calls"], bot["errors"], bot["timeouts"], bot["tenants"]) == (5, 0, 0, 2)
    assert (bot["tokens_in"], bot["tokens_out"], bot["latency_mean_ms"]) == (320, 170, 140.0)
    assert (bot["latency_p50_ms"], bot["latency_p95_ms"], bot["latency_p99_ms"]) == (
        r(b(100.0)),
        r(b(200.0)),
        r(b(200.0)),
    )
    assert (bot["calls_mtd"], bot["error_rate_mtd"]) == (16, 0.0)
    # month: twelve at 100, four at 200: p50 is the 8th, p95 the 16th
    assert (bot["latency_p50_ms_mtd"], bot["latency_p95_ms_mtd"]) == (r(b(100.0)), r(b(200.0)))
    # coder: 300 (alpha, error) and 10..250 (gamma): p50 13th = 130, p95 25th = 250, p99 300
    assert (coder["calls"], coder["errors"], coder["tenants"]) == (26, 1, 2)
    assert coder["error_rate"] == pytest.approx(1 / 26)
    assert coder["latency_mean_ms"] == pytest.approx(3550 / 26)
    assert (coder["tokens_in"], coder["tokens_out"]) == (25_100, 25_000)
    assert coder["latency_p50_ms"] == pytest.approx(130.0, rel=0.01)
    assert coder["latency_p95_ms"] == pytest.approx(250.0, rel=0.01)
    assert coder["latency_p99_ms"] == pytest.approx(300.0, rel=0.01)
    assert coder["latency_p99_ms_mtd"] == r(b(300.0))


def test_billing_prorates_the_plan_change_and_bills_overage(materialized):
    frame = _table(materialized["world"], tables.BILLING)
    assert _rows(frame, tables.BILLING.column_names[1:]) == [
        # plan, month, calls, tokens, calls/tokens mtd, included, overage, plan days, fees
        # alpha: basic Mar 1-2 (1.00 a day), pro Mar 3 (2.00): 4.00; 13 of 20 calls
        ("alpha", "pro", "2026-03", 4, 550, 13, 1900, 20, 100_000, 0, 0, 3, 4.0, 0.0, 4.0),
        # beta: basic Mar 1-3 (canceled at 15:00 on Mar 3): 3.00
        ("beta", "basic", "2026-03", 2, 40, 4, 80, 10, 10_000, 0, 0, 3, 3.0, 0.0, 3.0),
        # gamma: pro from Mar 3: 2.00, and 5 calls over 20 at 100.00 per 1k: 0.50
        ("gamma", "pro", "2026-03", 25, 50_000, 25, 50_000, 20, 100_000, 5, 0, 1, 2.0, 0.5, 2.5),
    ]


def test_quota_thresholds_are_reported_once_a_month(materialized):
    world = materialized["world"]
    previous = _table(world, tables.QUOTA_STATUS, crafted.PREVIOUS_DAY).set_index("tenant_id")
    # Mar 2: alpha at 9 of basic's 10 calls: 90%, crosses 80
    assert previous.loc["alpha", ["usage_pct", "level", "crossed"]].tolist() == [90.0, 80, 80]
    frame = _table(world, tables.QUOTA_STATUS)
    assert _rows(frame, tables.QUOTA_STATUS.column_names[1:]) == [
        # alpha upgraded: 13 of pro's 20 calls, 65%; 80 was reported on Mar 2, nothing new
        ("alpha", "pro", 13, 20, 65.0, 1900, 100_000, 1.9, 65.0, 0, None),
        ("beta", "basic", 4, 10, 40.0, 80, 10_000, 0.8, 40.0, 0, None),
        ("gamma", "pro", 25, 20, 125.0, 50_000, 100_000, 50.0, 125.0, 120, 120),
    ]


def test_subscription_metrics_see_the_new_the_churned_and_the_plan_change(materialized):
    frame = _table(materialized["world"], tables.SUBSCRIPTION_METRICS)
    assert _rows(frame, tables.SUBSCRIPTION_METRICS.column_names[1:]) == [
        # plan, name, active at start/end, new, churned, moved in/out, churn rate, MRR, ARPU
        ("basic", "Basic", 2, 0, 0, 1, 0, 1, 0.5, 0.0, None),
        ("pro", "Pro", 0, 2, 1, 0, 1, 0, None, 124.0, 62.0),
    ]


def test_rerunning_a_partition_changes_nothing(materialized):
    world, instance = materialized["world"], materialized["instance"]
    before = _snapshot(world)
    assert _run(world, instance, crafted.DAY).success
    assert _snapshot(world) == before


def test_the_late_event_is_picked_up_when_the_day_is_aggregated_again(materialized):
    world, instance = materialized["world"], materialized["instance"]
    crafted.insert_events(world["source"], [crafted.LATE_EVENT])
    result = _run(world, instance, crafted.DAY)
    assert _checks(result)["events_reconciled"] == (True, "ERROR")
    usage = _table(world, tables.TENANT_USAGE).set_index("tenant_id")
    assert usage.loc["beta", ["calls", "tokens", "calls_mtd"]].tolist() == [3, 60, 5]
    stats = _table(world, tables.EVENT_STATS)
    assert stats[["events", "late_deliveries"]].values.tolist() == [[38, 2]]
    assert _table(world, tables.BILLING).set_index("tenant_id").loc["beta", "calls_mtd"] == 5


def test_events_reconciled_fails_when_the_warehouse_lost_events(materialized):
    world, instance = materialized["world"], materialized["instance"]
    engine = sa.create_engine(world["warehouse"])
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM usage_event_rollup WHERE tenant_id = 'beta'"))
    engine.dispose()
    # The check on its own, as from the UI, for the day's partition.
    check = dg.materialize(
        USAGE,
        selection=dg.AssetSelection.checks(checks.events_reconciled),
        tags={"dagster/partition": crafted.DAY.isoformat()},
        instance=instance,
        resources=world["resources"],
        raise_on_error=False,
    )
    [evaluation] = check.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.description == (
        "2026-03-03: 35 events in the warehouse, 37 recorded by the extraction, "
        "37 distinct in the source"
    )


def test_a_run_over_a_range_writes_every_day(world):
    with dg.instance_for_test() as instance:
        defs = dg.Definitions(
            assets=USAGE[:6], asset_checks=USAGE[6:], jobs=[usage_job], resources=world["resources"]
        )
        result = defs.resolve_job_def("usage_job").execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2026-03-02",
                "dagster/asset_partition_range_end": "2026-03-03",
            },
        )
    assert result.success
    # Each day of the range carries its own figures, not the range's.
    events = {
        m.partition: m.metadata["events"].value
        for m in result.asset_materializations_for_node("usage__usage_events")
    }
    assert events == {"2026-03-02": 11, "2026-03-03": 37}
    # Every check judged each day of the range on that day's partition.
    judged = sorted((e.check_name, e.partition) for e in result.get_asset_check_evaluations())
    assert judged == [
        (name, day)
        for name in ("agent_error_rate", "events_reconciled", "quota_exceeded")
        for day in ("2026-03-02", "2026-03-03")
    ]
    stats = read(world["warehouse"], tables.EVENT_STATS, crafted.PREVIOUS_DAY, crafted.DAY)
    assert sorted(zip(stats["day"], stats["events"], strict=True)) == [
        (crafted.PREVIOUS_DAY, 11),
        (crafted.DAY, 37),
    ]
    usage = read(world["warehouse"], tables.TENANT_USAGE, crafted.DAY, crafted.DAY)
    assert usage.set_index("tenant_id").loc["alpha", "calls_mtd"] == 13


def _error_rate_world(tmp_path, policy: str | None = None) -> dict:
    """bot: 100 calls on Mar 5, 5 failed (5.0%); coder: 100 calls, 6 failed (6.0%)."""
    source, warehouse = f"sqlite:///{tmp_path / 'p.db'}", f"sqlite:///{tmp_path / 'w.db'}"
    crafted.build(source)
    day = datetime(2026, 3, 5, 8, 0)
    rows = []
    for agent, failed in (("bot", 5), ("coder", 6)):
        for i in range(100):
            status = "error" if i < failed - 1 else "timeout" if i == failed - 1 else "ok"
            at = day + timedelta(seconds=i)
            rows.append(("gw", f"{agent}-{i}", "alpha", agent, at, 50.0, status, 1, 1, at))
    crafted.insert_events(source, rows)
    path = None
    if policy is not None:
        path = tmp_path / "usage.yaml"
        path.write_text(policy)
    return {
        "resources": {
            "platform_db": DatabaseResource(url=source),
            "warehouse": WarehouseResource(url=warehouse),
            "policies": PoliciesResource(usage_policy_path=str(path) if path else None),
        }
    }


def _error_rate_check(world) -> dg.AssetCheckEvaluation:
    with dg.instance_for_test() as instance:
        result = _run(world, instance, date(2026, 3, 5))
    [evaluation] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "agent_error_rate"
    ]
    return evaluation


def test_high_error_rate_is_above_five_percent_with_enough_calls(tmp_path):
    evaluation = _error_rate_check(_error_rate_world(tmp_path))
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == "HighErrorRate coder on 2026-03-05: 6.0% of 100 calls failed"
    assert evaluation.metadata["agents_checked"].value == 2
    assert evaluation.metadata["threshold"].value == 0.05


def test_a_usage_policy_file_moves_the_error_rate_threshold(tmp_path):
    # 7%: coder's 6.0% is no longer an alert.
    evaluation = _error_rate_check(
        _error_rate_world(tmp_path, "max_error_rate: 0.07\nmin_calls: 100\n")
    )
    assert evaluation.passed
    assert evaluation.description == (
        "2026-03-05: 2 agent(s) with >= 100 calls, all at or under 7% errors"
    )
    assert evaluation.metadata["threshold"].value == 0.07


def test_gsv_usage_policy_binds_the_policy_file(monkeypatch, tmp_path):
    path = tmp_path / "usage.yaml"
    path.write_text("max_error_rate: 0.07\nmin_calls: 20\nquota_alert_pct: 120\n")
    monkeypatch.setenv("GSV_USAGE_POLICY", str(path))
    policies = load_defs().resources["policies"]
    assert policies.usage_policy_path == str(path)
    assert (policies.usage().max_error_rate, policies.usage().min_calls) == (0.07, 20)


def test_a_day_alerting_for_many_names_the_first_ten_and_counts_the_rest():
    alerts = [f"QuotaExceeded tenant-{i:03d}" for i in range(25)]
    assert checks.listed(alerts[:10], "quota_status") == "; ".join(alerts[:10])
    described = checks.listed(alerts, "quota_status")
    assert described.startswith("QuotaExceeded tenant-000; ")
    assert "tenant-009" in described and "tenant-010" not in described
    assert described.endswith("; and 15 more (table quota_status)")
