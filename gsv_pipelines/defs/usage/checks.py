"""Checks beside the usage assets, per day: reconciliation of the warehouse with the source's
count, and the two usage alerts (thresholds from the usage policy, PoliciesResource.usage()).

In an asset's run they judge that run's days (a partition, or the schedule's range), each day on
its own partition; run on their own they judge the last partition. HighErrorRate and
QuotaExceeded are alerts about the platform, not failures of the pipeline: they fail with
severity WARN and do not block anything; the alerts domain sends them as warnings
(check_failure_alert_sensor, routed by the alerts policy).
"""

from datetime import date

import dagster as dg

from gsv_pipelines.defs.partitioned_checks import partitioned_asset_check, per_partition
from gsv_pipelines.defs.usage.assets import agent_performance, quota_status, usage_events
from gsv_pipelines.defs.usage.partitions import DAILY
from gsv_pipelines.lib.usage import tables
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.warehouse import WarehouseResource

EVENTS_RECONCILED = "events_reconciled"
AGENT_ERROR_RATE = "agent_error_rate"
QUOTA_EXCEEDED = "quota_exceeded"
# Alerts named in a check's description; the rest are counted (every one is in its table).
LISTED_ALERTS = 10


def listed(alerts: list[str], table: str, limit: int = LISTED_ALERTS) -> str:
    """The first `limit` alerts, then how many more (a bad day can alert for every tenant)."""
    if len(alerts) <= limit:
        return "; ".join(alerts)
    return "; ".join(alerts[:limit]) + f"; and {len(alerts) - limit} more (table {table})"


def run_days(context: dg.AssetCheckExecutionContext) -> list[date]:
    """The days the run covers: its partition, its partition range, or the last partition."""
    tags = context.run.tags
    if tags.get("dagster/partition"):
        return [date.fromisoformat(tags["dagster/partition"])]
    first = tags.get("dagster/asset_partition_range_start")
    last = tags.get("dagster/asset_partition_range_end")
    if first and last:
        keys = DAILY.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    else:
        keys = [k for k in [DAILY.get_last_partition_key()] if k]
    return [date.fromisoformat(k) for k in keys]


def _judge_days(context, warehouse: WarehouseResource, table, judge, policy) -> dict:
    """`judge(day, rows, policy)` for each of the run's days, over one read of `table` for all
    of them (rows: the day's, None when it has none)."""
    days = run_days(context)
    frame = warehouse.read(table, min(days), max(days)) if days else None
    results = {}
    for day in days:
        rows = frame[frame["day"] == day] if frame is not None and not frame.empty else None
        results[day.isoformat()] = judge(day, rows, policy)
    return results


@partitioned_asset_check(
    asset=usage_events,
    partitions_def=DAILY,
    name=EVENTS_RECONCILED,
    blocking=True,
    description="Events counted in the warehouse (valid in usage_event_rollup + quarantined) "
    "equal the events the extraction aggregated and the distinct (source, event_id) it counted "
    "in the source apart from the aggregation (PostgreSQL: from the events' keys; SQLite: a "
    "DISTINCT count), in the same snapshot: nothing double-counted, nothing lost.",
)
def events_reconciled(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    yield from per_partition(
        context, {day.isoformat(): _reconciled(warehouse, day) for day in run_days(context)}
    )


def _reconciled(warehouse: WarehouseResource, day: date) -> dg.AssetCheckResult:
    stats = warehouse.read(tables.EVENT_STATS, day, day)
    if stats.empty:
        return dg.AssetCheckResult(passed=False, description=f"{day}: no extraction recorded")
    rollup = warehouse.read(tables.EVENT_ROLLUP, day, day)
    quarantine = warehouse.read(tables.QUARANTINE, day, day)
    counted = int(rollup["events"].sum()) + len(quarantine)
    row = stats.iloc[0]
    recorded = int(row["valid_events"]) + int(row["quarantined_events"])
    source = int(row["events"])
    passed = counted == recorded == source
    return dg.AssetCheckResult(
        passed=passed,
        description=f"{day}: {counted} events counted = distinct events in the source"
        if passed
        else f"{day}: {counted} events in the warehouse, {recorded} recorded by the "
        f"extraction, {source} distinct in the source",
        metadata={
            "events_counted": dg.MetadataValue.int(counted),
            "source_distinct_events": dg.MetadataValue.int(source),
        },
    )


@partitioned_asset_check(
    asset=agent_performance,
    partitions_def=DAILY,
    name=AGENT_ERROR_RATE,
    description="HighErrorRate: no agent fails (error or timeout) more than the usage policy's "
    "max_error_rate (5%) of its calls in a day, counting agents with at least min_calls (100); "
    "the policy is GSV_USAGE_POLICY's file, else gsv_pipelines/policies/usage.yaml.",
)
def agent_error_rate(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    policies: PoliciesResource,
):
    policy = policies.usage()
    judged = _judge_days(context, warehouse, tables.AGENT_PERFORMANCE, _error_rates, policy)
    yield from per_partition(context, judged)


def _error_rates(day: date, frame, policy) -> dg.AssetCheckResult:
    if frame is None or frame.empty:
        return dg.AssetCheckResult(passed=True, description=f"{day}: no agent calls")
    eligible = frame[frame["calls"] >= policy.min_calls]
    high = eligible[eligible["error_rate"] > policy.max_error_rate]
    alerts = [
        f"HighErrorRate {r.agent_id} on {r.day}: {r.error_rate:.1%} of {r.calls} calls failed"
        for r in high.sort_values("agent_id").itertuples()
    ]
    return dg.AssetCheckResult(
        passed=not alerts,
        severity=dg.AssetCheckSeverity.WARN,
        description=listed(alerts, tables.AGENT_PERFORMANCE.name)
        or f"{day}: {len(eligible)} agent(s) with >= {policy.min_calls} calls, all at or under "
        f"{policy.max_error_rate:.0%} errors",
        metadata={
            "agents_checked": dg.MetadataValue.int(len(eligible)),
            "agents_over": dg.MetadataValue.int(len(high)),
            "max_error_rate": dg.MetadataValue.float(
                round(float(eligible["error_rate"].max()), 4) if len(eligible) else 0.0
            ),
            "threshold": dg.MetadataValue.float(policy.max_error_rate),
        },
    )


@partitioned_asset_check(
    asset=quota_status,
    partitions_def=DAILY,
    name=QUOTA_EXCEEDED,
    description="QuotaExceeded: no tenant first reaches the usage policy's quota_alert_pct "
    "(100%) of its plan's included calls or tokens this month on the day (each threshold "
    "alerts once a month, on the day it is crossed); the policy is GSV_USAGE_POLICY's file, "
    "else gsv_pipelines/policies/usage.yaml.",
)
def quota_exceeded(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    policies: PoliciesResource,
):
    policy = policies.usage()
    judged = _judge_days(context, warehouse, tables.QUOTA_STATUS, _quotas, policy)
    yield from per_partition(context, judged)


def _quotas(day: date, frame, policy) -> dg.AssetCheckResult:
    if frame is None or frame.empty:
        return dg.AssetCheckResult(passed=True, description=f"{day}: no tenant with a plan")
    crossed = frame[frame["crossed"].notna() & (frame["crossed"] >= policy.quota_alert_pct)]
    alerts = [
        f"QuotaExceeded {r.tenant_id} ({r.plan_id}) on {r.day}: {r.usage_pct:.1f}% of the "
        f"included usage, crossed {int(r.crossed)}%"
        for r in crossed.sort_values("tenant_id").itertuples()
    ]
    over = frame[frame["level"] >= policy.quota_alert_pct]
    return dg.AssetCheckResult(
        passed=not alerts,
        severity=dg.AssetCheckSeverity.WARN,
        description=listed(alerts, tables.QUOTA_STATUS.name)
        or f"{day}: no tenant newly at or over {policy.quota_alert_pct}% "
        f"({over['tenant_id'].nunique()} already over this month)",
        metadata={
            "tenants_checked": dg.MetadataValue.int(int(frame["tenant_id"].nunique())),
            "newly_over_quota": dg.MetadataValue.int(len(crossed)),
            "over_quota": dg.MetadataValue.int(int(over["tenant_id"].nunique())),
        },
    )
