"""The PostgreSQL path of a day's extraction: PostgreSQL packs each delivery into 34 bytes in one
parallel scan, numpy folds them into the aggregates as they stream, and the few deliveries that
do not count as they are (extra deliveries of an event, invalid ones) are read back by ctid and
settled exactly.

Why (9.5M deliveries, 2 cores; docs/usage.md): each hash aggregate costs PostgreSQL
100-300 ns a delivery, so the three this needs (per tenant, agent and status; per agent and
latency bucket; every (source, event_id) for the duplicates) took 4.4 s on three connections
(7.9 s of CPU); deduplicating in SQL alone takes 5.8 s (parallel hash anti-join) to 7.7 s
(row_number()). Packing a delivery's columns into one bytea costs ~250 ns, with no grouping:

1. `_pack_sql`, one statement: per delivery, a 32-bit hash of its event id (a collision only adds
   deliveries to read back), its ctid, a 64-bit hash of its (tenant, agent, status), latency and
   tokens; appended by string_agg (no parallel form before PostgreSQL 16, so the leader appends
   while one parallel worker packs: 2.0 s; no worker 3.3 s, two 2.6 s, two connections on halves
   2.4 s) and sent in ~4 MB slices by binary COPY (323 MB; 54-byte rows cost 0.7 s more). A thread
   folds each slice as it arrives: dense sums per (tenant, agent, status) and counts per (agent,
   latency bucket) by np.bincount; each delivery's event hash and ctid are kept (10 bytes).
   One bytea holds less than 1 GB (31.5M deliveries): when the table may hold more than
   GROUP_DELIVERIES, the day is packed in groups of its event hashes, one bytea each (a hash
   aggregate, ~5% slower).
2. The event hashes are sorted. The deliveries of a hash seen twice, and those not folded (an
   unknown tenant, agent or status; latency missing or out of range; tokens negative or beyond 32
   bits), are read back by ctid (`_ROWS`, a TID scan in the same snapshot) with the first rule
   they break and, per (source, event_id), whether an earlier delivery counts instead (the first
   received; ties broken on the other columns). Valid extra deliveries are taken off the sums,
   valid unfolded ones added; invalid first ones are quarantined.

Ids are matched by 64-bit hashes (hashtextextended; known ones are checked for collisions), so an
unknown id passes for known only if its hash equals a known one's. The distinct events are
PostgreSQL's own count of first deliveries among those read back, apart from the sums: the
events_reconciled check holds what reaches the warehouse to it. The result equals the SQLite
path's SQL definition exactly (the tests hold both to the same hand-computed results).
"""

import functools
import queue
import struct
import threading
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from gsv_pipelines.lib.usage import sketch as usage_sketch
from gsv_pipelines.lib.usage.tables import DELIVERY_COLUMNS, MAX_LATENCY_MS, REASON_SQL, STATUSES

# Parallel workers for _PACK besides the leader, which also appends every packed delivery: more
# workers only queue behind it (2 cores: 1 worker 2.0 s, 2 workers 2.6 s, none 3.3 s).
PACK_WORKERS = 1
# Deliveries packed into one bytea at most, estimated from the whole table (an upper bound on
# the day's): past it the day is packed in groups. 20M x 34 bytes leaves the 1 GB limit a 1.5x
# margin for an uneven split or a stale estimate.
GROUP_DELIVERIES = 20_000_000
# The table's rows: PostgreSQL's own estimate (rows per page at the last VACUUM or ANALYZE times
# the pages now), or, never analyzed, its size over a row's least size (header, line pointer,
# one timestamp and four one-byte texts: 48 bytes).
_TABLE_ROWS = """
SELECT CASE WHEN c.reltuples > 0 AND c.relpages > 0
            THEN c.reltuples / c.relpages
                 * (pg_relation_size(c.oid) / current_setting('block_size')::int)
            ELSE pg_relation_size(c.oid) / 48.0 END
FROM pg_class AS c WHERE c.oid = 'usage_events'::regclass
"""
_WINDOW = "occurred_at >= %(start)s AND occurred_at < %(end)s"
# Tokens fit one int8 as two 32-bit halves; -1 flags a delivery whose tokens do not (negative:
# invalid; beyond 2**31: read back). A NULL latency becomes NaN (out of range), NULL tokens 0:
# a NULL anywhere would drop the delivery from string_agg.
_TOKENS = """CASE WHEN coalesce(tokens_in, 0) BETWEEN 0 AND 2147483647
                  AND coalesce(tokens_out, 0) BETWEEN 0 AND 2147483647
             THEN (coalesce(tokens_in, 0) << 32) | coalesce(tokens_out, 0) ELSE -1 END"""
_COMBINED = "hashtextextended(tenant_id, hashtextextended(agent_id, hashtextextended(status, 0)))"
_PAIR = "hashtextextended(agent_id, hashtextextended(status, 0))"
# The ids of a delivery: one hash of (tenant, agent, status) when the known combinations are few
# enough to list, else a hash of the tenant and one of (agent, status).
_ID_FIELDS = {
    True: ([("ids", ">i8")], f"int8send({_COMBINED})"),
    False: (
        [("tenant", ">i8"), ("pair", ">i8")],
        f"int8send(hashtextextended(tenant_id, 0)) || int8send({_PAIR})",
    ),
}


def _packed(combined: bool) -> np.dtype:
    """One delivery as _pack_sql packs it: a 32-bit hash of its event id (a collision only adds
    deliveries to read back), its ctid, its ids, latency and tokens."""
    fields, _ = _ID_FIELDS[combined]
    return np.dtype(
        [
            ("h", ">i4"),
            ("block", ">u4"),
            ("offset", ">u2"),
            *fields,
            ("latency", ">f8"),
            ("tokens", ">i8"),
        ]
    )


def pack_groups(table_rows: float) -> int:
    """Groups the day is packed in: 1, or a power of two keeping each under GROUP_DELIVERIES."""
    groups = 1
    while table_rows > groups * GROUP_DELIVERIES:
        groups *= 2
    return groups


def _pack_sql(combined: bool, groups: int = 1) -> str:
    """The deliveries packed into one bytea per group (of event hashes), sent in ~4 MB slices by
    binary COPY: each row a slice, its index in the group, and the group's counts."""
    _, ids = _ID_FIELDS[combined]
    size = _packed(combined).itemsize * 120_000
    if groups == 1:
        group, key, group_by = "0", "0", ""
    else:
        group, key, group_by = f"hashtext(event_id) & {groups - 1}", "g", "GROUP BY g"
    # The empty branch makes the deliveries an append relation, whose rows the planner builds
    # where they are scanned: the packing runs in the parallel worker too, not only in the
    # leader that appends them.
    return f"""
COPY (
    SELECT substring(k FROM i * {size} + 1 FOR {size}), i, n, late, received_through
    FROM (
        SELECT {key} AS g, string_agg(packed, ''::bytea) AS k, count(*) AS n,
               count(*) FILTER (WHERE received >= %(end)s) AS late,
               max(received) AS received_through
        FROM (
            SELECT int4send(hashtext(event_id)) || tidsend(ctid) || {ids}
                   || float8send(coalesce(latency_ms, 'NaN')) || int8send({_TOKENS})
                   AS packed,
                   coalesce(received_at, occurred_at) AS received, {group} AS g
            FROM usage_events
            WHERE {_WINDOW}
            UNION ALL
            SELECT NULL, NULL, NULL FROM agents WHERE false
        ) AS deliveries
        {group_by}
    ) AS day,
    LATERAL generate_series(0, (length(k) - 1) / {size}) AS i
    ORDER BY g, i
) TO STDOUT (FORMAT binary)
"""


_TENANTS = "SELECT tenant_id, hashtextextended(tenant_id, 0) FROM tenants ORDER BY 1"
_PAIRS = f"""
SELECT agent_id, s, {_PAIR.replace("status", "s")}
FROM agents CROSS JOIN unnest(%(statuses)s::text[]) AS s
ORDER BY 1, 2
"""
_COMBINATIONS = f"""
SELECT {_COMBINED.replace("status", "s")}
FROM tenants CROSS JOIN agents CROSS JOIN unnest(%(statuses)s::text[]) AS s
ORDER BY tenant_id, agent_id, s
"""
ROW_COLUMNS = [*DELIVERY_COLUMNS, "reason"]
# Columns only a quarantined delivery needs: the others are settled from their ids and values.
_QUARANTINED = {
    c: f"CASE WHEN reason IS NOT NULL THEN {c} END AS {c}"
    for c in ("source", "event_id", "occurred_at", "received_at")
}
# Of the deliveries at the given ctids, those that are invalid, follow an earlier delivery of
# their event, or have tokens beyond 32 bits.
_ROWS = f"""
SELECT {", ".join(_QUARANTINED.get(c, c) for c in ROW_COLUMNS)}, reason IS NOT NULL AS invalid,
       later, reason IS NULL AND (tokens_in > 2147483647 OR tokens_out > 2147483647) AS wide_tokens
FROM (
    SELECT *, {REASON_SQL} AS reason,
           row_number() OVER (
               PARTITION BY event_id COLLATE "C", source COLLATE "C"
               ORDER BY received_at, tenant_id COLLATE "C", agent_id COLLATE "C",
                        status COLLATE "C", latency_ms, tokens_in, tokens_out
           ) > 1 AS later
    FROM (
        SELECT source, event_id, tenant_id, agent_id, occurred_at,
               coalesce(received_at, occurred_at) AS received_at, latency_ms, status,
               tokens_in, tokens_out
        FROM usage_events
        WHERE ctid = ANY(%(tids)s::tid[]) AND {_WINDOW}
    ) AS picked
) AS ranked
WHERE later OR reason IS NOT NULL OR tokens_in > 2147483647 OR tokens_out > 2147483647
"""
# Every bucket an in-range latency (0 to MAX_LATENCY_MS) falls in.
BUCKETS = range(usage_sketch.bucket(0), usage_sketch.bucket(MAX_LATENCY_MS) + 1)
# Above this many cells, sums are kept sparse (per slice) rather than in dense arrays.
DENSE_CELLS = 1 << 20
_PG_EPOCH = datetime(2000, 1, 1)


def extract(conn: sa.Connection, params: dict, work_mem: str, workers: int = PACK_WORKERS):
    """(stats, rollup, sketch, quarantine rows) of the window in `params` (start, end); `conn`
    is in a REPEATABLE READ transaction: every statement sees one snapshot."""
    for setting, value in (
        ("work_mem", work_mem),
        ("max_parallel_workers_per_gather", str(workers)),
        # One tuple a delivery leaves the worker: the default cost would keep it from working.
        ("parallel_tuple_cost", "0"),
        # JIT compiles for longer than these statements run.
        ("jit", "off"),
    ):
        conn.execute(sa.text("SELECT set_config(:s, :v, true)"), {"s": setting, "v": value})
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        statuses = {"statuses": list(STATUSES)}
        cursor.execute(_TENANTS)
        tenants = cursor.fetchall()
        cursor.execute(_PAIRS, statuses)
        pairs = cursor.fetchall()
        combined = len(tenants) * len(pairs) <= DENSE_CELLS
        if combined:
            cursor.execute(_COMBINATIONS, statuses)
            combinations = [h for (h,) in cursor.fetchall()]
        fold = _Fold(tenants, pairs, combinations if combined else None)
        cursor.execute(_TABLE_ROWS)
        groups = pack_groups(float(cursor.fetchone()[0] or 0))
        sql = cursor.mogrify(_pack_sql(combined, groups), params).decode()
        with _Folding(fold) as folding:
            cursor.copy_expert(sql, _CopyRows(folding.put))
    finally:
        cursor.close()
    tids, unsettled = fold.to_read_back()
    literal = "{" + ",".join(f'"({b},{o})"' for b, o in tids) + "}"
    # The planner prices each ctid as a random page read and would scan the day instead; these
    # pages were just read.
    conn.execute(sa.text("SELECT set_config('enable_seqscan', 'off', true)"))
    rows = _frame(conn.connection.dbapi_connection, _ROWS, {**params, "tids": literal})
    bad, later, wide = (rows[c].astype(bool) for c in ("invalid", "later", "wide_tokens"))
    if int((bad | wide).sum()) != unsettled:
        raise RuntimeError(f"{unsettled} deliveries unsettled, {int((bad | wide).sum())} by rule")
    # Valid and folded but extra (take off), or valid, unfolded and counting (add).
    fold.settle(rows[~bad & (later ^ wide)])
    stats = {
        "deliveries": fold.deliveries,
        "events": fold.deliveries - int(later.sum()),
        "late": fold.late,
        "received_through": fold.received_through,
    }
    quarantine = [tuple(r) for r in rows.loc[bad & ~later, ROW_COLUMNS].itertuples(index=False)]
    return stats, fold.rollup(), fold.sketch(), quarantine


def _frame(dbapi_connection, sql: str, params: dict) -> pd.DataFrame:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(sql, params)
        columns = [c.name for c in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)
    finally:
        cursor.close()


def bucket_index(latency: np.ndarray) -> np.ndarray:
    """usage_sketch.bucket, vectorised, less BUCKETS.start."""
    clamped = np.maximum(latency, usage_sketch.MIN_MS)
    return np.ceil(np.log(clamped) / usage_sketch.LN_GAMMA).astype(np.int64) - BUCKETS.start


class _Ids:
    """Known ids (or id pairs) by their 64-bit hashes: their position, or -1."""

    def __init__(self, keys: list, hashes: list[int]):
        self.keys = keys
        self._index = pd.Index(np.array(hashes, dtype=np.int64))
        if not self._index.is_unique:
            raise RuntimeError("two known ids share a 64-bit hash")

    @functools.cached_property
    def position(self) -> dict:
        return {key: i for i, key in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        return self._index.get_indexer(hashes)


class _Sums:
    """Sums of a few columns per integer cell: dense arrays, or per-slice partial sums when the
    cells are too many."""

    def __init__(self, cells: int, columns: dict[str, type]):
        self.cells = cells
        self.dense = cells <= DENSE_CELLS
        self.columns = columns
        self.values = {
            name: np.zeros(cells if self.dense else 0, dtype) for name, dtype in columns.items()
        }
        self.parts: list[pd.DataFrame] = []

    def add(self, cell: np.ndarray, values: dict[str, np.ndarray | None]) -> None:
        """Add each column's values per cell; None counts one per entry."""
        if not self.dense:
            columns = {
                n: np.ones(len(cell), np.int64) if v is None else v for n, v in values.items()
            }
            self.parts.append(pd.DataFrame({"cell": cell, **columns}).groupby("cell").sum())
            return
        for name, column in values.items():
            if column is None:
                self.values[name] += np.bincount(cell, minlength=self.cells)
                continue
            sums = np.bincount(cell, column, minlength=self.cells)
            if self.columns[name] is np.int64:
                # bincount adds in float64: exact below 2**53.
                if len(column) and np.abs(column).sum(dtype=np.float64) >= 2**53:
                    raise OverflowError(f"{name} sums beyond float64's exact integers")
                sums = np.rint(sums).astype(np.int64)
            self.values[name] += sums

    def frame(self) -> pd.DataFrame:
        """Cells with a nonzero first column, as a frame indexed by cell."""
        if self.dense:
            frame = pd.DataFrame(self.values)
        else:
            frame = (
                pd.concat(self.parts).groupby(level=0).sum()
                if self.parts
                else pd.DataFrame(
                    {name: pd.Series(dtype=dtype) for name, dtype in self.columns.items()}
                )
            )
        first = next(iter(self.columns))
        if (frame[first] < 0).any():
            raise RuntimeError("took more deliveries off than were counted")
        return frame[frame[first] > 0]


class _Fold:
    """The day's deliveries folded slice by slice: sums per (tenant, agent, status) cell, counts
    per (agent, latency bucket) cell, and each delivery's event hash and ctid and whether it was
    left unsettled (invalid, or tokens beyond 32 bits)."""

    def __init__(self, tenants: list[tuple], pairs: list[tuple], combinations: list | None):
        self.tenants = _Ids([t for t, _ in tenants], [h for _, h in tenants])
        self.pairs = _Ids([(a, s) for a, s, _ in pairs], [h for _, _, h in pairs])
        self.combinations = None if combinations is None else _Ids(combinations, combinations)
        self.packed = _packed(combinations is not None)
        self.agents = list(dict.fromkeys(a for a, _, _ in pairs))
        agent = {a: i for i, a in enumerate(self.agents)}
        self.pair_agent = np.array([agent[a] for a, _, _ in pairs], dtype=np.int64)
        self.pair_status = np.array([s for _, s, _ in pairs], dtype=object)
        self.groups = _Sums(
            len(self.tenants) * len(self.pairs),
            {"events": np.int64, "tokens_in": np.int64, "tokens_out": np.int64,
             "latency_ms_sum": np.float64},
        )  # fmt: skip
        self.cells = _Sums(len(self.agents) * len(BUCKETS), {"events": np.int64})
        self.deliveries = self.late = self.folded = 0
        self.received_through: datetime | None = None
        self.keys = _Keys()

    def add_row(self, fields: list) -> None:
        piece, index, deliveries, late, through = fields
        if struct.unpack(">i", index)[0] == 0:  # a group's first slice: its counts
            count = struct.unpack(">q", deliveries)[0]
            self.deliveries += count
            self.keys.reserve(count)
            self.late += struct.unpack(">q", late)[0]
            if through is not None:
                micros = struct.unpack(">q", through)[0]
                moment = _PG_EPOCH + timedelta(microseconds=micros)
                self.received_through = max(self.received_through or moment, moment)
        self._add(np.frombuffer(piece, dtype=self.packed))

    def _add(self, packed: np.ndarray) -> None:
        if self.combinations is not None:
            group = self.combinations.lookup(packed["ids"].astype(np.int64))
            known = group >= 0
        else:
            t = self.tenants.lookup(packed["tenant"].astype(np.int64))
            pair = self.pairs.lookup(packed["pair"].astype(np.int64))
            known = (t >= 0) & (pair >= 0)
            group = t * len(self.pairs) + pair
        latency = packed["latency"].astype(np.float64)
        tokens = packed["tokens"].astype(np.int64)
        # The rules of usage_tables.REASONS, but tokens beyond 32 bits, read back; a NaN latency
        # (NULL) is out of range.
        settled = known & (tokens != -1) & (latency >= 0) & (latency <= MAX_LATENCY_MS)
        self.keys.append(packed, settled)
        self.folded += len(packed)
        tokens = tokens[settled]
        self._fold(group[settled], latency[settled], tokens >> 32, tokens & 0xFFFFFFFF)

    def settle(self, rows: pd.DataFrame) -> None:
        """Fold in valid deliveries read back: add those with wide tokens (never folded), take
        off the others (extra deliveries, folded)."""
        pairs = zip(rows["agent_id"], rows["status"], strict=True)
        t = rows["tenant_id"].map(self.tenants.position).to_numpy(dtype=np.int64)
        pair = np.array([self.pairs.position[p] for p in pairs], dtype=np.int64)
        signs = np.where(rows["wide_tokens"].to_numpy(dtype=bool), 1, -1)
        self._fold(
            t * len(self.pairs) + pair,
            signs * rows["latency_ms"].to_numpy(dtype=np.float64),
            signs * rows["tokens_in"].fillna(0).to_numpy(dtype=np.int64),
            signs * rows["tokens_out"].fillna(0).to_numpy(dtype=np.int64),
            signs=signs,
            latency=rows["latency_ms"].to_numpy(dtype=np.float64),
        )

    def _fold(self, group, latency_sum, tokens_in, tokens_out, signs=None, latency=None) -> None:
        """Fold deliveries in: one each, or `signs` (+1, -1) with signed sums; `latency` for the
        buckets when the sums are signed."""
        self.groups.add(
            group,
            {
                "events": signs,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "latency_ms_sum": latency_sum,
            },
        )
        agent = self.pair_agent[group % len(self.pairs)]
        buckets = bucket_index(latency_sum if latency is None else latency)
        self.cells.add(agent * len(BUCKETS) + buckets, {"events": signs})

    def to_read_back(self) -> tuple[list[tuple[int, int]], int]:
        """The ctids of the deliveries of a hash seen twice and of the unsettled ones, and how
        many are unsettled; frees the keys."""
        if self.folded != self.deliveries:
            raise RuntimeError(f"{self.deliveries} deliveries, {self.folded} packed")
        hashes, blocks, offsets, wanted = self.keys.arrays()
        self.keys = _Keys()
        ordered = np.sort(hashes)
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        del ordered
        unsettled = int(wanted.sum())
        if len(repeated):
            # A table of the low 20 bits of the repeated hashes (1 MB, so it stays in cache)
            # sorts out nearly every delivery at once; the few that pass are looked up exactly.
            seen = np.zeros(1 << 20, dtype=bool)
            seen[repeated & 0xFFFFF] = True
            maybe = np.flatnonzero(seen[hashes & 0xFFFFF])
            wanted[maybe[pd.Index(repeated).get_indexer(hashes[maybe]) >= 0]] = True
        tids = list(zip(blocks[wanted].tolist(), offsets[wanted].tolist(), strict=True))
        return tids, unsettled

    def rollup(self) -> pd.DataFrame:
        frame = self.groups.frame()
        t, pair = np.divmod(frame.index.to_numpy(dtype=np.int64), len(self.pairs))
        return pd.DataFrame(
            {
                "tenant_id": np.array(self.tenants.keys, dtype=object)[t],
                "agent_id": np.array(self.agents, dtype=object)[self.pair_agent[pair]],
                "status": self.pair_status[pair],
                **{name: frame[name].to_numpy() for name in frame.columns},
            }
        )

    def sketch(self) -> pd.DataFrame:
        frame = self.cells.frame()
        a, b = np.divmod(frame.index.to_numpy(dtype=np.int64), len(BUCKETS))
        return pd.DataFrame(
            {
                "agent_id": np.array(self.agents, dtype=object)[a],
                "bucket": b + BUCKETS.start,
                "events": frame["events"].to_numpy(),
            }
        )


class _Keys:
    """Each delivery's event hash, ctid (block, offset) and whether it is unsettled, in arrays
    reserved group by group (one group: allocated once, at its size)."""

    def __init__(self):
        self.size = 0
        self.columns = [np.empty(0, t) for t in (np.int32, np.uint32, np.uint16, bool)]

    def reserve(self, count: int) -> None:
        needed = self.size + count
        if needed > len(self.columns[0]):
            grown = max(needed, 2 * len(self.columns[0]))
            for i, old in enumerate(self.columns):
                self.columns[i] = np.empty(grown, old.dtype)
                self.columns[i][: self.size] = old[: self.size]

    def append(self, packed: np.ndarray, settled: np.ndarray) -> None:
        at = slice(self.size, self.size + len(packed))
        hashes, blocks, offsets, unsettled = self.columns
        hashes[at], blocks[at], offsets[at] = packed["h"], packed["block"], packed["offset"]
        np.logical_not(settled, out=unsettled[at])
        self.size += len(packed)

    def arrays(self) -> list[np.ndarray]:
        return [c[: self.size] for c in self.columns]


class _Folding:
    """Folds the rows on a thread of its own, so that numpy works while PostgreSQL sends."""

    def __init__(self, fold: _Fold):
        self.fold = fold
        self.rows: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> "_Folding":
        self.thread.start()
        return self

    def put(self, fields: list) -> None:
        if self.error is not None:
            raise self.error
        self.rows.put(fields)

    def _run(self) -> None:
        while (fields := self.rows.get()) is not None:
            if self.error is None:
                try:
                    self.fold.add_row(fields)
                except BaseException as exc:  # re-raised in the reading thread
                    self.error = exc

    def __exit__(self, *exc_info) -> None:
        self.rows.put(None)
        self.thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error


class _CopyRows:
    """A file for COPY TO STDOUT (FORMAT binary) that hands each row's fields (memoryviews, None
    for NULL) to `on_row` as they arrive; a row is copied only if it spans two writes."""

    def __init__(self, on_row):
        self.on_row = on_row
        self.pending = b""
        self.started = False

    def write(self, data: bytes) -> None:
        view = memoryview(self.pending + data if self.pending else data)
        pos = 0
        if not self.started:
            if len(view) < 19:
                self.pending = bytes(view)
                return
            if bytes(view[:11]) != b"PGCOPY\n\xff\r\n\x00":
                raise ValueError("not a binary COPY stream")
            pos = 19 + struct.unpack_from(">I", view, 15)[0]
            self.started = True
        while len(view) - pos >= 2:
            (count,) = struct.unpack_from(">h", view, pos)
            if count == -1:
                pos += 2
                break
            fields, end = self._fields(view, pos + 2, count)
            if fields is None:
                break
            self.on_row(fields)
            pos = end
        self.pending = bytes(view[pos:])

    @staticmethod
    def _fields(view: memoryview, pos: int, count: int):
        fields = []
        for _ in range(count):
            if len(view) - pos < 4:
                return None, pos
            (size,) = struct.unpack_from(">i", view, pos)
            pos += 4
            if size < 0:
                fields.append(None)
                continue
            if len(view) - pos < size:
                return None, pos
            fields.append(view[pos : pos + size])
            pos += size
        return fields, pos
