"""The warehouse tables of the `usage` group: one declaration per table, used for the DDL, the
DataFrame validation (pandera), the `dagster/column_schema` metadata and docs/usage.md.

Every table has a `day` column (the daily partition) first in its primary key: a partition is
overwritten by deleting its day and inserting the new rows, in one transaction.

No pandas, SQLAlchemy or Dagster here: the code location imports this at load time.
"""

from dataclasses import dataclass

STATUSES = ("ok", "error", "timeout")
REASONS = (
    "unknown_tenant",
    "unknown_agent",
    "unknown_status",
    "missing_latency",
    "latency_out_of_range",
    "negative_tokens",
)
QUOTA_THRESHOLDS = (80, 100, 120)
MAX_LATENCY_MS = 3_600_000  # an hour: anything longer is not a call's latency
# The REASONS rules in SQL over a delivery's columns, in order: the first one broken names it.
# Both extraction paths (PostgreSQL and SQLite) use this one text.
REASON_SQL = f"""CASE
        WHEN tenant_id NOT IN (SELECT tenant_id FROM tenants) THEN 'unknown_tenant'
        WHEN agent_id NOT IN (SELECT agent_id FROM agents) THEN 'unknown_agent'
        WHEN status NOT IN ({", ".join(f"'{s}'" for s in STATUSES)}) THEN 'unknown_status'
        WHEN latency_ms IS NULL THEN 'missing_latency'
        WHEN NOT (latency_ms >= 0 AND latency_ms <= {MAX_LATENCY_MS}) THEN 'latency_out_of_range'
        WHEN tokens_in < 0 OR tokens_out < 0 THEN 'negative_tokens'
    END"""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # date | text | int | float | money | timestamp
    description: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    isin: tuple | None = None


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _day() -> Column:
    return Column("day", "date", "the UTC day (the daily partition)")


def _count(name: str, description: str, minimum: int = 0) -> Column:
    return Column(name, "int", description, min=minimum)


def _rate(name: str, description: str, nullable: bool = False) -> Column:
    return Column(name, "float", description, nullable=nullable, min=0, max=1)


def _ms(name: str, description: str, nullable: bool = True) -> Column:
    return Column(name, "float", description, nullable=nullable, min=0)


def _money(name: str, description: str, nullable: bool = False) -> Column:
    return Column(name, "money", description, nullable=nullable, min=0)


EVENT_ROLLUP = Table(
    "usage_event_rollup",
    "The day's valid events, deduplicated, per tenant, agent and status.",
    ("day", "tenant_id", "agent_id", "status"),
    (
        _day(),
        Column("tenant_id", "text", "tenant"),
        Column("agent_id", "text", "agent"),
        Column("status", "text", "outcome of the call", isin=STATUSES),
        _count("events", "distinct events (first delivery of each)", 1),
        _count("tokens_in", "prompt tokens"),
        _count("tokens_out", "completion tokens"),
        _ms("latency_ms_sum", "sum of latencies (ms), for means", nullable=False),
    ),
)

LATENCY_SKETCH = Table(
    "usage_latency_sketch",
    "Per agent and day, valid events per latency bucket: a mergeable sketch (1% relative error).",
    ("day", "agent_id", "bucket"),
    (
        _day(),
        Column("agent_id", "text", "agent"),
        Column("bucket", "int", "log bucket: latency in (1.0202^(b-1), 1.0202^b] ms"),
        _count("events", "events in the bucket", 1),
    ),
)

QUARANTINE = Table(
    "usage_quarantine",
    "Events that failed validation: the first delivery as stored in the source, and why.",
    ("day", "source", "event_id"),
    (
        _day(),
        Column("source", "text", "delivering source"),
        Column("event_id", "text", "event id (unique per source)"),
        Column("tenant_id", "text", "tenant as delivered"),
        Column("agent_id", "text", "agent as delivered"),
        Column("occurred_at", "timestamp", "when the call happened (UTC)"),
        Column("received_at", "timestamp", "when the platform stored it (UTC)", nullable=True),
        Column("latency_ms", "float", "latency as delivered", nullable=True),
        Column("status", "text", "status as delivered"),
        Column("tokens_in", "int", "prompt tokens as delivered", nullable=True),
        Column("tokens_out", "int", "completion tokens as delivered", nullable=True),
        Column("reason", "text", "the first rule the event breaks", isin=REASONS),
    ),
)
# A quarantined delivery's columns as the source holds them (the table's, less day and reason).
DELIVERY_COLUMNS = tuple(QUARANTINE.column_names[1:-1])

EVENT_STATS = Table(
    "usage_event_stats",
    "What one extraction of a day saw in the source, for reconciliation and pipeline health.",
    ("day",),
    (
        _day(),
        _count("deliveries", "rows in the source window (occurred_at within the day)"),
        _count(
            "events",
            "distinct (source, event_id), counted apart from the aggregation: valid + quarantined",
        ),
        _count("duplicate_deliveries", "deliveries beyond the first of an event"),
        _count("valid_events", "events counted in the aggregates"),
        _count("quarantined_events", "events quarantined (usage_quarantine)"),
        _count("late_deliveries", "deliveries received after the day ended"),
        Column(
            "received_through",
            "timestamp",
            "latest received_at seen: later deliveries are for the next extraction of the day",
            nullable=True,
        ),
        Column("extracted_at", "timestamp", "when the extraction ran (UTC)"),
    ),
)

TENANT_USAGE = Table(
    "tenant_usage",
    "Per tenant and day: calls, errors, tokens, agents used, and month-to-date totals.",
    ("day", "tenant_id"),
    (
        _day(),
        Column("tenant_id", "text", "tenant"),
        Column("tenant_name", "text", "tenant's name"),
        _count("calls", "valid events of the day", 1),
        _count("errors", "calls with status error or timeout"),
        _rate("error_rate", "errors / calls"),
        _count("tokens_in", "prompt tokens"),
        _count("tokens_out", "completion tokens"),
        _count("tokens", "tokens_in + tokens_out"),
        _count("agents_used", "distinct agents called", 1),
        _ms("latency_mean_ms", "mean latency (ms)", nullable=False),
        _count("calls_mtd", "calls from the 1st of the month to this day", 1),
        _count("tokens_mtd", "tokens from the 1st of the month to this day"),
    ),
)

AGENT_PERFORMANCE = Table(
    "agent_performance",
    "Per agent and day: calls, error rate, latency percentiles, tokens; and month to date.",
    ("day", "agent_id"),
    (
        _day(),
        Column("agent_id", "text", "agent"),
        Column("agent_name", "text", "agent's name"),
        Column("provider", "text", "model provider"),
        _count("calls", "valid events of the day", 1),
        _count("errors", "calls with status error or timeout"),
        _count("timeouts", "calls with status timeout"),
        _rate("error_rate", "errors / calls"),
        _ms("latency_mean_ms", "mean latency (ms)", nullable=False),
        _ms("latency_p50_ms", "median latency (ms, sketch: within 1%)", nullable=False),
        _ms("latency_p95_ms", "95th percentile latency (ms, sketch: within 1%)", nullable=False),
        _ms("latency_p99_ms", "99th percentile latency (ms, sketch: within 1%)", nullable=False),
        _count("tokens_in", "prompt tokens"),
        _count("tokens_out", "completion tokens"),
        _count("tenants", "distinct tenants calling", 1),
        _count("calls_mtd", "calls from the 1st of the month to this day", 1),
        _rate("error_rate_mtd", "errors / calls, month to date"),
        _ms("latency_p50_ms_mtd", "median latency month to date (merged sketches)", False),
        _ms("latency_p95_ms_mtd", "95th percentile month to date (merged sketches)", False),
        _ms("latency_p99_ms_mtd", "99th percentile month to date (merged sketches)", False),
    ),
)

BILLING = Table(
    "billing",
    "Per tenant, month to date at each day: base fee (prorated by day and plan), usage beyond "
    "the plan's included calls and tokens, and the amount due so far.",
    ("day", "tenant_id"),
    (
        _day(),
        Column("tenant_id", "text", "tenant"),
        Column(
            "plan_id",
            "text",
            "plan billed: the latest plan this month (none: usage unbilled)",
            True,
        ),
        Column("month", "text", "billing month, YYYY-MM"),
        _count("calls", "calls of the day"),
        _count("tokens", "tokens of the day"),
        _count("calls_mtd", "calls month to date"),
        _count("tokens_mtd", "tokens month to date"),
        _count("included_calls", "calls included in the plan per month"),
        _count("included_tokens", "tokens included in the plan per month"),
        _count("overage_calls", "calls beyond the included ones"),
        _count("overage_tokens", "tokens beyond the included ones"),
        _count("plan_days", "days of the month so far with a subscription"),
        _money(
            "base_fee_mtd", "sum over the month's days so far of that day's price / days in month"
        ),
        _money("overage_fee_mtd", "overage calls and tokens at the plan's overage prices"),
        _money("amount_mtd", "base_fee_mtd + overage_fee_mtd"),
    ),
)

SUBSCRIPTION_METRICS = Table(
    "subscription_metrics",
    "Per plan and day: active subscriptions, new, churned and plan changes, churn rate, MRR, ARPU.",
    ("day", "plan_id"),
    (
        _day(),
        Column("plan_id", "text", "plan"),
        Column("plan_name", "text", "plan's name"),
        _count("active_start", "subscriptions active when the day began"),
        _count("active", "subscriptions active when the day ended"),
        _count("new", "started this day by a tenant with no other subscription (new customer)"),
        _count("churned", "ended this day leaving the tenant with no subscription"),
        _count("moved_in", "started this day by a tenant coming from another plan"),
        _count("moved_out", "ended this day by a tenant moving to another plan"),
        _rate("churn_rate", "churned / active_start (none without active_start)", nullable=True),
        _money("mrr", "monthly recurring revenue: monthly prices of the active subscriptions"),
        _money("arpu", "mrr / active (none without active subscriptions)", nullable=True),
    ),
)

QUOTA_STATUS = Table(
    "quota_status",
    "Per tenant with a plan: month-to-date calls and tokens against the plan's included amounts; "
    "the 80/100/120% thresholds, each reported on the one day it is first crossed in the month.",
    ("day", "tenant_id"),
    (
        _day(),
        Column("tenant_id", "text", "tenant"),
        Column("plan_id", "text", "plan that day"),
        _count("calls_mtd", "calls month to date"),
        _count("included_calls", "calls included per month"),
        Column("calls_pct", "float", "calls_mtd / included_calls, %", nullable=True, min=0),
        _count("tokens_mtd", "tokens month to date"),
        _count("included_tokens", "tokens included per month"),
        Column("tokens_pct", "float", "tokens_mtd / included_tokens, %", nullable=True, min=0),
        Column("usage_pct", "float", "the larger of calls_pct and tokens_pct (0: neither)", min=0),
        Column("level", "int", "highest threshold reached (0: none)", isin=(0, *QUOTA_THRESHOLDS)),
        Column(
            "crossed",
            "int",
            "highest threshold first crossed this day in the month (none: nothing new)",
            nullable=True,
            isin=QUOTA_THRESHOLDS,
        ),
    ),
)

EVENT_TABLES = (EVENT_ROLLUP, LATENCY_SKETCH, QUARANTINE, EVENT_STATS)
AGGREGATE_TABLES = (TENANT_USAGE, AGENT_PERFORMANCE, BILLING, SUBSCRIPTION_METRICS, QUOTA_STATUS)
ALL_TABLES = EVENT_TABLES + AGGREGATE_TABLES
