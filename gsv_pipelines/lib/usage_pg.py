"""The PostgreSQL path of a day's extraction: one pass over the deliveries, then numpy.

Measured on 1.1M deliveries (README, "Usage analytics"): deduplicating in SQL (DISTINCT ON, or a
hash table over (source, event_id)) and aggregating after it runs serially and costs ~1.8 us per
delivery whatever the SQL; moving rows out one by one costs as much (COPY binary ~0.55 us per row
for the server alone, ADBC ~0.9 us, read_sql ~4.7 us). This path does one scan that computes each
delivery's validity once and appends packed binary columns to a few byte strings:

1. On `parts` connections sharing one exported snapshot, each takes the deliveries whose event-id
   hash falls in its slice and returns them in 32 groups (a server-side cursor: one group in memory
   at a time): every delivery's 64-bit event hash; the valid ones' tenant and agent hashes,
   status, latency and tokens, packed; the invalid ones as rows with the first rule they break.
2. numpy/pandas add the valid deliveries up per (tenant, agent, status) and per (agent, latency
   bucket), group by group, keeping only the 8-byte event hashes.
3. Sorting the hashes finds the events delivered more than once (~0.5%); all their deliveries are
   read back, deduplicated exactly on (source, event_id) (first received counts), and the extra
   deliveries taken off the sums. An invalid first delivery is quarantined; an invalid extra one is
   only a duplicate.

The result equals the SQLite path's SQL definition exactly (the tests hold both to the same
hand-computed results). 9.5M deliveries: 11.4 s, the process under 750 MiB (benchmarks/bench_usage).
"""

import threading

import numpy as np
import pandas as pd
import sqlalchemy as sa

from gsv_pipelines.lib import usage_sketch

STATUS_CODES = {"ok": 0, "error": 1, "timeout": 2}
GROUPS = 32
_REASON = """CASE
        WHEN tenant_id NOT IN (SELECT tenant_id FROM tenants) THEN 'unknown_tenant'
        WHEN agent_id NOT IN (SELECT agent_id FROM agents) THEN 'unknown_agent'
        WHEN status NOT IN ('ok', 'error', 'timeout') THEN 'unknown_status'
        WHEN latency_ms IS NULL THEN 'missing_latency'
        WHEN NOT (latency_ms >= 0 AND latency_ms <= %(max_latency)s) THEN 'latency_out_of_range'
        WHEN tokens_in < 0 OR tokens_out < 0 THEN 'negative_tokens'
    END"""
_ROW = (
    "source, event_id, tenant_id, agent_id, occurred_at, coalesce(received_at, occurred_at), "
    "latency_ms::text, status, tokens_in, tokens_out"
)
_PACK = f"""
WITH d AS (
    SELECT hashtextextended(event_id, 0) AS h, source, event_id, tenant_id, agent_id,
           occurred_at, received_at, latency_ms, status, tokens_in, tokens_out,
           {_REASON} AS reason
    FROM usage_events
    WHERE occurred_at >= %(start)s AND occurred_at < %(end)s
      AND (hashtextextended(event_id, 0) & %(mask)s) = %(part)s
    OFFSET 0  -- a fence: the reason is computed once per delivery, not once per aggregate
)
SELECT (h >> 8) & {GROUPS - 1} AS g,
       string_agg(int8send(h), ''::bytea) AS h,
       string_agg(
           int8send(hashtextextended(tenant_id, 0)) || int8send(hashtextextended(agent_id, 0))
           || int2send(CASE status WHEN 'ok' THEN 0 WHEN 'error' THEN 1 ELSE 2 END::int2)
           || float8send(latency_ms) || int8send(coalesce(tokens_in, 0))
           || int8send(coalesce(tokens_out, 0)),
           ''::bytea
       ) FILTER (WHERE reason IS NULL) AS valid,
       json_agg(json_build_array({_ROW}, reason, h)) FILTER (WHERE reason IS NOT NULL) AS bad,
       count(*) AS deliveries,
       count(*) FILTER (WHERE coalesce(received_at, occurred_at) >= %(end)s) AS late,
       max(coalesce(received_at, occurred_at)) AS received_through
FROM d
GROUP BY 1
"""
# One valid delivery, as packed above.
VALID = np.dtype(
    [("t", ">i8"), ("a", ">i8"), ("s", ">i2"), ("lat", ">f8"), ("tin", ">i8"), ("tout", ">i8")]
)
_DUPLICATES = f"""
SELECT {_ROW}, {_REASON} AS reason
FROM usage_events
WHERE occurred_at >= %(start)s AND occurred_at < %(end)s
  AND hashtextextended(event_id, 0) = ANY(%(hashes)s)
"""
ROW_COLUMNS = [
    "source",
    "event_id",
    "tenant_id",
    "agent_id",
    "occurred_at",
    "received_at",
    "latency_ms",
    "status",
    "tokens_in",
    "tokens_out",
    "reason",
]


class _Keys:
    """Known tenants and agents by their 64-bit hashes."""

    def __init__(self, names: list[str], hashes: list[int]):
        order = np.argsort(np.array(hashes, dtype=np.int64))
        self.hashes = np.array(hashes, dtype=np.int64)[order]
        self.names = [names[i] for i in order]
        if len(np.unique(self.hashes)) != len(self.hashes):
            raise ValueError("two known ids share a 64-bit hash")
        self.index = {name: i for i, name in enumerate(self.names)}

    def positions(self, hashes: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.hashes, hashes)


def extract(conn: sa.Connection, params: dict, parts: int, work_mem: str, engine: sa.Engine):
    """(stats, rollup, sketch, quarantine rows) of the window in `params`; `conn` is in a
    REPEATABLE READ transaction."""
    snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
    tenants = _keys(conn, "SELECT tenant_id, hashtextextended(tenant_id, 0) FROM tenants")
    agents = _keys(conn, "SELECT agent_id, hashtextextended(agent_id, 0) FROM agents")
    base = {
        **params,
        "tenants": tenants.names,
        "agents": agents.names,
        "max_latency": 3_600_000,
        "mask": parts - 1,
    }
    results: list = [None] * parts
    errors: list[BaseException] = []

    def work(part: int) -> None:
        try:
            results[part] = _part(
                engine, snapshot, {**base, "part": part}, work_mem, tenants, agents
            )
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in range(parts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    rollup = _sum([r["rollup"] for r in results], ["t", "a", "s"])
    sketch = _sum([r["sketch"] for r in results], ["a", "bucket"])
    bad = [row for r in results for row in r["bad"]]
    hashes = np.concatenate([r["hashes"] for r in results])
    deliveries = sum(r["deliveries"] for r in results)
    throughs = [r["received_through"] for r in results if r["received_through"] is not None]

    hashes.sort()
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    extra = 0
    duplicated = set(repeated.tolist())
    quarantine = [row[:-1] for row in bad if row[-1] not in duplicated]
    if len(repeated):
        rows = _fetch(conn, _DUPLICATES, {**base, "hashes": repeated.tolist()})
        frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
        frame["lat"] = pd.to_numeric(frame["latency_ms"], errors="coerce")
        frame = frame.sort_values(
            ["source", "event_id", "received_at", "tenant_id", "agent_id", "status", "lat",
             "tokens_in", "tokens_out"],
            na_position="last",
            kind="stable",
        )  # fmt: skip
        later = frame.groupby(["source", "event_id"]).cumcount() > 0
        extra = int(later.sum())
        quarantine += [
            tuple(r) for r in frame.loc[~later & frame["reason"].notna(), ROW_COLUMNS].values
        ]
        rollup, sketch = _take_off(
            frame[later & frame["reason"].isna()], rollup, sketch, tenants, agents
        )
    return (
        {
            "deliveries": deliveries,
            "events": deliveries - extra,
            "late": sum(r["late"] for r in results),
            "received_through": max(throughs) if throughs else None,
        },
        _named_rollup(rollup, tenants, agents),
        _named_sketch(sketch, agents),
        quarantine,
    )


def _keys(conn: sa.Connection, sql: str) -> _Keys:
    rows = conn.execute(sa.text(sql)).all()
    return _Keys([r[0] for r in rows], [r[1] for r in rows])


def _fetch(conn: sa.Connection, sql: str, params: dict) -> list[tuple]:
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _part(engine, snapshot, params, work_mem, tenants: _Keys, agents: _Keys) -> dict:
    rollups, sketches, hashes, bad = [], [], [], []
    deliveries = late = 0
    throughs = []
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
            conn.execute(sa.text("SELECT set_config('work_mem', :v, true)"), {"v": work_mem})
            conn.execute(sa.text("SET LOCAL jit = off"))
            # A server-side cursor: one group of packed columns in memory at a time.
            cursor = conn.connection.dbapi_connection.cursor(name="gsv_usage_pack")
            cursor.itersize = 1
            try:
                cursor.execute(_PACK, params)
                for _, h, valid, group_bad, n, n_late, through in cursor:
                    hashes.append(_array(h, ">i8"))
                    deliveries += n
                    late += n_late
                    if through is not None:
                        throughs.append(through)
                    bad += [tuple(r) for r in group_bad or []]
                    if valid is None:
                        continue
                    packed = np.frombuffer(valid, dtype=VALID)
                    lat = packed["lat"].astype(np.float64)
                    frame = pd.DataFrame(
                        {
                            "t": tenants.positions(packed["t"].astype(np.int64)),
                            "a": agents.positions(packed["a"].astype(np.int64)),
                            "s": packed["s"].astype(np.int16),
                            "events": 1,
                            "tokens_in": packed["tin"].astype(np.int64),
                            "tokens_out": packed["tout"].astype(np.int64),
                            "latency_ms_sum": lat,
                        }
                    )
                    rollups.append(frame.groupby(["t", "a", "s"], sort=False).sum())
                    sketch = pd.DataFrame({"a": frame["a"], "bucket": _buckets(lat)})
                    sketches.append(
                        sketch.groupby(["a", "bucket"], sort=False).size().rename("events")
                    )
            finally:
                cursor.close()
    return {
        "rollup": _sum(rollups, ["t", "a", "s"]),
        "sketch": _sum([s.to_frame() for s in sketches], ["a", "bucket"]),
        "hashes": np.concatenate(hashes) if hashes else np.empty(0, dtype=np.int64),
        "bad": bad,
        "deliveries": deliveries,
        "late": late,
        "received_through": max(throughs) if throughs else None,
    }


def _array(data, dtype: str) -> np.ndarray:
    """A packed big-endian column as a native numpy array."""
    return np.frombuffer(data, dtype=dtype).astype(dtype.replace(">", "="))


def _sum(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames).groupby(level=keys).sum()


def _take_off(extra: pd.DataFrame, rollup, sketch, tenants: _Keys, agents: _Keys):
    """Subtract the extra deliveries that were counted as valid events."""
    if extra.empty:
        return rollup, sketch
    lat = extra["lat"].to_numpy(dtype=float)
    agent = extra["agent_id"].map(agents.index).to_numpy()
    minus = (
        pd.DataFrame(
            {
                "t": extra["tenant_id"].map(tenants.index).to_numpy(),
                "a": agent,
                "s": extra["status"].map(STATUS_CODES).to_numpy(),
                "events": -1,
                "tokens_in": -extra["tokens_in"].fillna(0).astype("int64").to_numpy(),
                "tokens_out": -extra["tokens_out"].fillna(0).astype("int64").to_numpy(),
                "latency_ms_sum": -lat,
            }
        )
        .groupby(["t", "a", "s"])
        .sum()
    )
    minus_sketch = -(
        pd.DataFrame({"a": agent, "bucket": _buckets(lat)})
        .groupby(["a", "bucket"])
        .size()
        .rename("events")
        .to_frame()
    )
    rollup = _sum([rollup, minus], ["t", "a", "s"])
    sketch = _sum([sketch, minus_sketch], ["a", "bucket"])
    return rollup[rollup["events"] > 0], sketch[sketch["events"] > 0]


def _buckets(latency: np.ndarray) -> np.ndarray:
    """usage_sketch.bucket, vectorised."""
    return np.ceil(np.log(np.maximum(latency, usage_sketch.MIN_MS)) / usage_sketch.LN_GAMMA).astype(
        np.int64
    )


def _named_rollup(rollup: pd.DataFrame, tenants: _Keys, agents: _Keys) -> pd.DataFrame:
    columns = [
        "tenant_id",
        "agent_id",
        "status",
        "events",
        "tokens_in",
        "tokens_out",
        "latency_ms_sum",
    ]
    if rollup.empty:
        return pd.DataFrame(columns=columns)
    frame = rollup.reset_index()
    statuses = {v: k for k, v in STATUS_CODES.items()}
    frame["tenant_id"] = [tenants.names[i] for i in frame["t"]]
    frame["agent_id"] = [agents.names[i] for i in frame["a"]]
    frame["status"] = [statuses[int(s)] for s in frame["s"]]
    return frame[columns]


def _named_sketch(sketch: pd.DataFrame, agents: _Keys) -> pd.DataFrame:
    if sketch.empty:
        return pd.DataFrame(columns=["agent_id", "bucket", "events"])
    frame = sketch.reset_index()
    frame["agent_id"] = [agents.names[i] for i in frame["a"]]
    return frame[["agent_id", "bucket", "events"]]
