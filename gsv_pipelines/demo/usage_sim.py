"""A usage simulator for the platform database: tenants, subscriptions and usage events.

Realistic at any scale and deterministic for a seed: power-law tenants and agents, daily and weekly
cycles, lognormal latencies per agent with incident bursts (slow and failing for an hour or two),
plan changes (upgrades) and churn, a new tenant joining, ~0.5% duplicate deliveries, ~1% late
events (received hours after they happened, often the next day or later) and a few malformed
rows. Each day's events come from their own random stream (seed, day), so a day is the same
whatever window it is seeded in.

Events are generated as pandas frames in chunks and written by COPY on PostgreSQL (the fast path
for millions of rows) or executemany on SQLite.
"""

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from gsv_pipelines.demo.data import (
    DEMO_AGENTS,
    DEMO_PLANS,
    DEMO_TENANTS,
    apply_platform_schema,
)
from gsv_pipelines.lib.usage.tables import REASONS

SOURCES = ("gateway-eu", "gateway-us", "batch-import")
SOURCE_WEIGHTS = (0.55, 0.40, 0.05)
PROVIDERS = ("openai", "anthropic", "mistral", "google", "meta")
EVENT_COLUMNS = (
    "source",
    "event_id",
    "tenant_id",
    "agent_id",
    "occurred_at",
    "latency_ms",
    "status",
    "tokens_in",
    "tokens_out",
    "received_at",
)
# Share of the day's calls per hour (UTC): quiet at night, a peak in the afternoon.
_HOURS = np.arange(24)
DIURNAL = 0.25 + np.exp(-0.5 * ((_HOURS - 14) / 4.0) ** 2)
DIURNAL = DIURNAL / DIURNAL.sum()
WEEKLY = (1.0, 1.05, 1.05, 1.0, 0.95, 0.55, 0.45)  # Monday .. Sunday
TIMEOUT_MS = 30_000.0
CHUNK = 1_000_000
US_PER_HOUR = 3_600_000_000
# Plan weights: a business tenant calls more than a team one, a free one little.
PLAN_FACTOR = {"free": 0.15, "team": 1.0, "business": 4.0}
# The demo's first six tenants keep the plans and join dates demo_data.seed_platform_db gives them.
DEMO_JOINED = datetime(2026, 1, 5)
# How malformed rows are malformed: one kind per quarantine reason of the usage pipeline.
BAD_KINDS = REASONS


@dataclass(frozen=True)
class SimConfig:
    """What to simulate: `days` days of events ending with `last_day` (inclusive)."""

    last_day: date
    days: int = 7
    events_per_day: int = 20_000
    tenants: int = 24
    agents: int = 12
    seed: int = 7
    duplicate_rate: float = 0.005
    late_rate: float = 0.01
    bad_rate: float = 0.0005
    # A day's volume varies by this lognormal sigma around events_per_day x the weekday's
    # factor; 0 gives exactly that many events (the benchmark's 10 million).
    volume_sigma: float = 0.05

    @property
    def first_day(self) -> date:
        return self.last_day - timedelta(days=self.days - 1)


@dataclass(frozen=True)
class Agent:
    agent_id: str
    provider: str
    name: str
    weight: float
    median_ms: float
    sigma: float
    error_rate: float


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    tenant_id: str
    plan_id: str
    status: str
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class World:
    """Reference rows and the behaviour behind the events."""

    plans: tuple[tuple, ...]
    agents: tuple[Agent, ...]
    tenants: tuple[tuple[str, str, datetime], ...]
    tenant_weights: tuple[float, ...]
    subscriptions: tuple[Subscription, ...]


def build_world(config: SimConfig) -> World:
    """Tenants, agents and the subscription history around the simulated window."""
    rng = np.random.default_rng([config.seed, 0])
    first = datetime.combine(config.first_day, time())
    plan_ids = [p[0] for p in DEMO_PLANS]

    # Agents: the demo's three, then generated ones; popularity follows a power law.
    count = max(config.agents, len(DEMO_AGENTS))
    ids = [a[0] for a in DEMO_AGENTS] + [f"agent-{i:03d}" for i in range(len(DEMO_AGENTS), count)]
    ranks = rng.permutation(count) + 1
    agents = []
    for i, agent_id in enumerate(ids):
        provider, name = (
            DEMO_AGENTS[i][1:]
            if i < len(DEMO_AGENTS)
            else (PROVIDERS[i % len(PROVIDERS)], f"Agent {i:03d}")
        )
        agents.append(
            Agent(
                agent_id=agent_id,
                provider=provider,
                name=name,
                weight=float(1.0 / ranks[i] ** 1.2),
                median_ms=float(rng.uniform(250, 1800)),
                sigma=float(rng.uniform(0.45, 0.8)),
                # Most agents fail rarely; one in six is flaky (above the 5% alert line).
                error_rate=float(
                    rng.uniform(0.06, 0.09) if i % 6 == 5 else rng.uniform(0.003, 0.02)
                ),
            )
        )

    # Tenants: the demo's six (plans and join dates as seed_platform_db writes them), then
    # generated ones; a newcomer joins on the window's second day.
    tenant_ids = list(DEMO_TENANTS) + [
        f"tenant-{i:03d}" for i in range(len(DEMO_TENANTS), max(config.tenants, 6) - 1)
    ]
    tenants, plans, weights = [], [], []
    ranks = rng.permutation(len(tenant_ids)) + 1
    for i, tenant_id in enumerate(tenant_ids):
        if i < len(DEMO_TENANTS):
            joined = DEMO_JOINED + timedelta(days=9 * i)
            plan = plan_ids[i % 3]
        else:
            joined = first - timedelta(days=int(rng.integers(20, 400)), hours=int(rng.integers(24)))
            plan = str(rng.choice(plan_ids, p=(0.4, 0.45, 0.15)))
        tenants.append((tenant_id, tenant_id.replace("-", " ").title(), joined))
        plans.append(plan)
        weights.append(float(1.0 / ranks[i] ** 1.1) * PLAN_FACTOR[plan])
    newcomer = "tenant-new"
    tenants.append((newcomer, "Tenant New", first + timedelta(days=1, hours=9)))
    plans.append("team")
    weights.append(float(np.median(weights)))

    subscriptions = _subscription_history(rng, config, tenants, plans, weights)
    return World(
        plans=tuple(DEMO_PLANS),
        agents=tuple(agents),
        tenants=tuple(tenants),
        tenant_weights=tuple(weights),
        subscriptions=tuple(subscriptions),
    )


def _subscription_history(rng, config, tenants, plans, weights) -> list[Subscription]:
    """Each tenant's subscriptions: one from joining, then scripted and random changes."""
    first = datetime.combine(config.first_day, time())
    days = config.days
    # Scripted, so every window of 3+ days shows them: the heaviest team tenant upgrades
    # mid-window, the next team tenant churns two thirds in.
    by_weight = sorted(range(len(tenants)), key=lambda i: -weights[i])
    team = [i for i in by_weight if plans[i] == "team" and tenants[i][2] < first]
    upgrade = team[0] if days >= 3 and team else None
    churn = team[1] if days >= 3 and len(team) > 1 else None
    subscriptions = []
    for i, (tenant_id, _, joined) in enumerate(tenants):
        # The demo tenants' first subscription has the id seed_platform_db gives it.
        sub_id = f"sub-{tenant_id}"
        plan, start, n = plans[i], joined, 1
        changes: list[tuple[datetime, str | None]] = []
        if i == upgrade:
            changes.append((first + timedelta(days=days // 2, hours=11), "business"))
        elif i == churn:
            changes.append((first + timedelta(days=(2 * days) // 3, hours=15, minutes=30), None))
        else:
            for d in range(days):
                u = rng.random()
                at = first + timedelta(days=d, seconds=int(rng.integers(86_400)))
                if at <= joined:
                    continue
                if u < 0.004:
                    changes.append((at, None))
                    break
                if u < 0.012 and plan != "business":
                    changes.append((at, "business" if plan == "team" else "team"))
                    break
        for at, new_plan in changes:
            status = "canceled" if new_plan is None else "replaced"
            subscriptions.append(Subscription(sub_id, tenant_id, plan, status, start, at))
            if new_plan is None:
                plan = None
                break
            n += 1
            sub_id, plan, start = f"sub-{tenant_id}-{n}", new_plan, at
        if plan is not None:
            subscriptions.append(Subscription(sub_id, tenant_id, plan, "active", start, None))
    return subscriptions


def _active_mask(world: World, tenant_idx: np.ndarray, at_us: np.ndarray) -> np.ndarray:
    """Whether each event's tenant had an active subscription at the event's time."""
    index = {t[0]: i for i, t in enumerate(world.tenants)}
    active = np.zeros(len(tenant_idx), dtype=bool)
    for sub in world.subscriptions:
        start = _us(sub.started_at)
        end = _us(sub.ended_at) if sub.ended_at else np.iinfo(np.int64).max
        active |= (tenant_idx == index[sub.tenant_id]) & (at_us >= start) & (at_us < end)
    return active


def _us(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp() * 1_000_000)


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random 32-hex-digit event ids."""
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16)
    text = np.empty((n, 32), dtype=np.uint8)
    text[:, 0::2] = digits[raw >> 4]
    text[:, 1::2] = digits[raw & 15]
    return text.view("S32").ravel().astype(str)


def events_for_day(world: World, config: SimConfig, day: date) -> Iterator[pd.DataFrame]:
    """The deliveries of one day's events, in chunks of at most CHUNK rows."""
    ordinal = day.toordinal()
    day_rng = np.random.default_rng([config.seed, 1, ordinal])
    total = int(
        config.events_per_day * WEEKLY[day.weekday()] * day_rng.lognormal(0, config.volume_sigma)
    )
    # Incident: one agent slow and failing for 30-120 minutes, on about half of the days.
    incident = None
    if day_rng.random() < 0.5:
        agent_p = np.array([a.weight for a in world.agents])
        start = day_rng.integers(0, 22 * 60) * 60_000_000
        incident = (
            int(day_rng.choice(len(world.agents), p=agent_p / agent_p.sum())),
            _us(datetime.combine(day, time())) + int(start),
            int(day_rng.integers(30, 121)) * 60_000_000,
        )
    for chunk, offset in enumerate(range(0, total, CHUNK)):
        rng = np.random.default_rng([config.seed, 2, ordinal, chunk])
        frame = _chunk(world, config, day, min(CHUNK, total - offset), rng, incident)
        if len(frame):
            yield frame


def _chunk(world, config, day, n, rng, incident) -> pd.DataFrame:
    day_us = _us(datetime.combine(day, time()))
    hours = rng.choice(24, size=n, p=DIURNAL)
    at = day_us + hours * US_PER_HOUR + rng.integers(0, US_PER_HOUR, size=n)
    tenant_p = np.array(world.tenant_weights)
    tenant = rng.choice(len(world.tenants), size=n, p=tenant_p / tenant_p.sum())
    # Only tenants with an active subscription call agents (churned ones stop, a newcomer
    # starts): a call drawn for another tenant is drawn again, so the day keeps its volume.
    idle = np.flatnonzero(~_active_mask(world, tenant, at))
    for _ in range(50):
        if not len(idle):
            break
        tenant[idle] = rng.choice(len(world.tenants), size=len(idle), p=tenant_p / tenant_p.sum())
        idle = idle[~_active_mask(world, tenant[idle], at[idle])]
    agent_p = np.array([a.weight for a in world.agents])
    agent = rng.choice(len(world.agents), size=n, p=agent_p / agent_p.sum())
    median = np.array([a.median_ms for a in world.agents])[agent]
    sigma = np.array([a.sigma for a in world.agents])[agent]
    error_p = np.array([a.error_rate for a in world.agents])[agent]
    latency = np.round(median * np.exp(sigma * rng.standard_normal(n)), 3)
    if incident:
        hit = (agent == incident[0]) & (at >= incident[1]) & (at < incident[1] + incident[2])
        latency[hit] *= 4
        error_p = np.where(hit, 0.3, error_p)
    status = np.where(rng.random(n) < error_p, "error", "ok").astype(object)
    timeout = latency > TIMEOUT_MS
    status[timeout] = "timeout"
    latency[timeout] = TIMEOUT_MS
    tokens_in = np.rint(rng.lognormal(np.log(600), 0.8, n)).astype(np.int64)
    tokens_out = np.rint(rng.lognormal(np.log(350), 0.9, n)).astype(np.int64)
    tokens_out[status != "ok"] = 0
    source = rng.choice(len(SOURCES), size=n, p=SOURCE_WEIGHTS)
    lag = rng.exponential(800_000, n).astype(np.int64)
    late = rng.random(n) < config.late_rate
    lag[late] = rng.integers(2 * US_PER_HOUR, 50 * US_PER_HOUR, size=int(late.sum()))
    frame = pd.DataFrame(
        {
            "source": np.array(SOURCES, dtype=object)[source],
            "event_id": _hex_ids(rng, n),
            "tenant_id": np.array([t[0] for t in world.tenants], dtype=object)[tenant],
            "agent_id": np.array([a.agent_id for a in world.agents], dtype=object)[agent],
            "occurred_at": at.astype("datetime64[us]"),
            "latency_ms": latency,
            "status": status,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "received_at": (at + lag).astype("datetime64[us]"),
        }
    )
    frame = frame.drop(index=idle)  # no tenant active at that instant
    frame = _malform(frame, rng, config.bad_rate)
    # Duplicate deliveries: a retry stores the same event again, seconds to minutes later.
    dup = frame[rng.random(len(frame)) < config.duplicate_rate].copy()
    dup["received_at"] += pd.to_timedelta(rng.integers(1, 600, size=len(dup)), unit="s")
    return pd.concat([frame, dup], ignore_index=True)


def _malform(frame: pd.DataFrame, rng, rate: float) -> pd.DataFrame:
    bad = np.flatnonzero(rng.random(len(frame)) < rate)
    kinds = rng.integers(0, len(BAD_KINDS), size=len(bad))
    for kind, name in enumerate(BAD_KINDS):
        rows = frame.index[bad[kinds == kind]]
        if name == "unknown_tenant":
            frame.loc[rows, "tenant_id"] = "ghost-tenant"
        elif name == "unknown_agent":
            frame.loc[rows, "agent_id"] = "ghost-agent"
        elif name == "unknown_status":
            frame.loc[rows, "status"] = "UNKNOWN"
        elif name == "missing_latency":
            frame.loc[rows, "latency_ms"] = np.nan
        elif name == "latency_out_of_range":
            frame.loc[rows, "latency_ms"] = -frame.loc[rows, "latency_ms"]
        elif name == "negative_tokens":
            frame.loc[rows, "tokens_in"] = -frame.loc[rows, "tokens_in"]
        else:
            raise ValueError(f"the simulator cannot yet malform a row for {name!r}")
    return frame


def write_reference(conn: sa.Connection, world: World) -> None:
    """Plans, agents and tenants when missing; the simulated tenants' subscriptions replaced."""
    insert = "INSERT INTO {table} VALUES ({values}) ON CONFLICT DO NOTHING"
    conn.execute(
        sa.text(insert.format(table="plans", values=":p, :n, :price, :c, :t, :oc, :ot")),
        [dict(zip(("p", "n", "price", "c", "t", "oc", "ot"), p, strict=True)) for p in world.plans],
    )
    conn.execute(
        sa.text(insert.format(table="agents", values=":a, :p, :n")),
        [{"a": a.agent_id, "p": a.provider, "n": a.name} for a in world.agents],
    )
    conn.execute(
        sa.text(insert.format(table="tenants", values=":t, :n, :c")),
        [{"t": t, "n": n, "c": c} for t, n, c in world.tenants],
    )
    conn.execute(
        sa.text("DELETE FROM subscriptions WHERE tenant_id IN :tenants").bindparams(
            sa.bindparam("tenants", expanding=True)
        ),
        {"tenants": [t[0] for t in world.tenants]},
    )
    conn.execute(
        sa.text("INSERT INTO subscriptions VALUES (:s, :t, :p, :st, :b, :e)"),
        [
            {
                "s": s.subscription_id,
                "t": s.tenant_id,
                "p": s.plan_id,
                "st": s.status,
                "b": s.started_at,
                "e": s.ended_at,
            }
            for s in world.subscriptions
        ],
    )


def write_events(conn: sa.Connection, frame: pd.DataFrame) -> None:
    """Append deliveries: COPY on PostgreSQL, executemany elsewhere."""
    frame = frame[list(EVENT_COLUMNS)]
    if conn.dialect.name == "postgresql":
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S.%f")
        buffer.seek(0)
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.copy_expert(
                f"COPY usage_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
                buffer,
            )
        finally:
            cursor.close()
        return
    rows = frame.astype(object).where(frame.notna(), None)
    for column in ("occurred_at", "received_at"):
        rows[column] = frame[column].dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    conn.exec_driver_sql(
        f"INSERT INTO usage_events ({', '.join(EVENT_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})",
        list(rows.itertuples(index=False, name=None)),
    )


def seed_usage(
    url: str,
    days: int = 7,
    scale: float = 1.0,
    seed: int = 7,
    last_day: date | None = None,
    **overrides,
) -> dict:
    """Simulate `days` days of usage ending yesterday (UTC) into the platform database at `url`.

    Idempotent: the simulated tenants' subscriptions and the simulator's events are replaced, in
    one transaction, so seeding twice gives the same database. `scale` multiplies the events per
    day (20,000 at 1.0); `overrides` set any other SimConfig field (tenants, agents, rates).
    Returns the rows written and the days seeded (the usage partitions to materialize).
    """
    last_day = last_day or (datetime.now(UTC).date() - timedelta(days=1))
    config = SimConfig(
        last_day=last_day,
        days=days,
        events_per_day=overrides.pop("events_per_day", max(1, round(20_000 * scale))),
        seed=seed,
        **overrides,
    )
    world = build_world(config)
    engine = sa.create_engine(url)
    events = duplicates = late = 0
    try:
        with engine.begin() as conn:
            apply_platform_schema(conn)
            write_reference(conn, world)
            conn.execute(
                sa.text("DELETE FROM usage_events WHERE source IN :sources").bindparams(
                    sa.bindparam("sources", expanding=True)
                ),
                {"sources": list(SOURCES)},
            )
            for offset in range(days):
                day = config.first_day + timedelta(days=offset)
                next_day = np.datetime64(day + timedelta(days=1), "us")
                for frame in events_for_day(world, config, day):
                    write_events(conn, frame)
                    events += len(frame)
                    duplicates += int(frame.duplicated(["source", "event_id"]).sum())
                    late += int((frame["received_at"] >= next_day).sum())
    finally:
        engine.dispose()
    partitions = [(config.first_day + timedelta(days=d)).isoformat() for d in range(days)]
    return {
        "deliveries": events,
        "duplicate_deliveries": duplicates,
        "late_deliveries": late,
        "tenants": len(world.tenants),
        "agents": len(world.agents),
        "subscriptions": len(world.subscriptions),
        "partitions": partitions,
    }
