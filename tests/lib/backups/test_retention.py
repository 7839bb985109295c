import random
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from gsv_pipelines.lib.backups.retention import (
    Backup,
    RetentionPolicy,
    RetentionPolicyError,
    plan_retention,
)

NOW = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)  # a Thursday, ISO week 2026-W45
NOTHING = RetentionPolicy(keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def backup(text: str, verified: bool = True) -> Backup:
    """A backup whose id is its UTC creation time, e.g. "2026-11-05T08:00"."""
    return Backup(backup_id=text, created_at=at(text), verified=verified)


def policy(**overrides) -> RetentionPolicy:
    return RetentionPolicy(**{**vars(NOTHING), **overrides})


# --- tiers -----------------------------------------------------------------------------------


def test_keep_last_keeps_the_newest_n():
    backups = [backup(f"2026-11-0{day}T02:00") for day in range(1, 6)]
    plan = plan_retention(backups, policy(keep_last=2), NOW)
    assert plan.keep == {
        "2026-11-05T02:00": ["last 2", "min_count", "newest verified"],
        "2026-11-04T02:00": ["last 2"],
    }
    assert plan.delete == ["2026-11-01T02:00", "2026-11-02T02:00", "2026-11-03T02:00"]


def test_daily_keeps_the_newest_backup_of_each_day():
    backups = [
        backup("2026-11-04T02:00"),
        backup("2026-11-04T14:00"),
        backup("2026-11-03T02:00"),
        backup("2026-11-03T23:59"),
        backup("2026-11-02T02:00"),
    ]
    plan = plan_retention(backups, policy(keep_daily=2), NOW)
    assert plan.keep["2026-11-04T14:00"][0] == "daily 2026-11-04"
    assert plan.keep["2026-11-03T23:59"] == ["daily 2026-11-03"]
    assert set(plan.keep) == {"2026-11-04T14:00", "2026-11-03T23:59"}


def test_daily_counts_days_that_have_backups_not_days_back_from_now():
    backups = [backup("2026-10-01T02:00"), backup("2026-10-20T02:00"), backup("2026-09-01T02:00")]
    plan = plan_retention(backups, policy(keep_daily=2), NOW)
    assert set(plan.keep) == {"2026-10-20T02:00", "2026-10-01T02:00"}
    assert plan.delete == ["2026-09-01T02:00"]


def test_periods_are_utc_calendar_periods():
    # 01:30 at +02:00 is 23:30 UTC on the previous day.
    east = timezone(timedelta(hours=2))
    late = Backup("late", datetime(2026, 11, 5, 1, 30, tzinfo=east))
    early = backup("2026-11-04T02:00")
    plan = plan_retention([late, early], policy(keep_daily=2), NOW)
    assert plan.keep["late"][0] == "daily 2026-11-04"
    assert plan.delete == ["2026-11-04T02:00"]


def test_weekly_uses_iso_weeks_across_the_year_boundary():
    # Monday 2025-12-29 to Sunday 2026-01-04 is ISO week 2026-W01.
    backups = [
        backup("2025-12-28T02:00"),  # Sunday: 2025-W52
        backup("2025-12-29T02:00"),
        backup("2025-12-31T02:00"),
        backup("2026-01-04T02:00"),
        backup("2026-01-05T02:00"),  # Monday: 2026-W02
    ]
    plan = plan_retention(backups, policy(keep_weekly=3), NOW)
    assert {k: v[0] for k, v in plan.keep.items()} == {
        "2026-01-05T02:00": "weekly 2026-W02",
        "2026-01-04T02:00": "weekly 2026-W01",
        "2025-12-28T02:00": "weekly 2025-W52",
    }


def test_monthly_keeps_the_newest_of_each_month_skipping_empty_months():
    backups = [
        backup("2026-10-31T23:30"),
        backup("2026-10-15T02:00"),
        backup("2026-08-01T02:00"),
        backup("2026-07-31T02:00"),
    ]
    plan = plan_retention(backups, policy(keep_monthly=2), NOW)
    assert {k: v[0] for k, v in plan.keep.items()} == {
        "2026-10-31T23:30": "monthly 2026-10",
        "2026-08-01T02:00": "monthly 2026-08",
    }


def test_tiers_are_a_union_and_list_every_reason():
    backups = [backup("2026-11-05T02:00"), backup("2026-10-31T02:00"), backup("2026-10-30T02:00")]
    plan = plan_retention(backups, policy(keep_last=1, keep_daily=2, keep_monthly=2), NOW)
    assert plan.keep == {
        "2026-11-05T02:00": [
            "last 1",
            "daily 2026-11-05",
            "monthly 2026-11",
            "min_count",
            "newest verified",
        ],
        "2026-10-31T02:00": ["daily 2026-10-31", "monthly 2026-10"],
    }
    assert plan.delete == ["2026-10-30T02:00"]


def test_max_age_removes_tier_reasons_from_old_backups():
    backups = [backup("2026-11-04T02:00"), backup("2026-10-29T02:00"), backup("2026-10-01T02:00")]
    plan = plan_retention(backups, policy(keep_last=3, max_age_days=7), NOW)
    # The cutoff is 2026-10-29T12:00: 02:00 that day is older.
    assert set(plan.keep) == {"2026-11-04T02:00"}
    assert plan.delete == ["2026-10-01T02:00", "2026-10-29T02:00"]


def test_max_age_boundary_is_inclusive():
    backups = [backup("2026-11-04T02:00"), backup("2026-10-29T12:00")]
    plan = plan_retention(backups, policy(keep_last=2, max_age_days=7), NOW)
    assert plan.keep["2026-10-29T12:00"] == ["last 2"]


def test_min_count_overrides_max_age():
    backups = [backup(f"2026-0{month}-01T02:00") for month in range(1, 6)]
    plan = plan_retention(backups, policy(keep_last=5, max_age_days=30, min_count=3), NOW)
    assert plan.keep == {
        "2026-05-01T02:00": ["min_count", "newest verified"],
        "2026-04-01T02:00": ["min_count"],
        "2026-03-01T02:00": ["min_count"],
    }


def test_min_count_takes_verified_backups_before_newer_unverified_ones():
    backups = [
        backup("2026-11-05T02:00"),
        backup("2026-11-04T02:00", verified=False),
        backup("2026-11-03T02:00"),
        backup("2026-11-02T02:00"),
    ]
    plan = plan_retention(backups, policy(min_count=2), NOW)
    assert set(plan.keep) == {"2026-11-05T02:00", "2026-11-03T02:00"}
    assert plan.delete == ["2026-11-02T02:00", "2026-11-04T02:00"]


def test_min_count_falls_back_to_unverified_when_verified_run_out():
    backups = [
        backup("2026-11-05T02:00"),
        backup("2026-11-04T02:00", verified=False),
        backup("2026-11-03T02:00", verified=False),
        backup("2026-11-02T02:00", verified=False),
    ]
    plan = plan_retention(backups, policy(min_count=3), NOW)
    assert plan.keep == {
        "2026-11-05T02:00": ["min_count", "newest verified"],
        "2026-11-04T02:00": ["min_count"],
        "2026-11-03T02:00": ["min_count"],
    }
    assert plan.delete == ["2026-11-02T02:00"]


# --- unverified backups ----------------------------------------------------------------------


def test_unverified_backups_are_not_kept_by_tiers():
    backups = [backup("2026-11-04T02:00"), backup("2026-11-03T20:00", verified=False)]
    backups.append(backup("2026-11-03T02:00"))
    plan = plan_retention(backups, RetentionPolicy(), NOW)
    assert plan.keep["2026-11-03T02:00"][:2] == ["last 7", "daily 2026-11-03"]
    assert plan.delete == ["2026-11-03T20:00"]


def test_unverified_backups_newer_than_the_newest_verified_are_kept():
    backups = [
        backup("2026-11-05T11:00", verified=False),
        backup("2026-11-05T08:00", verified=False),
        backup("2026-11-05T02:00"),
        backup("2026-11-04T02:00", verified=False),
    ]
    plan = plan_retention(backups, NOTHING, NOW)
    assert plan.keep == {
        "2026-11-05T11:00": ["unverified, newer than newest verified"],
        "2026-11-05T08:00": ["unverified, newer than newest verified"],
        "2026-11-05T02:00": ["min_count", "newest verified"],
    }
    assert plan.delete == ["2026-11-04T02:00"]


def test_without_a_verified_backup_nothing_is_deleted():
    backups = [backup("2026-11-05T02:00", verified=False), backup("2026-01-01T02:00", False)]
    plan = plan_retention(backups, policy(max_age_days=0), NOW)
    assert plan.delete == []
    assert plan.keep == {
        "2026-11-05T02:00": ["no verified backup"],
        "2026-01-01T02:00": ["no verified backup"],
    }


def test_no_backups_gives_an_empty_plan():
    plan = plan_retention([], RetentionPolicy(), NOW)
    assert (plan.keep, plan.delete, plan.summary()) == ({}, [], "kept 0, deleted 0")


# --- the newest verified backup is never deleted ---------------------------------------------


@pytest.mark.parametrize(
    "retention",
    [
        policy(max_age_days=0),  # all zeros, and min_count at its lowest
        RetentionPolicy(max_age_days=0),
        RetentionPolicy(keep_last=100, max_age_days=1),  # max_age older than every backup
    ],
)
def test_the_newest_verified_backup_is_never_deleted(retention):
    backups = [
        backup("2026-11-05T11:00", verified=False),
        backup("2026-10-01T02:00"),
        backup("2026-09-01T02:00"),
        backup("2026-08-01T02:00", verified=False),
    ]
    plan = plan_retention(backups, retention, NOW)
    assert "newest verified" in plan.keep["2026-10-01T02:00"]
    assert plan.delete == ["2026-08-01T02:00", "2026-09-01T02:00"]


# --- determinism and input checks ------------------------------------------------------------


def test_input_order_does_not_matter():
    backups = [backup(f"2026-{month:02d}-{day:02d}T02:00") for month in (9, 10) for day in (1, 15)]
    backups.append(Backup("b", at("2026-10-15T02:00")))  # same instant: ordered by backup_id
    expected = plan_retention(backups, policy(keep_last=2), NOW)
    assert expected.keep == {
        "b": ["last 2", "min_count", "newest verified"],
        "2026-10-15T02:00": ["last 2"],
    }
    for seed in range(5):
        shuffled = backups[:]
        random.Random(seed).shuffle(shuffled)
        assert plan_retention(shuffled, policy(keep_last=2), NOW) == expected


def test_duplicate_backup_ids_are_rejected():
    backups = [backup("2026-11-05T02:00"), Backup("2026-11-05T02:00", at("2026-11-01T02:00"))]
    with pytest.raises(ValueError, match="duplicate backup_id"):
        plan_retention(backups, RetentionPolicy(), NOW)


def test_naive_datetimes_are_rejected():
    with pytest.raises(ValueError, match="naive"):
        plan_retention([Backup("a", datetime(2026, 11, 5))], RetentionPolicy(), NOW)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        plan_retention([], RetentionPolicy(), datetime(2026, 11, 5))


def test_summary():
    backups = [backup(f"2026-11-0{day}T02:00") for day in range(1, 6)]
    assert plan_retention(backups, policy(keep_last=2), NOW).summary() == "kept 2, deleted 3"


# --- policy validation -----------------------------------------------------------------------


def test_policy_from_dict_takes_defaults_for_missing_keys():
    assert RetentionPolicy.from_dict({}) == RetentionPolicy()
    assert RetentionPolicy.from_dict({"keep_last": 3, "max_age_days": None}) == RetentionPolicy(
        keep_last=3
    )
    assert RetentionPolicy.from_dict({"max_age_days": 90, "min_count": 2}).max_age_days == 90


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"keep_hourly": 24}, "unknown retention policy key.*'keep_hourly'"),
        ({"keep_daily": -1}, "'keep_daily' must not be negative"),
        ({"max_age_days": -5}, "'max_age_days' must not be negative"),
        ({"keep_weekly": "4"}, "'keep_weekly' must be an integer"),
        ({"keep_monthly": 1.5}, "'keep_monthly' must be an integer"),
        ({"keep_last": True}, "'keep_last' must be an integer"),
        ({"min_count": None}, "'min_count' must be an integer"),
        ({"min_count": 0}, "'min_count' must be at least 1"),
    ],
)
def test_policy_from_dict_rejects_bad_values(data, message):
    with pytest.raises(RetentionPolicyError, match=message):
        RetentionPolicy.from_dict(data)


def test_policy_errors_are_value_errors():
    with pytest.raises(ValueError, match="must be a mapping"):
        RetentionPolicy.from_dict([("keep_last", 3)])
    with pytest.raises(ValueError, match="'keep_last'"):
        RetentionPolicy(keep_last=-1)


# --- a synthetic history of 400 days ---------------------------------------------------------


def history() -> list[Backup]:
    """400 days up to NOW: one verified backup a day at 02:00, with

    - no backups in March 2026 nor in ISO week 2026-W43 (Mon 10-19 to Sun 10-25),
    - an extra at 14:00 on the 10th, 20th and 30th of each month,
    - an extra at 23:30 on the last day of each month,
    - on NOW's day a verified extra at 08:00 and an unverified one at 11:00,
    - unverified backups on 2026-11-03 at 20:00 and 2026-09-30 at 23:59.
    """
    backups = []
    for back in range(400):
        day = NOW.date() - timedelta(days=back)
        if (day.year, day.month) == (2026, 3) or date(2026, 10, 19) <= day <= date(2026, 10, 25):
            continue
        times = ["02:00"]
        if day.day in (10, 20, 30):
            times.append("14:00")
        if (day + timedelta(days=1)).day == 1:
            times.append("23:30")
        backups += [backup(f"{day}T{time}") for time in times]
    backups += [
        backup("2026-11-05T08:00"),
        backup("2026-11-05T11:00", verified=False),
        backup("2026-11-03T20:00", verified=False),
        backup("2026-09-30T23:59", verified=False),
    ]
    return backups


# Worked out by hand from the calendar, not by the engine.
LAST_3 = {"2026-11-05T08:00", "2026-11-05T02:00", "2026-11-04T02:00"}
DAILY_7 = {
    "2026-11-05T08:00",
    "2026-11-04T02:00",
    "2026-11-03T02:00",  # the 20:00 one is unverified
    "2026-11-02T02:00",
    "2026-11-01T02:00",
    "2026-10-31T23:30",
    "2026-10-30T14:00",
}
WEEKLY_4 = {
    "2026-11-05T08:00",  # W45
    "2026-11-01T02:00",  # W44 ends on Sunday 11-01; W43 has no backups
    "2026-10-18T02:00",  # W42
    "2026-10-11T02:00",  # W41
}
MONTHLY_12 = {
    "2026-11-05T08:00",
    "2026-10-31T23:30",
    "2026-09-30T23:30",  # the 23:59 one is unverified
    "2026-08-31T23:30",
    "2026-07-31T23:30",
    "2026-06-30T23:30",
    "2026-05-31T23:30",
    "2026-04-30T23:30",
    # March 2026 has no backups
    "2026-02-28T23:30",
    "2026-01-31T23:30",
    "2025-12-31T23:30",
    "2025-11-30T23:30",
}
PENDING = {"2026-11-05T11:00"}


def test_history_of_400_days():
    backups = history()
    assert len(backups) == 400 - 31 - 7 + 34 + 12 + 4  # days, extras at 14:00 and 23:30, others
    retention = RetentionPolicy(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=12)
    plan = plan_retention(backups, retention, NOW)

    expected = LAST_3 | DAILY_7 | WEEKLY_4 | MONTHLY_12 | PENDING
    assert len(expected) == 21
    assert set(plan.keep) == expected
    assert plan.keep["2026-11-05T08:00"] == [
        "last 3",
        "daily 2026-11-05",
        "weekly 2026-W45",
        "monthly 2026-11",
        "min_count",
        "newest verified",
    ]
    assert plan.keep["2026-10-31T23:30"] == ["daily 2026-10-31", "monthly 2026-10"]
    assert plan.keep["2025-11-30T23:30"] == ["monthly 2025-11"]
    assert plan.delete == sorted(b.backup_id for b in backups if b.backup_id not in expected)
    assert plan.summary() == f"kept 21, deleted {len(backups) - 21}"


def test_history_of_400_days_with_max_age():
    retention = RetentionPolicy(keep_last=3, keep_daily=7, keep_weekly=4, max_age_days=60)
    plan = plan_retention(history(), retention, NOW)
    # The cutoff is 2026-09-06T12:00: of the monthly backups only Sept to Nov remain.
    recent_months = {"2026-11-05T08:00", "2026-10-31T23:30", "2026-09-30T23:30"}
    assert set(plan.keep) == LAST_3 | DAILY_7 | WEEKLY_4 | recent_months | PENDING


# --- invariants over random histories --------------------------------------------------------


def random_history(rng: random.Random) -> list[Backup]:
    backups = []
    for number in range(rng.randint(0, 80)):
        created_at = NOW - timedelta(minutes=rng.randint(0, 200 * 24 * 60))
        backups.append(Backup(f"b{number}", created_at, verified=rng.random() < 0.8))
    return backups


def random_policy(rng: random.Random) -> RetentionPolicy:
    return RetentionPolicy(
        keep_last=rng.randint(0, 5),
        keep_daily=rng.randint(0, 10),
        keep_weekly=rng.randint(0, 5),
        keep_monthly=rng.randint(0, 6),
        max_age_days=rng.choice([None, 0, 10, 90]),
        min_count=rng.randint(1, 4),
    )


def test_invariants_hold_for_random_histories():
    for seed in range(200):
        rng = random.Random(seed)
        backups, retention = random_history(rng), random_policy(rng)
        plan = plan_retention(backups, retention, NOW)
        ids = {b.backup_id for b in backups}
        kept, deleted = set(plan.keep), set(plan.delete)

        assert kept | deleted == ids, seed
        assert not kept & deleted, seed
        assert len(plan.delete) == len(deleted), seed
        assert all(plan.keep.values()), seed
        by_id = {b.backup_id: b for b in backups}
        assert [by_id[i].created_at for i in plan.delete] == sorted(
            by_id[i].created_at for i in plan.delete
        ), seed

        verified = [b for b in backups if b.verified]
        if not verified:
            assert not deleted, seed
            continue
        newest = max(verified, key=lambda b: (b.created_at, b.backup_id))
        assert "newest verified" in plan.keep[newest.backup_id], seed
        newest_kept = sorted(verified, key=lambda b: b.created_at, reverse=True)
        assert len([b for b in newest_kept if b.backup_id in kept]) >= min(
            retention.min_count, len(verified)
        ), seed

        shuffled = backups[:]
        rng.shuffle(shuffled)
        assert plan_retention(shuffled, retention, NOW) == plan, seed
        # Planning again over what was kept deletes nothing more.
        survivors = [b for b in backups if b.backup_id in kept]
        assert plan_retention(survivors, retention, NOW).delete == [], seed
