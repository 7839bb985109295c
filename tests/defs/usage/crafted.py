"""Small crafted platform data for the usage tests, with every expectation computed by hand.

March 2026 (31 days). Plans priced in multiples of 31 so a day costs whole units:
  basic: 31.00/month, 10 calls and 10,000 tokens included, 200.00 per 1k calls, 20.00 per 1M tokens
  pro:   62.00/month, 20 calls and 100,000 tokens included, 100.00 per 1k calls, 10.00 per 1M tokens
Subscriptions:
  alpha: basic from Feb 1, upgraded to pro on Mar 3 at 11:00 (plan change mid-month)
  beta:  basic from Jan 15, canceled Mar 3 at 15:00 (churn)
  gamma: pro from Mar 3 at 09:00 (new customer)
Events on Mar 2 (all valid): alpha -> bot 9 calls (ok, 100 ms, 100/50 tokens); beta -> bot 2
calls (ok, 200 ms, 10/10).
Events on Mar 3:
  alpha -> bot a3-0, a3-1, a3-edge (23:59:59.5): ok, 100 ms, 100/50; a3-0 delivered twice
    (identical), a3-1 delivered again later with another payload (the first delivery counts)
  alpha -> coder a3-2: error, 300 ms, 100/0
  beta -> bot b3-0 from source gw and b3-0 from source batch: two events; ok, 200 ms, 10/10
  gamma -> coder g3-00..g3-24: ok, 10, 20, ... 250 ms, 1000/1000
  six malformed events, one per quarantine reason (x-status delivered twice)
  LATE (inserted by the tests that need it): beta -> bot b3-late at 13:00, received Mar 4 02:00
Event on Mar 4 00:00:00 (a4-0): not Mar 3's.
"""

import uuid
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from gsv_pipelines.demo.data import apply_platform_schema

DAY = date(2026, 3, 3)
PREVIOUS_DAY = date(2026, 3, 2)

PLANS = [
    ("basic", "Basic", 31, 10, 10_000, 200, 20),
    ("pro", "Pro", 62, 20, 100_000, 100, 10),
]
TENANTS = [("alpha", "Alpha"), ("beta", "Beta"), ("gamma", "Gamma")]
AGENTS = [("bot", "openai", "Bot"), ("coder", "mistral", "Coder")]
SUBSCRIPTIONS = [
    ("sub-a1", "alpha", "basic", "replaced", "2026-02-01 00:00:00", "2026-03-03 11:00:00"),
    ("sub-a2", "alpha", "pro", "active", "2026-03-03 11:00:00", None),
    ("sub-b1", "beta", "basic", "canceled", "2026-01-15 00:00:00", "2026-03-03 15:00:00"),
    ("sub-g1", "gamma", "pro", "active", "2026-03-03 09:00:00", None),
]


def _event(source, event_id, tenant, agent, at, latency, status, tin, tout, received=None):
    received = received or at + timedelta(seconds=1)
    return (source, event_id, tenant, agent, at, latency, status, tin, tout, received)


def events() -> list[tuple]:
    rows = []
    mar2 = datetime(2026, 3, 2, 10, 0)
    for i in range(9):
        rows.append(
            _event(
                "gw", f"a2-{i}", "alpha", "bot", mar2 + timedelta(minutes=i), 100.0, "ok", 100, 50
            )
        )
    for i in range(2):
        rows.append(
            _event(
                "gw",
                f"b2-{i}",
                "beta",
                "bot",
                mar2 + timedelta(hours=1, minutes=i),
                200.0,
                "ok",
                10,
                10,
            )
        )
    noon = datetime(2026, 3, 3, 12, 0)
    a30 = _event("gw", "a3-0", "alpha", "bot", noon, 100.0, "ok", 100, 50)
    a31 = _event("gw", "a3-1", "alpha", "bot", noon + timedelta(minutes=1), 100.0, "ok", 100, 50)
    rows += [
        a30,
        (*a30[:-1], a30[-1] + timedelta(minutes=5)),  # the same delivery again
        a31,
        # a later delivery of a3-1 with another payload: the first delivery counts
        _event("gw", "a3-1", "alpha", "bot", noon + timedelta(minutes=1), 999.0, "error", 7, 7,
               received=noon + timedelta(minutes=30)),
        _event("gw", "a3-2", "alpha", "coder", noon + timedelta(minutes=2), 300.0, "error", 100, 0),
        _event("gw", "a3-edge", "alpha", "bot", datetime(2026, 3, 3, 23, 59, 59, 500000), 100.0,
               "ok", 100, 50),
        _event("gw", "b3-0", "beta", "bot", noon + timedelta(minutes=3), 200.0, "ok", 10, 10),
        _event("batch", "b3-0", "beta", "bot", noon + timedelta(minutes=3), 200.0, "ok", 10, 10),
    ]  # fmt: skip
    for k in range(25):
        rows.append(
            _event("gw", f"g3-{k:02d}", "gamma", "coder", noon + timedelta(minutes=10 + k),
                   10.0 * (k + 1), "ok", 1000, 1000)
        )  # fmt: skip
    bad = noon + timedelta(hours=1)
    status_bad = _event("gw", "x-status", "alpha", "bot", bad, 100.0, "weird", 1, 1)
    rows += [
        _event("gw", "x-tenant", "ghost", "bot", bad, 100.0, "ok", 1, 1),
        _event("gw", "x-agent", "alpha", "nobot", bad, 100.0, "ok", 1, 1),
        status_bad,
        (*status_bad[:-1], status_bad[-1] + timedelta(minutes=1)),
        _event("gw", "x-nolat", "alpha", "bot", bad, None, "ok", 1, 1),
        _event("gw", "x-neglat", "alpha", "bot", bad, -5.0, "ok", 1, 1),
        _event("gw", "x-negtok", "alpha", "bot", bad, 100.0, "ok", -1, 1),
        _event("gw", "a4-0", "alpha", "bot", datetime(2026, 3, 4), 100.0, "ok", 100, 50),
    ]
    return rows


LATE_EVENT = _event(
    "gw", "b3-late", "beta", "bot", datetime(2026, 3, 3, 13, 0), 200.0, "ok", 10, 10,
    received=datetime(2026, 3, 4, 2, 0),
)  # fmt: skip


def _text(value):
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value


def insert_events(url: str, rows: list[tuple]) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO usage_events (source, event_id, tenant_id, agent_id, occurred_at,"
                    " latency_ms, status, tokens_in, tokens_out, received_at) VALUES"
                    " (:s, :e, :t, :a, :o, :l, :st, :ti, :to, :r)"
                ),
                [
                    dict(zip(("s", "e", "t", "a", "o", "l", "st", "ti", "to", "r"),
                             map(_text, row), strict=True))
                    for row in rows
                ],
            )  # fmt: skip
    finally:
        engine.dispose()


def build(url: str, with_late: bool = False) -> None:
    """The crafted platform database at `url` (empty or new)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            apply_platform_schema(conn)
            conn.execute(
                sa.text("INSERT INTO plans VALUES (:p, :n, :price, :c, :t, :oc, :ot)"),
                [
                    dict(zip(("p", "n", "price", "c", "t", "oc", "ot"), p, strict=True))
                    for p in PLANS
                ],
            )
            conn.execute(
                sa.text("INSERT INTO tenants VALUES (:t, :n, '2026-01-01 00:00:00')"),
                [{"t": t, "n": n} for t, n in TENANTS],
            )
            conn.execute(
                sa.text("INSERT INTO agents VALUES (:a, :p, :n)"),
                [dict(zip(("a", "p", "n"), a, strict=True)) for a in AGENTS],
            )
            conn.execute(
                sa.text("INSERT INTO subscriptions VALUES (:s, :t, :p, :st, :b, :e)"),
                [dict(zip(("s", "t", "p", "st", "b", "e"), s, strict=True)) for s in SUBSCRIPTIONS],
            )
    finally:
        engine.dispose()
    insert_events(url, events() + ([LATE_EVENT] if with_late else []))


def new_postgres_database(postgres, prefix: str) -> str:
    """A new, empty database on the session's PostgreSQL; its SQLAlchemy URL."""
    return postgres.url(postgres.create_database(f"{prefix}_{uuid.uuid4().hex[:8]}"))


def databases(kind: str, request, tmp_path) -> tuple[str, str]:
    """(platform database URL, warehouse URL): both PostgreSQL, or both SQLite files."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'platform.db'}", f"sqlite:///{tmp_path / 'warehouse.db'}"
    postgres = request.getfixturevalue("postgres")
    return new_postgres_database(postgres, "platform"), new_postgres_database(postgres, "warehouse")
