"""One day of usage events, deduplicated, validated and aggregated next to the events.

An event is (source, event_id); of its deliveries the first received counts (ties: the smallest
row). Validation then applies the REASONS rules in order to that delivery; an event that breaks
one is quarantined with the first rule it breaks, and counted apart, never dropped.

The result: per (tenant, agent, status) the valid events, tokens and latency sum; per (agent,
latency bucket) the sketch counts; the quarantined events row by row (few); the counts the
events_reconciled check compares. PostgreSQL: gsv_pipelines.lib.usage.pg (one parallel scan packs
every delivery, numpy folds them, duplicates and invalid deliveries are read back; one snapshot).
SQLite, the embedded default: one SQL query (_SQLITE) with the same semantics; the tests hold both
to the same hand-computed results.

`events` in the stats is counted apart from the aggregation (PostgreSQL: its own partitioning of
the deliveries read back; SQLite: a DISTINCT count in the same transaction): the events_reconciled
check holds what reached the warehouse to it.
"""

import functools
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from gsv_pipelines.lib.usage import pg as usage_pg
from gsv_pipelines.lib.usage import sketch as usage_sketch
from gsv_pipelines.lib.usage.tables import DELIVERY_COLUMNS, REASON_SQL

_SQLITE = f"""
WITH ranked AS (
    SELECT source, event_id, tenant_id, agent_id, occurred_at, latency_ms, status,
           tokens_in, tokens_out, coalesce(received_at, occurred_at) AS received_at,
           row_number() OVER (
               PARTITION BY source, event_id
               ORDER BY coalesce(received_at, occurred_at), tenant_id, agent_id, status,
                        latency_ms, tokens_in, tokens_out
           ) AS delivery
    FROM usage_events
    WHERE occurred_at >= :start AND occurred_at < :end
), classified AS MATERIALIZED (
    SELECT *, {REASON_SQL} AS reason FROM ranked WHERE delivery = 1
)
SELECT 0 AS is_sketch, tenant_id, agent_id, status, reason, NULL AS bucket,
       count(*) AS events,
       sum(coalesce(tokens_in, 0)) AS tokens_in,
       sum(coalesce(tokens_out, 0)) AS tokens_out,
       sum(latency_ms) FILTER (WHERE reason IS NULL) AS latency_ms_sum,
       json_group_array(json_array({", ".join(DELIVERY_COLUMNS)})) FILTER (WHERE reason IS NOT NULL)
           AS bad
FROM classified
GROUP BY tenant_id, agent_id, status, reason
UNION ALL
SELECT 1, NULL, agent_id, NULL, NULL, gsv_latency_bucket(latency_ms), count(*), 0, 0, NULL, NULL
FROM classified
WHERE reason IS NULL
GROUP BY agent_id, gsv_latency_bucket(latency_ms)
"""

_STATS = """
SELECT count(*) AS deliveries,
       sum(CASE WHEN coalesce(received_at, occurred_at) >= :end THEN 1 ELSE 0 END) AS late,
       max(coalesce(received_at, occurred_at)) AS received_through
FROM usage_events
WHERE occurred_at >= :start AND occurred_at < :end
"""

# Distinct events in the window, counted from their keys alone.
_DISTINCT = """
SELECT count(*) FROM (
    SELECT DISTINCT source, event_id FROM usage_events
    WHERE occurred_at >= :start AND occurred_at < :end
) AS events
"""


class UsageSourceError(RuntimeError):
    """The platform database cannot be read as the usage source."""


@dataclass
class DayExtract:
    day: date
    rollup: pd.DataFrame  # day, tenant_id, agent_id, status, events, tokens_in, tokens_out, ...
    sketch: pd.DataFrame  # day, agent_id, bucket, events
    quarantine: pd.DataFrame  # day, DELIVERY_COLUMNS..., reason
    stats: dict
    seconds: float

    @property
    def quarantined_by_reason(self) -> dict[str, int]:
        return self.quarantine["reason"].value_counts().sort_index().to_dict()


@functools.cache
def source_engine(url: str) -> sa.Engine:
    """The engine on a platform database, one per process (NullPool: it holds no connection
    between uses); on SQLite with the bucket function registered."""
    engine = sa.create_engine(url, poolclass=NullPool)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _functions(dbapi_connection, _record):
            dbapi_connection.create_function(
                "gsv_latency_bucket",
                1,
                lambda x: None if x is None else usage_sketch.bucket(x),
                deterministic=True,
            )

    return engine


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time())
    return start, start + timedelta(days=1)


def _params(engine: sa.Engine, start: datetime, end: datetime) -> dict:
    if engine.dialect.name == "sqlite":
        # Timestamps are text in SQLite: compare in the simulator's and SQLAlchemy's format.
        return {"start": start.isoformat(sep=" "), "end": end.isoformat(sep=" ")}
    return {"start": start, "end": end}


def extract_day(
    url: str, day: date, work_mem: str = "256MB", workers: int = usage_pg.PACK_WORKERS
) -> DayExtract:
    """Deduplicate, validate and aggregate the events that occurred on `day` (UTC)."""
    started = datetime.now(UTC)
    engine = source_engine(url)
    start, end = day_bounds(day)
    params = _params(engine, start, end)
    try:
        if engine.dialect.name == "postgresql":
            stats, rollup, sketch, quarantine = _extract_postgres(engine, params, work_mem, workers)
        elif engine.dialect.name == "sqlite":
            stats, rollup, sketch, quarantine = _extract_sqlite(engine, params)
        else:
            raise UsageSourceError(f"no usage extraction for {engine.dialect.name} databases")
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        raise _source_error(engine, day, exc.orig) from None
    except engine.dialect.loaded_dbapi.Error as exc:  # from the PostgreSQL path's own cursors
        raise _source_error(engine, day, exc) from None
    return _assemble(day, stats, rollup, sketch, quarantine, started)


def _source_error(engine: sa.Engine, day: date, error: Exception) -> UsageSourceError:
    if isinstance(error, engine.dialect.loaded_dbapi.ProgrammingError):
        return UsageSourceError(
            f"the platform database lacks the usage schema "
            f"(gsv_pipelines/sql/platform_schema.sql): {error}"
        )
    return UsageSourceError(f"cannot read usage events for {day}: {error}")


def _extract_postgres(engine, params, work_mem, workers):
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            # One snapshot for every statement: one instant for all counts.
            return usage_pg.extract(conn, params, work_mem, workers)


def _extract_sqlite(engine, params):
    with engine.connect() as conn, conn.begin():
        stats = dict(conn.execute(sa.text(_STATS), params).mappings().one())
        stats["events"] = conn.execute(sa.text(_DISTINCT), params).scalar_one()
        rows = conn.execute(sa.text(_SQLITE), params).all()
    frame = pd.DataFrame(
        rows,
        columns=[
            "is_sketch",
            "tenant_id",
            "agent_id",
            "status",
            "reason",
            "bucket",
            "events",
            "tokens_in",
            "tokens_out",
            "latency_ms_sum",
            "bad",
        ],
    )
    groups = frame[frame["is_sketch"] == 0]
    rollup = groups[groups["reason"].isna()]
    sketch = frame[frame["is_sketch"] == 1]
    quarantine = [
        (*row, reason)
        for reason, bad in zip(groups["reason"], groups["bad"], strict=True)
        if reason is not None
        for row in json.loads(bad)
    ]
    return stats, rollup, sketch, quarantine


def _assemble(day, stats, rollup, sketch, quarantine_rows, started) -> DayExtract:
    rollup = (
        rollup.groupby(["tenant_id", "agent_id", "status"], as_index=False)[
            ["events", "tokens_in", "tokens_out", "latency_ms_sum"]
        ]
        .sum()
        .astype({"events": "int64", "tokens_in": "int64", "tokens_out": "int64"})
        .astype({"latency_ms_sum": "float64"})
    )
    rollup.insert(0, "day", day)
    sketch = (
        sketch.groupby(["agent_id", "bucket"], as_index=False)["events"]
        .sum()
        .astype({"bucket": "int64", "events": "int64"})
    )
    sketch.insert(0, "day", day)
    quarantine = _quarantine(day, quarantine_rows)
    finished = datetime.now(UTC)
    received_through = stats["received_through"]
    if isinstance(received_through, str):
        received_through = datetime.fromisoformat(received_through)
    deliveries, events = int(stats["deliveries"]), int(stats["events"])
    summary = {
        "deliveries": deliveries,
        "events": events,
        "duplicate_deliveries": deliveries - events,
        "valid_events": int(rollup["events"].sum()),
        "quarantined_events": len(quarantine),
        "late_deliveries": int(stats["late"] or 0),
        "received_through": received_through,
        "extracted_at": finished.replace(tzinfo=None),
    }
    return DayExtract(
        day=day,
        rollup=rollup,
        sketch=sketch,
        quarantine=quarantine,
        stats=summary,
        seconds=(finished - started).total_seconds(),
    )


def _quarantine(day: date, rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[*DELIVERY_COLUMNS, "reason"])
    for column in ("occurred_at", "received_at"):
        frame[column] = pd.to_datetime(
            frame[column].map(lambda v: v if isinstance(v, str) or v is None else v.isoformat()),
            format="ISO8601",
        ).astype("datetime64[us]")
    frame["latency_ms"] = pd.to_numeric(frame["latency_ms"], errors="coerce").astype("float64")
    for column in ("tokens_in", "tokens_out"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in ("source", "event_id", "tenant_id", "agent_id", "status", "reason"):
        frame[column] = frame[column].astype("str")
    frame.insert(0, "day", day)
    return frame.sort_values(["source", "event_id"], ignore_index=True)


REFERENCE_TABLES = ("tenants", "agents", "plans", "subscriptions")


def read_reference(url: str, names=REFERENCE_TABLES) -> dict[str, pd.DataFrame]:
    """The platform's reference tables among tenants, agents, plans and subscriptions (small
    tables), typed."""
    try:
        with source_engine(url).connect() as conn:
            frames = {name: pd.read_sql(sa.text(f"SELECT * FROM {name}"), conn) for name in names}
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        raise UsageSourceError(f"cannot read the platform's reference tables: {exc.orig}") from None
    if "subscriptions" in frames:
        subscriptions = frames["subscriptions"]
        for column in ("started_at", "ended_at"):
            subscriptions[column] = pd.to_datetime(subscriptions[column], format="ISO8601")
    if "plans" in frames:
        plans = frames["plans"]
        for column in ("monthly_price", "overage_per_1k_calls", "overage_per_1m_tokens"):
            plans[column] = plans[column].astype(float)
        for column in ("included_calls", "included_tokens"):
            plans[column] = plans[column].astype("int64")
    return frames
