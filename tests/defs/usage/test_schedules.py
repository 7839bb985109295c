"""The nightly usage schedule: yesterday plus the late-event lookback, as one range run."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from gsv_pipelines.definitions import defs as load_defs


def _request(when: datetime) -> dg.RunRequest:
    schedule = load_defs().resolve_schedule_def("usage_schedule")
    with dg.build_schedule_context(scheduled_execution_time=when) as context:
        return schedule(context)


def test_the_nightly_run_covers_yesterday_and_the_three_days_before():
    request = _request(datetime(2026, 3, 10, 1, 30, tzinfo=UTC))
    assert request.run_key == "2026-03-06..2026-03-09"
    assert request.tags["dagster/asset_partition_range_start"] == "2026-03-06"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-03-09"


def test_the_lookback_stops_at_the_first_partition():
    request = _request(datetime(2026, 1, 3, 1, 30, tzinfo=UTC))
    assert request.tags["dagster/asset_partition_range_start"] == "2026-01-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-01-02"


@pytest.mark.parametrize(("env", "status"), [("local", "STOPPED"), ("prod", "RUNNING")])
def test_gsv_env_decides_whether_the_schedule_runs(monkeypatch, env, status):
    monkeypatch.setenv("GSV_ENV", env)
    schedule = load_defs().resolve_schedule_def("usage_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus[status]
    assert schedule.cron_schedule == "30 1 * * *"
    assert schedule.job_name == "usage_job"
