import dagster as dg

from gsv_pipelines.lib.core.settings import load_settings

# A backup's day is the day it was taken: today's partition exists from midnight on. Days before
# GSV_PARTITIONS_START are not partitions: a backup of a past day cannot be taken afterwards.
DAILY = dg.DailyPartitionsDefinition(
    start_date=load_settings().partitions_start.isoformat(), end_offset=1
)

# One partition per Qdrant collection, kept in sync by qdrant_collections_sensor.
COLLECTIONS = dg.DynamicPartitionsDefinition(name="qdrant_collections")

QDRANT_BACKUP_PARTITIONS = dg.MultiPartitionsDefinition({"day": DAILY, "collection": COLLECTIONS})
