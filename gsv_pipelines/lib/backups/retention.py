"""Which backups of one target to keep and which to delete.

The backups group asks this after every backup. The engine only plans; the caller deletes.

Rules, in the order they give reasons:

- Tiers (`keep_last`, `keep_daily`, `keep_weekly`, `keep_monthly`) are a union over *verified*
  backups: a backup kept by any tier is kept. Like restic's `--keep-daily`, the daily, weekly and
  monthly tiers count periods (UTC calendar day, ISO week, calendar month) that have a verified
  backup, newest first, not periods counted back from `now`; the newest backup of a period
  represents it.
- `max_age_days` takes the tier reasons away from backups created before `now - max_age_days`.
- The `min_count` newest backups are always kept, verified ones first (newest first), then
  unverified ones if there are not enough verified backups.
- The newest verified backup is never deleted, whatever the policy says.
- Unverified backups are never kept by a tier. They are deleted, except those newer than the
  newest verified backup: those may still be under investigation, so they are kept until a newer
  verified backup exists.
- With no verified backup at all nothing is deleted: the plan keeps everything with the reason
  "no verified backup", since deleting the only copies left would be unrecoverable.

The plan depends only on its inputs: input order does not matter, and backups created at the same
instant are ordered by `backup_id`.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

NO_VERIFIED_BACKUP = "no verified backup"
MIN_COUNT = "min_count"
NEWEST_VERIFIED = "newest verified"
NEWER_THAN_NEWEST_VERIFIED = "unverified, newer than newest verified"


class RetentionPolicyError(ValueError):
    """A retention policy holds a key or value the engine cannot use."""


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 7
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 12
    max_age_days: int | None = None
    min_count: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "max_age_days" and value is None:
                continue
            # bool is an int subclass, but `keep_last: true` in a config is a mistake.
            if not isinstance(value, int) or isinstance(value, bool):
                raise RetentionPolicyError(
                    f"retention policy {f.name!r} must be an integer, got {value!r}"
                )
            if value < 0:
                raise RetentionPolicyError(
                    f"retention policy {f.name!r} must not be negative, got {value}"
                )
        if self.min_count < 1:
            raise RetentionPolicyError(
                f"retention policy 'min_count' must be at least 1, got {self.min_count}"
            )

    @classmethod
    def from_dict(cls, data: Mapping) -> "RetentionPolicy":
        """A policy from configuration; keys left out take their defaults."""
        if not isinstance(data, Mapping):
            raise RetentionPolicyError(
                f"retention policy must be a mapping, got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise RetentionPolicyError(
                f"unknown retention policy key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        return cls(**data)


@dataclass(frozen=True)
class Backup:
    backup_id: str
    created_at: datetime  # tz-aware; the backup's consistency point
    verified: bool = True


@dataclass(frozen=True)
class RetentionPlan:
    keep: dict[str, list[str]]  # backup_id -> reasons, newest backup first
    delete: list[str]  # oldest first

    def summary(self) -> str:
        return f"kept {len(self.keep)}, deleted {len(self.delete)}"


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _iso_week(moment: datetime) -> str:
    year, week, _ = moment.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


def _month(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def _newest_per_period(
    newest_first: list[Backup], count: int, period: Callable[[datetime], str]
) -> dict[str, str]:
    """backup_id -> period, for the newest backup of each of the `count` newest periods."""
    chosen: dict[str, str] = {}
    seen: set[str] = set()
    for backup in newest_first:
        if len(seen) >= count:
            break
        key = period(backup.created_at)
        if key not in seen:
            seen.add(key)
            chosen[backup.backup_id] = key
    return chosen


def _check_inputs(backups: Sequence[Backup], now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    seen: set[str] = set()
    duplicates: set[str] = set()
    for backup in backups:
        if backup.created_at.tzinfo is None:
            raise ValueError(f"backup {backup.backup_id!r} has a naive created_at")
        if backup.backup_id in seen:
            duplicates.add(backup.backup_id)
        seen.add(backup.backup_id)
    if duplicates:
        raise ValueError(f"duplicate backup_id(s): {', '.join(sorted(duplicates))}")


def plan_retention(
    backups: Sequence[Backup], policy: RetentionPolicy, now: datetime
) -> RetentionPlan:
    """The plan for one target's backups under `policy` at `now` (see the module docstring)."""
    _check_inputs(backups, now)
    newest_first = sorted(backups, key=lambda b: (b.created_at, b.backup_id), reverse=True)
    verified = [b for b in newest_first if b.verified]
    if not verified:
        return RetentionPlan(
            keep={b.backup_id: [NO_VERIFIED_BACKUP] for b in newest_first}, delete=[]
        )

    reasons: dict[str, list[str]] = {b.backup_id: [] for b in newest_first}

    cutoff = None if policy.max_age_days is None else now - timedelta(days=policy.max_age_days)
    # Tiers count over all verified backups and age only takes reasons away afterwards. As
    # periods run newest first, this keeps the same backups as counting the unexpired ones alone.
    tiered_ids = {b.backup_id for b in verified if cutoff is None or b.created_at >= cutoff}
    for backup in verified[: policy.keep_last]:
        if backup.backup_id in tiered_ids:
            reasons[backup.backup_id].append(f"last {policy.keep_last}")
    for name, count, period in (
        ("daily", policy.keep_daily, _day),
        ("weekly", policy.keep_weekly, _iso_week),
        ("monthly", policy.keep_monthly, _month),
    ):
        for backup_id, key in _newest_per_period(verified, count, period).items():
            if backup_id in tiered_ids:
                reasons[backup_id].append(f"{name} {key}")

    unverified = [b for b in newest_first if not b.verified]
    for backup in (verified + unverified)[: policy.min_count]:
        reasons[backup.backup_id].append(MIN_COUNT)

    reasons[verified[0].backup_id].append(NEWEST_VERIFIED)
    # Everything sorted before the newest verified backup is unverified and newer than it.
    for backup in newest_first[: newest_first.index(verified[0])]:
        reasons[backup.backup_id].append(NEWER_THAN_NEWEST_VERIFIED)

    keep = {backup_id: why for backup_id, why in reasons.items() if why}
    delete = [b.backup_id for b in reversed(newest_first) if b.backup_id not in keep]
    return RetentionPlan(keep=keep, delete=delete)
