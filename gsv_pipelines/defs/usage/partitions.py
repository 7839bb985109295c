import dagster as dg

from gsv_pipelines.lib.core.settings import load_settings

# A usage day is complete once it has ended: the last partition is yesterday (UTC). The first is
# GSV_USAGE_PARTITIONS_START (default GSV_PARTITIONS_START): any earlier day the platform database
# holds events for may be set there and backfilled.
DAILY = dg.DailyPartitionsDefinition(
    start_date=load_settings().usage_partitions_start.isoformat(), timezone="UTC"
)

# Late events: the schedule re-aggregates this many days before yesterday as well.
LOOKBACK_DAYS = 3
