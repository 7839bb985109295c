"""The `usage` group: per-tenant usage, billing, subscriptions, agent performance and quotas.

The platform database (GSV_PLATFORM_DB_URL) is the source: the shared source asset
backups/platform_database (defs/sources.py), so lineage starts there; each asset's
`source_tables` names the tables it reads. usage/usage_events deduplicates, validates and rolls
up each day's events (PostgreSQL: one parallel packing scan folded by numpy, duplicates and
invalid deliveries read back by ctid; SQLite: one SQL query); the five aggregates are pandas over
those rollups, read back from the warehouse, and the reference tables they need.
Everything lands in the warehouse (GSV_WAREHOUSE_URL), one day per partition, overwritten in one
transaction. A run may cover a range of days (the schedule's late-event lookback): each asset then
writes every day of the range, each in its own transaction, oldest first.
"""

import warnings
from datetime import date

import dagster as dg

from gsv_pipelines.defs.sources import platform_database
from gsv_pipelines.defs.usage.partitions import DAILY
from gsv_pipelines.lib.core import pod_sizes
from gsv_pipelines.lib.usage import tables
from gsv_pipelines.resources.storage import DatabaseResource
from gsv_pipelines.resources.warehouse import WarehouseResource

OWNERS = ["team:platform"]
TAGS = {"gsv/domain": "usage"}
# Month-to-date figures of a day read the rollups of up to 30 days before it: a backfill runs a
# day's aggregates once those days' usage_events are done. The first month's days reach before the
# partitions' start: allowed (a beta parameter, accepted knowingly).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    MONTH_TO_DATE = dg.TimeWindowPartitionMapping(
        start_offset=-30, allow_nonexistent_upstream_partitions=True
    )
_TYPES = {
    "date": "date",
    "text": "string",
    "int": "int",
    "float": "float",
    "money": "decimal(14,2)",
    "timestamp": "timestamp",
}


def column_schema(table: tables.Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                _TYPES[c.type],
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in table.columns
        ]
    )


def _table_metadata(table: tables.Table, *source_tables: str) -> dict:
    """The table the asset writes, and the platform database's tables it reads."""
    return {
        "dagster/column_schema": column_schema(table),
        "dagster/table_name": table.name,
        "source_tables": ", ".join(source_tables),
    }


def _days(context: dg.AssetExecutionContext) -> list[date]:
    return [date.fromisoformat(key) for key in context.partition_keys]


def _table(counts: dict[str, int], label: str) -> dg.MetadataValue:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(label, "string"), dg.TableColumn("events", "int")]
    )
    records = [dg.TableRecord({label: k, "events": int(v)}) for k, v in sorted(counts.items())]
    return dg.MetadataValue.table(records=records, schema=schema)


@dg.asset(
    key=["usage", "usage_events"],
    group_name="usage",
    partitions_def=DAILY,
    deps=[platform_database],
    owners=OWNERS,
    kinds={"postgres", "sql", "pandas"},
    tags=TAGS,
    op_tags=pod_sizes.USAGE_EXTRACT,
    metadata=_table_metadata(tables.EVENT_ROLLUP, "usage_events", "tenants", "agents"),
)
def usage_events(
    context: dg.AssetExecutionContext, platform_db: DatabaseResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """The day's usage events: deduplicated on (source, event_id), validated, rolled up.

    Of an event's deliveries the first received counts. An event that breaks a rule (unknown
    tenant, agent or status; missing or out-of-range latency; negative tokens) is quarantined in
    `usage_quarantine` with the first rule it breaks, and counted apart: never dropped silently.
    Valid events go to `usage_event_rollup` (per tenant, agent, status) and `usage_latency_sketch`
    (per agent, mergeable latency buckets); `usage_event_stats` records what the source held,
    including its distinct events counted apart from the aggregation (for events_reconciled).
    On PostgreSQL one parallel scan packs each delivery into 34 bytes that numpy folds as they
    stream; only duplicates and invalid deliveries are read back as rows
    (gsv_pipelines/lib/usage/pg.py).
    """
    import pandas as pd

    from gsv_pipelines.lib.usage import extract as usage_extract

    for day in _days(context):
        extract = usage_extract.extract_day(platform_db.url, day)
        stats = pd.DataFrame([{"day": day, **extract.stats}])
        rows = warehouse.write_partition(
            day,
            {
                tables.EVENT_ROLLUP: extract.rollup,
                tables.LATENCY_SKETCH: extract.sketch,
                tables.QUARANTINE: extract.quarantine,
                tables.EVENT_STATS: stats,
            },
        )
        counts = {k: v for k, v in extract.stats.items() if isinstance(v, int)}
        context.add_asset_metadata(
            {
                # The events counted: the asset is the day's events, whatever its tables hold.
                "dagster/row_count": dg.MetadataValue.int(counts["valid_events"]),
                **{name: dg.MetadataValue.int(value) for name, value in sorted(counts.items())},
                "quarantined_by_reason": _table(extract.quarantined_by_reason, "reason"),
                "rollup_rows": dg.MetadataValue.int(rows[tables.EVENT_ROLLUP.name]),
                "sketch_rows": dg.MetadataValue.int(rows[tables.LATENCY_SKETCH.name]),
                "extract_seconds": dg.MetadataValue.float(round(extract.seconds, 3)),
            },
            partition_key=day.isoformat(),
        )
        context.log.info(
            f"{day}: {counts['deliveries']} deliveries, {counts['events']} events "
            f"({counts['duplicate_deliveries']} duplicate deliveries), "
            f"{counts['valid_events']} valid, {counts['late_deliveries']} late deliveries"
        )
        if extract.quarantined_by_reason:
            context.log.warning(
                f"{day}: {counts['quarantined_events']} events quarantined in usage_quarantine: "
                + ", ".join(f"{k} {v}" for k, v in extract.quarantined_by_reason.items())
            )
    # Each day's figures on that day's partition (a range run materializes every day of it).
    return dg.MaterializeResult()


def _aggregate(
    context: dg.AssetExecutionContext,
    platform_db: DatabaseResource,
    warehouse: WarehouseResource,
    table: tables.Table,
    compute,
    reference_tables: tuple[str, ...],
    figures=None,
) -> dg.MaterializeResult:
    """Compute `table` for each day of the run and write it; each day's figures (`figures(day,
    frame)`, default the table's sums) on that day's partition."""
    from gsv_pipelines.lib.usage import extract as usage_extract

    reference = usage_extract.read_reference(platform_db.url, reference_tables)
    for day in _days(context):
        frame = compute(day, reference)
        rows = warehouse.write_partition(day, {table: frame})
        context.add_asset_metadata(
            {
                "dagster/row_count": dg.MetadataValue.int(rows[table.name]),
                **(figures(day, frame) if figures else _figures(table, frame)),
            },
            partition_key=day.isoformat(),
        )
        context.log.info(f"{day}: {len(frame)} rows in {table.name}")
    return dg.MaterializeResult()


def _figures(table: tables.Table, frame) -> dict:
    """A few figures of the day, for the UI's plots: sums over the table's rows."""
    if frame.empty:
        return {}
    sums = {
        tables.TENANT_USAGE.name: ("calls", "tokens", "errors"),
        tables.AGENT_PERFORMANCE.name: ("calls", "errors"),
        tables.BILLING.name: ("amount_mtd", "overage_fee_mtd"),
        tables.SUBSCRIPTION_METRICS.name: ("active", "new", "churned", "mrr"),
        tables.QUOTA_STATUS.name: (),
    }[table.name]
    figures = {}
    for column in sums:
        value = frame[column].sum()
        figures[column] = (
            dg.MetadataValue.float(round(float(value), 2))
            if frame[column].dtype.kind == "f"
            else dg.MetadataValue.int(int(value))
        )
    if table is tables.QUOTA_STATUS:
        figures["tenants_over_quota"] = dg.MetadataValue.int(int((frame["level"] >= 100).sum()))
        figures["thresholds_crossed"] = dg.MetadataValue.int(int(frame["crossed"].notna().sum()))
    return figures


def _month_rollup(warehouse: WarehouseResource, day: date):
    from gsv_pipelines.lib.usage.metrics import month_start

    return warehouse.read(tables.EVENT_ROLLUP, month_start(day), day)


_PLANS = ("plans", "subscriptions")
_USAGE_DEP = dg.AssetDep(["usage", "usage_events"], partition_mapping=MONTH_TO_DATE)


def _aggregate_asset(table: tables.Table, *deps, source_tables: tuple[str, ...]):
    """The decorator of an aggregate: a daily usage asset writing `table`, keyed by its name,
    reading `source_tables` of the platform database."""
    return dg.asset(
        key_prefix="usage",
        group_name="usage",
        partitions_def=DAILY,
        deps=[*deps, platform_database],
        owners=OWNERS,
        kinds={"pandas", "postgres"},
        tags=TAGS,
        metadata=_table_metadata(table, *source_tables),
    )


@_aggregate_asset(tables.TENANT_USAGE, _USAGE_DEP, source_tables=("tenants",))
def tenant_usage(
    context: dg.AssetExecutionContext, platform_db: DatabaseResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per tenant and day: calls, errors and error rate, tokens in and out, agents used, mean
    latency, and calls and tokens month to date (table `tenant_usage`)."""
    from gsv_pipelines.lib.usage import metrics as usage_metrics

    def compute(day, reference):
        return usage_metrics.tenant_usage(day, _month_rollup(warehouse, day), reference["tenants"])

    return _aggregate(context, platform_db, warehouse, tables.TENANT_USAGE, compute, ("tenants",))


@_aggregate_asset(tables.AGENT_PERFORMANCE, _USAGE_DEP, source_tables=("agents",))
def agent_performance(
    context: dg.AssetExecutionContext, platform_db: DatabaseResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per agent and day: calls, errors, timeouts, error rate, mean and p50/p95/p99 latency,
    tokens, tenants; month to date: calls, error rate and p50/p95/p99 from the merged daily
    latency sketches (no raw event is re-read; within 1% of the exact percentile). Table
    `agent_performance`."""
    from gsv_pipelines.lib.usage import metrics as usage_metrics

    def compute(day, reference):
        sketch = warehouse.read(tables.LATENCY_SKETCH, usage_metrics.month_start(day), day)
        return usage_metrics.agent_performance(
            day, _month_rollup(warehouse, day), sketch, reference["agents"]
        )

    def figures(day, frame) -> dict:
        """The day's error rate and latency percentiles over every agent's calls (the merged
        sketches), and the worst agent's: what the agent-performance plots show."""
        if frame.empty:
            return {}
        sketch = warehouse.read(tables.LATENCY_SKETCH, day, day)
        overall = usage_metrics.day_latency(sketch)
        calls, errors = int(frame["calls"].sum()), int(frame["errors"].sum())
        return {
            **_figures(tables.AGENT_PERFORMANCE, frame),
            "error_rate": dg.MetadataValue.float(round(errors / calls, 4)),
            **{
                f"latency_{name}_ms": dg.MetadataValue.float(round(value, 1))
                for name, value in overall.items()
            },
            "worst_agent_error_rate": dg.MetadataValue.float(
                round(float(frame["error_rate"].max()), 4)
            ),
            "worst_agent_latency_p95_ms": dg.MetadataValue.float(
                round(float(frame["latency_p95_ms"].max()), 1)
            ),
        }

    return _aggregate(
        context, platform_db, warehouse, tables.AGENT_PERFORMANCE, compute, ("agents",), figures
    )


@_aggregate_asset(tables.BILLING, _USAGE_DEP, source_tables=_PLANS)
def billing(
    context: dg.AssetExecutionContext, platform_db: DatabaseResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per tenant, month to date at each day: base fee prorated by day and plan, calls and tokens
    beyond the plan's included amounts at its overage prices, amount due so far (table
    `billing`). A mid-month plan change bills each day at that day's plan; the whole month's
    usage counts against the latest plan's allowance."""
    from gsv_pipelines.lib.usage import metrics as usage_metrics

    def compute(day, reference):
        return usage_metrics.billing(
            day, _month_rollup(warehouse, day), reference["subscriptions"], reference["plans"]
        )

    return _aggregate(context, platform_db, warehouse, tables.BILLING, compute, _PLANS)


@_aggregate_asset(tables.SUBSCRIPTION_METRICS, source_tables=_PLANS)
def subscription_metrics(
    context: dg.AssetExecutionContext, platform_db: DatabaseResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per plan and day: active subscriptions at the day's start and end, new customers, churned
    ones, moves between plans, churn rate (churned / active at start), MRR and ARPU (table
    `subscription_metrics`)."""
    from gsv_pipelines.lib.usage import metrics as usage_metrics

    def compute(day, reference):
        return usage_metrics.subscription_metrics(
            day, reference["subscriptions"], reference["plans"]
        )

    return _aggregate(context, platform_db, warehouse, tables.SUBSCRIPTION_METRICS, compute, _PLANS)


@_aggregate_asset(tables.QUOTA_STATUS, _USAGE_DEP, source_tables=_PLANS)
def quota_status(
    context: dg.AssetExecutionContext, platform_db: DatabaseResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per tenant with a plan: calls and tokens month to date against the plan's included
    amounts, the highest of the 80/100/120% thresholds reached, and the threshold first crossed
    that day, so each is reported once a month (table `quota_status`)."""
    from gsv_pipelines.lib.usage import metrics as usage_metrics

    def compute(day, reference):
        return usage_metrics.quota_status(
            day, _month_rollup(warehouse, day), reference["subscriptions"], reference["plans"]
        )

    return _aggregate(context, platform_db, warehouse, tables.QUOTA_STATUS, compute, _PLANS)
