"""Mergeable latency sketches: log-bucketed histograms with a relative-error guarantee.

A latency x > 0 falls in bucket i = ceil(log_GAMMA(x)), GAMMA = (1 + ALPHA) / (1 - ALPHA): bucket i
holds (GAMMA^(i-1), GAMMA^i]. A quantile is the nearest-rank one (the value of rank ceil(q * n)),
estimated by its bucket's representative 2 * GAMMA^i / (GAMMA + 1), which is within ALPHA (1%) of
every value in the bucket. The idea is DDSketch's (Masson, Rim, Lee, VLDB 2019).

Counts per bucket add: a month's sketch is the sum of its days' sketches, so monthly percentiles
never re-read raw events. The bucket index is computed where the events are, in SQL
(`bucket_sql`); Python only adds counts and reads quantiles.
"""

import math
from collections.abc import Iterable, Mapping

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LN_GAMMA = math.log(GAMMA)
# Latencies below this (0 ms included) count as this: a sub-10-microsecond call is a rounding.
MIN_MS = 0.01


def bucket_sql(column: str, dialect: str) -> str:
    """The SQL expression of a latency column's bucket, for PostgreSQL or SQLite."""
    clamp = "greatest" if dialect == "postgresql" else "max"
    return f"CAST(ceil(ln({clamp}({column}, {MIN_MS!r})) / {LN_GAMMA!r}) AS INTEGER)"


def bucket(latency_ms: float) -> int:
    """Python's bucket of a latency (tests and small data); SQL computes the same."""
    return math.ceil(math.log(max(latency_ms, MIN_MS)) / LN_GAMMA)


def representative(index: int) -> float:
    """The value a bucket stands for: within ALPHA of anything in it."""
    return 2 * GAMMA**index / (GAMMA + 1)


def merge(sketches: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """The sum of sketches (bucket -> count)."""
    total: dict[int, int] = {}
    for sketch in sketches:
        for index, count in sketch.items():
            total[index] = total.get(index, 0) + int(count)
    return total


def quantiles(sketch: Mapping[int, int], qs: Iterable[float]) -> list[float | None]:
    """Nearest-rank quantiles (0 < q <= 1) of a sketch; None for an empty one."""
    qs = list(qs)
    n = sum(sketch.values())
    if n == 0:
        return [None] * len(qs)
    ranks = [max(1, math.ceil(q * n - 1e-9)) for q in qs]
    result: list[float | None] = [None] * len(qs)
    seen = 0
    order = sorted(range(len(qs)), key=lambda k: ranks[k])
    pending = 0
    for index in sorted(sketch):
        seen += sketch[index]
        while pending < len(order) and ranks[order[pending]] <= seen:
            result[order[pending]] = representative(index)
            pending += 1
        if pending == len(order):
            break
    return result
