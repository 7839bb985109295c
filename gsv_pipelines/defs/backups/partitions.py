import dagster as dg

# A backup's day is the day it was taken: today's partition exists from midnight on.
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)

# One partition per Qdrant collection, kept in sync by qdrant_collections_sensor.
COLLECTIONS = dg.DynamicPartitionsDefinition(name="qdrant_collections")

QDRANT_BACKUP_PARTITIONS = dg.MultiPartitionsDefinition({"day": DAILY, "collection": COLLECTIONS})
