"""The usage aggregates of one day, from the day's rollup, the month's rollups and the platform's
reference tables. Pure pandas: no database, no Dagster.

Plans over time: a tenant's plan on a day is that of its subscription active at some moment of the
day that started last (an upgrade at 11:00 makes the whole day the new plan's). A subscription is
active from started_at (inclusive) to ended_at (exclusive); its status column is informational.

Billing, month to date at day D: the base fee is the sum over the month's days so far of that day's
plan price / days in the month (prorated by day and plan); the included calls and tokens and the
overage prices are those of the plan billed, the latest plan the tenant had this month: after an
upgrade the whole month's usage counts against the new plan's allowance.
"""

import calendar
from datetime import date, datetime, time, timedelta

import numpy as np
import pandas as pd

from gsv_pipelines.lib.usage import sketch as usage_sketch
from gsv_pipelines.lib.usage import tables
from gsv_pipelines.lib.usage.tables import QUOTA_THRESHOLDS

ERRORS = ("error", "timeout")


def month_start(day: date) -> date:
    return day.replace(day=1)


def _bounds(day: date) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(datetime.combine(day, time()))
    return start, start + pd.Timedelta(days=1)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _daily(rollup: pd.DataFrame) -> pd.DataFrame:
    """Per (day, tenant): calls and tokens."""
    if rollup.empty:
        return pd.DataFrame(columns=["day", "tenant_id", "calls", "tokens"])
    frame = rollup.assign(tokens=rollup["tokens_in"] + rollup["tokens_out"])
    return (
        frame.groupby(["day", "tenant_id"], as_index=False)
        .agg(calls=("events", "sum"), tokens=("tokens", "sum"))
        .astype({"calls": "int64", "tokens": "int64"})
    )


def tenant_usage(day: date, month_rollup: pd.DataFrame, tenants: pd.DataFrame) -> pd.DataFrame:
    """tenant_usage rows for `day` (tenants with valid calls that day)."""
    today = month_rollup[month_rollup["day"] == day]
    if today.empty:
        return pd.DataFrame(columns=tables.TENANT_USAGE.column_names)
    frame = today.assign(
        errors=np.where(today["status"].isin(ERRORS), today["events"], 0),
    )
    result = frame.groupby("tenant_id", as_index=False).agg(
        calls=("events", "sum"),
        errors=("errors", "sum"),
        tokens_in=("tokens_in", "sum"),
        tokens_out=("tokens_out", "sum"),
        agents_used=("agent_id", "nunique"),
        latency_ms_sum=("latency_ms_sum", "sum"),
    )
    result["error_rate"] = result["errors"] / result["calls"]
    result["tokens"] = result["tokens_in"] + result["tokens_out"]
    result["latency_mean_ms"] = result["latency_ms_sum"] / result["calls"]
    mtd = _daily(month_rollup[month_rollup["day"] <= day]).groupby("tenant_id")[["calls", "tokens"]]
    mtd = mtd.sum().rename(columns={"calls": "calls_mtd", "tokens": "tokens_mtd"})
    result = result.join(mtd, on="tenant_id")
    names = tenants.set_index("tenant_id")["name"]
    result["tenant_name"] = result["tenant_id"].map(names)
    result.insert(0, "day", day)
    return result[tables.TENANT_USAGE.column_names].sort_values("tenant_id", ignore_index=True)


def _sketches(sketch: pd.DataFrame) -> dict[str, dict[int, int]]:
    result: dict[str, dict[int, int]] = {}
    grouped = sketch.groupby(["agent_id", "bucket"])["events"].sum()
    for (agent, index), count in grouped.items():
        result.setdefault(agent, {})[int(index)] = int(count)
    return result


def day_latency(sketch: pd.DataFrame) -> dict[str, float]:
    """p50, p95 and p99 latency over every agent's calls, from their merged sketches."""
    merged = usage_sketch.merge(_sketches(sketch).values())
    values = usage_sketch.quantiles(merged, (0.5, 0.95, 0.99))
    return (
        {name: float(value) for name, value in zip(("p50", "p95", "p99"), values, strict=True)}
        if merged
        else {}
    )


def agent_performance(
    day: date, month_rollup: pd.DataFrame, month_sketch: pd.DataFrame, agents: pd.DataFrame
) -> pd.DataFrame:
    """agent_performance rows for `day` (agents with valid calls that day)."""
    mtd_rollup = month_rollup[month_rollup["day"] <= day]
    today = mtd_rollup[mtd_rollup["day"] == day]
    if today.empty:
        return pd.DataFrame(columns=tables.AGENT_PERFORMANCE.column_names)

    def per_agent(rollup: pd.DataFrame) -> pd.DataFrame:
        frame = rollup.assign(
            errors=np.where(rollup["status"].isin(ERRORS), rollup["events"], 0),
            timeouts=np.where(rollup["status"] == "timeout", rollup["events"], 0),
        )
        return frame.groupby("agent_id").agg(
            calls=("events", "sum"),
            errors=("errors", "sum"),
            timeouts=("timeouts", "sum"),
            tokens_in=("tokens_in", "sum"),
            tokens_out=("tokens_out", "sum"),
            tenants=("tenant_id", "nunique"),
            latency_ms_sum=("latency_ms_sum", "sum"),
        )

    result = per_agent(today)
    result["error_rate"] = result["errors"] / result["calls"]
    result["latency_mean_ms"] = result["latency_ms_sum"] / result["calls"]
    month = per_agent(mtd_rollup)
    result["calls_mtd"] = month["calls"]
    result["error_rate_mtd"] = month["errors"] / month["calls"]
    sketch = month_sketch[month_sketch["day"] <= day]
    daily = _sketches(sketch[sketch["day"] == day])
    monthly = _sketches(sketch)
    qs = (0.5, 0.95, 0.99)
    day_q = [usage_sketch.quantiles(daily.get(agent, {}), qs) for agent in result.index]
    month_q = [usage_sketch.quantiles(monthly.get(agent, {}), qs) for agent in result.index]
    for i, q in enumerate(("p50", "p95", "p99")):
        result[f"latency_{q}_ms"] = [values[i] for values in day_q]
        result[f"latency_{q}_ms_mtd"] = [values[i] for values in month_q]
    result = result.reset_index()
    info = agents.set_index("agent_id")
    result["agent_name"] = result["agent_id"].map(info["name"])
    result["provider"] = result["agent_id"].map(info["provider"])
    result.insert(0, "day", day)
    return result[tables.AGENT_PERFORMANCE.column_names].sort_values("agent_id", ignore_index=True)


def plan_days(subscriptions: pd.DataFrame, first: date, last: date) -> pd.DataFrame:
    """(tenant_id, day, plan_id): each tenant's plan on each day first..last it had one."""
    rows = []
    for d in _days(first, last):
        start, end = _bounds(d)
        active = subscriptions[
            (subscriptions["started_at"] < end)
            & (subscriptions["ended_at"].isna() | (subscriptions["ended_at"] > start))
        ]
        latest = active.sort_values(["started_at", "subscription_id"]).groupby("tenant_id").tail(1)
        rows += [(t, d, p) for t, p in zip(latest["tenant_id"], latest["plan_id"], strict=True)]
    return pd.DataFrame(rows, columns=["tenant_id", "day", "plan_id"])


def _month_grid(day: date, month_rollup: pd.DataFrame, subscriptions: pd.DataFrame):
    """Per (tenant, day of the month so far): plan (or none), calls and tokens, and to date."""
    first = month_start(day)
    plans = plan_days(subscriptions, first, day)
    usage = _daily(month_rollup[(month_rollup["day"] >= first) & (month_rollup["day"] <= day)])
    tenants = sorted(set(plans["tenant_id"]) | set(usage["tenant_id"]))
    grid = pd.DataFrame(
        [(t, d) for t in tenants for d in _days(first, day)], columns=["tenant_id", "day"]
    )
    grid = grid.merge(plans, on=["tenant_id", "day"], how="left")
    grid = grid.merge(usage, on=["tenant_id", "day"], how="left")
    grid[["calls", "tokens"]] = grid[["calls", "tokens"]].fillna(0).astype("int64")
    grid = grid.sort_values(["tenant_id", "day"], ignore_index=True)
    grid["calls_mtd"] = grid.groupby("tenant_id")["calls"].cumsum()
    grid["tokens_mtd"] = grid.groupby("tenant_id")["tokens"].cumsum()
    return grid


def billing(
    day: date, month_rollup: pd.DataFrame, subscriptions: pd.DataFrame, plans: pd.DataFrame
) -> pd.DataFrame:
    """billing rows for `day`: every tenant with a plan or usage this month so far."""
    grid = _month_grid(day, month_rollup, subscriptions)
    if grid.empty:
        return pd.DataFrame(columns=tables.BILLING.column_names)
    plan = plans.set_index("plan_id")
    days_in_month = calendar.monthrange(day.year, day.month)[1]
    grid["daily_fee"] = grid["plan_id"].map(plan["monthly_price"]).fillna(0) / days_in_month
    rows = []
    for tenant, days in grid.groupby("tenant_id", sort=True):
        today = days.iloc[-1]
        with_plan = days[days["plan_id"].notna()]
        billed = with_plan["plan_id"].iloc[-1] if len(with_plan) else None
        terms = plan.loc[billed] if billed is not None else None
        included_calls = int(terms["included_calls"]) if billed else 0
        included_tokens = int(terms["included_tokens"]) if billed else 0
        overage_calls = max(0, int(today["calls_mtd"]) - included_calls) if billed else 0
        overage_tokens = max(0, int(today["tokens_mtd"]) - included_tokens) if billed else 0
        overage_fee = (
            overage_calls / 1000 * float(terms["overage_per_1k_calls"])
            + overage_tokens / 1e6 * float(terms["overage_per_1m_tokens"])
            if billed
            else 0.0
        )
        base_fee = round(float(days["daily_fee"].sum()), 2)
        overage_fee = round(overage_fee, 2)
        rows.append(
            {
                "day": day,
                "tenant_id": tenant,
                "plan_id": billed,
                "month": f"{day:%Y-%m}",
                "calls": int(today["calls"]),
                "tokens": int(today["tokens"]),
                "calls_mtd": int(today["calls_mtd"]),
                "tokens_mtd": int(today["tokens_mtd"]),
                "included_calls": included_calls,
                "included_tokens": included_tokens,
                "overage_calls": overage_calls,
                "overage_tokens": overage_tokens,
                "plan_days": len(with_plan),
                "base_fee_mtd": base_fee,
                "overage_fee_mtd": overage_fee,
                "amount_mtd": round(base_fee + overage_fee, 2),
            }
        )
    return pd.DataFrame(rows, columns=tables.BILLING.column_names)


def quota_status(
    day: date,
    month_rollup: pd.DataFrame,
    subscriptions: pd.DataFrame,
    plans: pd.DataFrame,
    thresholds: tuple[int, ...] = QUOTA_THRESHOLDS,
) -> pd.DataFrame:
    """quota_status rows for `day`: every tenant with a plan that day.

    A threshold is reported (`crossed`) on the first day of the month usage reaches it: usage_pct
    that day is at or above it and on every earlier day of the month (each against that day's
    plan) below it. An upgrade that lowers the percentage does not make it report again.
    """
    grid = _month_grid(day, month_rollup, subscriptions)
    grid = grid[grid["plan_id"].notna()].copy()
    if grid.empty:
        return pd.DataFrame(columns=tables.QUOTA_STATUS.column_names)
    plan = plans.set_index("plan_id")
    grid["included_calls"] = grid["plan_id"].map(plan["included_calls"]).astype("int64")
    grid["included_tokens"] = grid["plan_id"].map(plan["included_tokens"]).astype("int64")
    grid["calls_pct"] = _pct(grid["calls_mtd"], grid["included_calls"])
    grid["tokens_pct"] = _pct(grid["tokens_mtd"], grid["included_tokens"])
    grid["usage_pct"] = grid[["calls_pct", "tokens_pct"]].max(axis=1).fillna(0.0)
    earlier = grid[grid["day"] < day].groupby("tenant_id")["usage_pct"].max()
    today = grid[grid["day"] == day].copy()
    before = today["tenant_id"].map(earlier).fillna(-1.0)
    today["level"] = [_level(p, thresholds) for p in today["usage_pct"]]
    today["crossed"] = [
        max([t for t in thresholds if b < t <= p], default=None)
        for b, p in zip(before, today["usage_pct"], strict=True)
    ]
    today["crossed"] = today["crossed"].astype("Int64")
    return today[tables.QUOTA_STATUS.column_names].sort_values("tenant_id", ignore_index=True)


def _pct(used: pd.Series, included: pd.Series) -> pd.Series:
    return (100.0 * used / included.where(included > 0)).astype("float64")


def _level(pct: float, thresholds: tuple[int, ...]) -> int:
    return max([t for t in thresholds if pct >= t], default=0)


def subscription_metrics(
    day: date, subscriptions: pd.DataFrame, plans: pd.DataFrame
) -> pd.DataFrame:
    """subscription_metrics rows for `day`: one per plan."""
    start, end = _bounds(day)
    subs = subscriptions
    started = subs["started_at"]
    ended = subs["ended_at"]

    def active_at(moment) -> pd.Series:
        return (started < moment) & (ended.isna() | (ended >= moment))

    def other_active(row, moment, strict_end: bool) -> bool:
        others = subs[(subs["tenant_id"] == row.tenant_id) & (subs["subscription_id"] != row.sid)]
        if strict_end:  # continuing after `moment`
            return bool(
                ((others["started_at"] <= moment)
                 & (others["ended_at"].isna() | (others["ended_at"] > moment))).any()
            )  # fmt: skip
        # active just before `moment`
        return bool(
            ((others["started_at"] < moment)
             & (others["ended_at"].isna() | (others["ended_at"] >= moment))).any()
        )  # fmt: skip

    begun = subs[(started >= start) & (started < end)].rename(columns={"subscription_id": "sid"})
    finished = subs[ended.notna() & (ended >= start) & (ended < end)].rename(
        columns={"subscription_id": "sid"}
    )
    moved_in = {r.sid for r in begun.itertuples() if other_active(r, r.started_at, False)}
    moved_out = {r.sid for r in finished.itertuples() if other_active(r, r.ended_at, True)}
    price = plans.set_index("plan_id")["monthly_price"].astype(float)
    rows = []
    for plan_id, name in zip(plans["plan_id"], plans["name"], strict=True):
        on_plan = subs["plan_id"] == plan_id
        active = int((on_plan & active_at(end)).sum())
        active_start = int((on_plan & active_at(start)).sum())
        new_here = begun[begun["plan_id"] == plan_id]["sid"]
        gone_here = finished[finished["plan_id"] == plan_id]["sid"]
        mrr = round(active * float(price[plan_id]), 2)
        churned = int((~gone_here.isin(moved_out)).sum())
        rows.append(
            {
                "day": day,
                "plan_id": plan_id,
                "plan_name": name,
                "active_start": active_start,
                "active": active,
                "new": int((~new_here.isin(moved_in)).sum()),
                "churned": churned,
                "moved_in": int(new_here.isin(moved_in).sum()),
                "moved_out": int(gone_here.isin(moved_out).sum()),
                "churn_rate": churned / active_start if active_start else None,
                "mrr": mrr,
                "arpu": round(mrr / active, 2) if active else None,
            }
        )
    return pd.DataFrame(rows)
