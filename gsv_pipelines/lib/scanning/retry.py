"""When a digest whose scan failed is scanned again. No Dagster here: image_push_sensor gives each
never-scanned digest's runs and requests what this says.

A scan run fails before it records anything when its cause lies outside the image: no
vulnerability DB yet, the registry or Vault unreachable, Trivy killed. The digest then stays
unscanned: it is tried again after a backoff that doubles with each consecutive failure (from
`base` to at most `cap` seconds), never given up silently. A run canceled by hand is not retried
(an operator's decision); a launch by hand scans it again.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IN_PROGRESS, FAILED, CANCELED, SUCCEEDED = "in progress", "failed", "canceled", "succeeded"
BASE_SECONDS = 300.0
CAP_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class ScanRun:
    """One run of image_scan_job for the digest."""

    status: str  # IN_PROGRESS, FAILED, CANCELED or SUCCEEDED
    ended_at: float | None  # seconds since the epoch
    run_config: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What to do about a digest that has no scan: `retry` now (as attempt `attempt`, with the
    last run's config and tags), `wait` `due_in` more seconds, or nothing (`running`,
    `canceled`)."""

    action: str  # "retry", "wait", "running", "canceled"
    attempt: int = 1
    due_in: float = 0.0
    run_config: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


def backoff_seconds(failures: int, base: float = BASE_SECONDS, cap: float = CAP_SECONDS) -> float:
    """The wait after `failures` consecutive failed scans: base, 2 x base, 4 x base... <= cap."""
    return min(cap, base * 2 ** max(failures - 1, 0))


def decide(
    runs: Sequence[ScanRun], now: float, base: float = BASE_SECONDS, cap: float = CAP_SECONDS
) -> Decision:
    """`runs`: the digest's scan runs, newest first. A digest without any run is scanned now."""
    if not runs:
        return Decision("retry")
    if any(run.status == IN_PROGRESS for run in runs):
        return Decision("running")
    latest = runs[0]
    if latest.status == CANCELED:
        return Decision("canceled")
    failures = 0
    for run in runs:
        if run.status != FAILED:
            break
        failures += 1
    due = (latest.ended_at or now) + backoff_seconds(failures, base, cap)
    action = "retry" if now >= due else "wait"
    return Decision(
        action,
        attempt=failures + 1,
        due_in=max(0.0, due - now),
        run_config=latest.run_config,
        tags=latest.tags,
    )
