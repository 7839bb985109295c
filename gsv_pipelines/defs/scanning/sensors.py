"""The `scanning` group's sensor: every image digest pushed to a watched registry gets scanned,
and a scan that failed before recording anything is tried again, with a backoff."""

import time
from collections import Counter

import dagster as dg

from gsv_pipelines.defs.automation import sensor_status
from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
from gsv_pipelines.lib.scanning import retry as scan_retry
from gsv_pipelines.lib.scanning.push_watch import WatchResult, dump_cursor, load_cursor, watch
from gsv_pipelines.lib.scanning.registries import RegistryConfig
from gsv_pipelines.lib.scanning.registry_client import TIMEOUT, RegistryClient
from gsv_pipelines.resources.registries import RegistriesResource
from gsv_pipelines.resources.vault import VaultResource

SCAN_JOB = "image_scan_job"
SCAN_OP = "scanning__image_scan"
IMAGE_SCAN = dg.AssetKey(["scanning", "image_scan"])
ATTEMPT_TAG = "gsv/scan-attempt"
# Digests without a scan whose runs are looked at per tick; the others wait for the next tick.
MAX_RETRY_CHECKS = 200
# Runs of a digest looked at: enough to count the failures the backoff's cap is reached with.
RETRY_HISTORY = 20
_STATUS = {
    dg.DagsterRunStatus.FAILURE: scan_retry.FAILED,
    dg.DagsterRunStatus.CANCELED: scan_retry.CANCELED,
    dg.DagsterRunStatus.SUCCESS: scan_retry.SUCCEEDED,
}
# No registry request starts later than this into a tick; what is left waits for the next tick
# with its cursor untouched. A stalled registry costs one connect + read timeout (5 + 10 s) on
# top, so a tick ends far inside Dagster's 60 s limit.
TICK_BUDGET_SECONDS = 25.0


def _scan_runs(instance: dg.DagsterInstance, digest: str) -> list[scan_retry.ScanRun]:
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=SCAN_JOB, tags={"dagster/partition": digest}),
        limit=RETRY_HISTORY,
    )
    return [
        scan_retry.ScanRun(
            status=_STATUS.get(r.dagster_run.status, scan_retry.IN_PROGRESS),
            ended_at=r.end_time or r.update_timestamp.timestamp(),
            run_config=r.dagster_run.run_config,
            tags=r.dagster_run.tags,
        )
        for r in records
    ]


def _retries(
    context: dg.SensorEvaluationContext,
    requested: set[str],
    base: float,
    cap: float,
    deadline: float,
) -> tuple[list[dg.RunRequest], list[str]]:
    """A run request for each digest partition without a scan whose backoff is over, and what
    the tick says about the others (waiting, running, canceled, not looked at yet)."""
    instance = context.instance
    scanned = instance.get_materialized_partitions(IMAGE_SCAN)
    unscanned = [
        digest
        for digest in instance.get_dynamic_partitions(IMAGE_DIGESTS.name)
        if digest not in scanned and digest not in requested
    ]
    requests, waiting, notes = [], [], Counter()
    now = time.time()
    for checked, digest in enumerate(unscanned):
        if checked == MAX_RETRY_CHECKS or time.monotonic() > deadline:
            notes["not looked at until a later tick"] = len(unscanned) - checked
            break
        decision = scan_retry.decide(_scan_runs(instance, digest), now, base, cap)
        if decision.action == "retry":
            config = (decision.run_config.get("ops") or {}).get(SCAN_OP)
            image = decision.tags.get("gsv/image")
            requests.append(
                dg.RunRequest(
                    run_key=f"{digest}|attempt-{decision.attempt}",
                    partition_key=digest,
                    run_config={"ops": {SCAN_OP: config}} if config else {},
                    tags={
                        ATTEMPT_TAG: str(decision.attempt),
                        **({"gsv/image": image} if image else {}),
                    },
                )
            )
        elif decision.action == "wait":
            waiting.append(
                f"{digest[:19]} (attempt {decision.attempt} in {decision.due_in / 60:.0f} min)"
            )
        else:
            notes[decision.action] += 1
    said = []
    if requests:
        said.append(
            f"{len(requests)} failed or missing scan(s) retried: "
            + ", ".join(
                f"{r.partition_key[:19]} attempt {r.tags[ATTEMPT_TAG]}" for r in requests[:10]
            )
        )
    if waiting:
        said.append(
            f"{len(waiting)} failed scan(s) waiting for their backoff: " + ", ".join(waiting[:10])
        )
    said += [f"{count} unscanned digest(s) {what}" for what, count in sorted(notes.items())]
    return requests, said


def _skipped(result: WatchResult) -> str | None:
    if not result.skipped:
        return None
    kinds = Counter(artifact.kind for artifact in result.skipped)
    where = ", ".join(f"{a.repository}:{a.tag} ({a.kind})" for a in result.skipped[:10])
    return (
        f"{len(result.skipped)} non-image artifact(s) skipped, not scanned: "
        + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        + f" ({where})"
    )


def build_image_push_sensor(
    *,
    timeout: tuple[float, float] = TIMEOUT,
    retry_base_seconds: float = scan_retry.BASE_SECONDS,
    retry_cap_seconds: float = scan_retry.CAP_SECONDS,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """image_push_sensor, with registry requests given up after `timeout` (connect, read), and a
    failed scan retried after `retry_base_seconds`, doubling up to `retry_cap_seconds`."""

    @dg.sensor(
        name="image_push_sensor",
        job_name=SCAN_JOB,
        minimum_interval_seconds=30,
        default_status=default_status,
        description="Watches the registries and repositories listed in GSV_REGISTRIES (OCI "
        "distribution API: catalog, tags, manifest digests) and scans each image digest not seen "
        "before: one partition of scanning/image_scan and one run per digest (run key = digest). "
        "Artifacts that are not images (a Trivy DB, signatures, SBOMs: by manifest media types) "
        "are skipped and counted. A digest whose scan failed before recording anything is "
        "scanned again after a backoff (5 min, doubling, at most 6 h; run key digest|attempt-N). "
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
            f"{len(result.new_images)} new digests, {len(result.skipped)} non-image artifacts "
            f"skipped in {time.monotonic() - started:.1f} s"
        )
        context.log.info(summary)
        retries, said = _retries(
            context,
            {image.digest for image in result.new_images},
            retry_base_seconds,
            retry_cap_seconds,
            started + TICK_BUDGET_SECONDS,
        )
        skipped = _skipped(result)
        said = [skipped, *said] if skipped else said
        for line in said:
            context.log.info(line)
        cursor = dump_cursor(result.cursor)
        if not result.new_images and not retries:
            reason = "; ".join([f"no new digest: {summary}", *said])
            return dg.SensorResult(skip_reason=reason, cursor=cursor)

        partitions = set(context.instance.get_dynamic_partitions(IMAGE_DIGESTS.name))
        missing = [image.digest for image in result.new_images if image.digest not in partitions]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=image.digest,
                    partition_key=image.digest,
                    run_config={
                        "ops": {
                            SCAN_OP: {
                                "config": {
                                    "reference": image.reference,
                                    "image": f"{image.repository}:{image.tag}",
                                }
                            }
                        }
                    },
                    tags={"gsv/image": f"{image.repository}:{image.tag}", ATTEMPT_TAG: "1"},
                )
                for image in result.new_images
            ]
            + retries,
            dynamic_partitions_requests=[IMAGE_DIGESTS.build_add_request(missing)]
            if missing
            else [],
            cursor=cursor,
        )

    return image_push_sensor


@dg.definitions
def sensors() -> dg.Definitions:
    return dg.Definitions(sensors=[build_image_push_sensor(default_status=sensor_status())])
