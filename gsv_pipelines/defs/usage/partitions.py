import dagster as dg

# A usage day is complete once it has ended: the last partition is yesterday (UTC).
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")

# Late events: the schedule re-aggregates this many days before yesterday as well.
LOOKBACK_DAYS = 3
