from datetime import timedelta

import dagster as dg

from gsv_pipelines.defs.automation import schedule_status
from gsv_pipelines.defs.usage.assets import (
    agent_performance,
    billing,
    quota_status,
    subscription_metrics,
    tenant_usage,
    usage_events,
)
from gsv_pipelines.defs.usage.partitions import DAILY, LOOKBACK_DAYS

usage_job = dg.define_asset_job(
    "usage_job",
    selection=dg.AssetSelection.assets(
        usage_events, tenant_usage, agent_performance, billing, subscription_metrics, quota_status
    ),
    description="Extract, deduplicate and aggregate usage for one day or a range of days.",
)


def lookback_range(scheduled_day) -> tuple[str, str]:
    """The partitions a nightly run covers: yesterday and the LOOKBACK_DAYS before it."""
    last = scheduled_day - timedelta(days=1)
    first = max(last - timedelta(days=LOOKBACK_DAYS), DAILY.start.date())
    return first.isoformat(), last.isoformat()


@dg.definitions
def schedules() -> dg.Definitions:
    @dg.schedule(
        job=usage_job,
        cron_schedule="30 1 * * *",
        execution_timezone="UTC",
        default_status=schedule_status(),
        description=f"Nightly: yesterday's usage, and the {LOOKBACK_DAYS} days before it again "
        "(late events), as one run over the range so month-to-date figures see every day.",
    )
    def usage_schedule(context: dg.ScheduleEvaluationContext):
        first, last = lookback_range(context.scheduled_execution_time.date())
        return dg.RunRequest(
            run_key=f"{first}..{last}",
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            },
        )

    return dg.Definitions(jobs=[usage_job], schedules=[usage_schedule])
