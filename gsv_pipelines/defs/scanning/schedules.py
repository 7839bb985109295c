import dagster as dg

from gsv_pipelines.defs.automation import schedule_status
from gsv_pipelines.defs.scanning.deployed import deployed_images, image_risk_report

deployed_images_job = dg.define_asset_job(
    "deployed_images_job",
    selection=dg.AssetSelection.assets(deployed_images, image_risk_report),
    description="Record the day's deployed images, then report their risk from the latest scans.",
)


@dg.definitions
def schedules() -> dg.Definitions:
    status = schedule_status()
    # 06:00 UTC, today's partition (the daily partitions end today): after trivy_db's 01:00
    # refresh, so the rescans image_rescan_sensor asked for have had hours to run.
    deployed_images_schedule = dg.build_schedule_from_partitioned_job(
        deployed_images_job,
        name="deployed_images_schedule",
        description="Daily: today's deployed images and image risk report.",
        hour_of_day=6,
        minute_of_hour=0,
        default_status=status,
    )
    return dg.Definitions(jobs=[deployed_images_job], schedules=[deployed_images_schedule])
