import dagster as dg

from gsv_pipelines.lib.core.settings import load_settings

# One partition per image manifest digest (`sha256:<hex>`), added by image_push_sensor: a scan
# belongs to the bytes of an image, whatever tags or repositories point at them.
IMAGE_DIGESTS = dg.DynamicPartitionsDefinition(name="image_digests")

# The day of a deployed-images inventory and of a risk report; today's exists from midnight on.
# What ran on a day is observed that day: the days start at GSV_PARTITIONS_START.
DAILY = dg.DailyPartitionsDefinition(
    start_date=load_settings().partitions_start.isoformat(), end_offset=1
)
