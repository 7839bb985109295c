"""CPU time from Linux /proc, for the benchmarks that say what the machine did meanwhile."""

import os
from pathlib import Path

TICK = 1 / os.sysconf("SC_CLK_TCK")
# /proc/stat's first eight fields of a cpu line, in ticks.
USER, NICE, SYSTEM, IDLE, IOWAIT, IRQ, SOFTIRQ, STEAL = range(8)


def cpu_ticks(cpus: set[int] | None = None) -> list[int]:
    """The ticks the machine's CPUs (or only `cpus`) have spent so far, by field."""
    names = {"cpu"} if cpus is None else {f"cpu{n}" for n in cpus}
    total = [0] * 8
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name in names:
            total = [t + int(v) for t, v in zip(total, ticks[:8], strict=True)]
    return total


def process_cpu_seconds(pid: int, reaped: bool = False) -> float:
    """The CPU seconds (user + system) process `pid` has used; `reaped`: with those of the
    children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11 : 15 if reaped else 13]) * TICK


def children_cpu_seconds(pid: int) -> float:
    """The CPU seconds `pid`'s running children have used (one that exits meanwhile is left
    out: its parent's reaped time holds it once waited for)."""
    total = 0.0
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            total += process_cpu_seconds(int(child))
        except OSError:
            continue
    return total


def tree_cpu_seconds(pid: int) -> float:
    """The CPU seconds `pid` has used with its children, reaped or still running (a server and
    the workers it forks, such as PostgreSQL's postmaster and backends)."""
    return process_cpu_seconds(pid, reaped=True) + children_cpu_seconds(pid)
