"""The `scanning` group's sensor: every image digest pushed to a watched registry gets scanned."""

import time

import dagster as dg

from gsv_pipelines.defs.automation import sensor_status
from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
from gsv_pipelines.lib.push_watch import dump_cursor, load_cursor, watch
from gsv_pipelines.lib.registries import RegistryConfig
from gsv_pipelines.lib.registry_client import TIMEOUT, RegistryClient
from gsv_pipelines.resources.registries import RegistriesResource
from gsv_pipelines.resources.vault import VaultResource

SCAN_JOB = "image_scan_job"
SCAN_OP = "scanning__image_scan"
# No registry request starts later than this into a tick; what is left waits for the next tick
# with its cursor untouched. A stalled registry costs one connect + read timeout (5 + 10 s) on
# top, so a tick ends far inside Dagster's 60 s limit.
TICK_BUDGET_SECONDS = 25.0


def build_image_push_sensor(
    *,
    timeout: tuple[float, float] = TIMEOUT,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """image_push_sensor, with registry requests given up after `timeout` (connect, read)."""

    @dg.sensor(
        name="image_push_sensor",
        job_name=SCAN_JOB,
        minimum_interval_seconds=30,
        default_status=default_status,
        description="Watches the registries and repositories listed in GSV_REGISTRIES (OCI "
        "distribution API: catalog, tags, manifest digests) and scans each image digest not seen "
        "before: one partition of scanning/image_scan and one run per digest (run key = digest). "
        "A registry that errors keeps its cursor and is caught up on a later tick.",
    )
    def image_push_sensor(
        context: dg.SensorEvaluationContext,
        registries: RegistriesResource,
        vault: VaultResource,
    ):
        configs = registries.configs()
        if not configs:
            return dg.SkipReason(
                "GSV_REGISTRIES is unset: no registry to watch"
                if not registries.path
                else f"GSV_REGISTRIES ({registries.path}) lists no registry"
            )
        started = time.monotonic()

        def client_for(config: RegistryConfig) -> RegistryClient:
            # Vault is only contacted for a registry whose credentials live there.
            return RegistryClient(config, registries.credentials(config, vault), timeout=timeout)

        result = watch(
            configs,
            load_cursor(context.cursor),
            client_for,
            deadline=started + TICK_BUDGET_SECONDS,
        )
        for error in result.errors:
            context.log.warning(str(error))
        if len(result.failed_registries) == len(configs):
            raise RuntimeError(
                "no registry could be read, the cursor is kept: "
                + "; ".join(str(error) for error in result.errors)
            )
        summary = (
            f"{len(configs) - len(result.failed_registries)}/{len(configs)} registries, "
            f"{result.repositories} repositories, {result.tags} tags, "
            f"{len(result.new_images)} new digests in {time.monotonic() - started:.1f} s"
        )
        context.log.info(summary)
        cursor = dump_cursor(result.cursor)
        if not result.new_images:
            return dg.SensorResult(skip_reason=f"no new digest: {summary}", cursor=cursor)

        partitions = set(context.instance.get_dynamic_partitions(IMAGE_DIGESTS.name))
        missing = [image.digest for image in result.new_images if image.digest not in partitions]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=image.digest,
                    partition_key=image.digest,
                    run_config={"ops": {SCAN_OP: {"config": {"reference": image.reference}}}},
                    tags={"gsv/image": image.reference},
                )
                for image in result.new_images
            ],
            dynamic_partitions_requests=[IMAGE_DIGESTS.build_add_request(missing)]
            if missing
            else [],
            cursor=cursor,
        )

    return image_push_sensor


@dg.definitions
def sensors() -> dg.Definitions:
    return dg.Definitions(sensors=[build_image_push_sensor(default_status=sensor_status())])
