import dagster as dg

# One partition per image manifest digest (`sha256:<hex>`), added by image_push_sensor: a scan
# belongs to the bytes of an image, whatever tags or repositories point at them.
IMAGE_DIGESTS = dg.DynamicPartitionsDefinition(name="image_digests")

# The day of a deployed-images inventory and of a risk report; today's exists from midnight on.
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)
