"""Daily rescans of what runs: a deployed image is scanned again once its latest scan used
another vulnerability DB or another scan policy than the current ones."""

import json
import time

import dagster as dg

from gsv_pipelines.defs.automation import sensor_status
from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource
from gsv_pipelines.resources.trivy import TrivyResource

SCAN_JOB = "image_scan_job"
SCAN_OP = "scanning__image_scan"
# Runs requested per tick: a new DB makes every running image due at once, and the scans queue
# for the trivy_scan pool anyway; the rest are requested on the next ticks.
MAX_REQUESTS = 200
# Scan records are read (one per digest, from S3 in prod) until this far into a tick; the next
# tick goes on from there. A tick stays far inside Dagster's 60 s limit.
TICK_BUDGET_SECONDS = 30.0


def rescan_run_key(digest: str, db_updated_at: str, policy_sha256: str) -> str:
    """One run per digest, DB and policy: a digest is requested again only when one changes."""
    return f"{digest}|{db_updated_at}|{policy_sha256[:12]}"


def build_image_rescan_sensor(
    *,
    max_requests: int = MAX_REQUESTS,
    tick_budget_seconds: float = TICK_BUDGET_SECONDS,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """image_rescan_sensor, requesting at most `max_requests` runs per tick and reading scan
    records for at most `tick_budget_seconds` (at least one is always read)."""

    @dg.sensor(
        name="image_rescan_sensor",
        job_name=SCAN_JOB,
        minimum_interval_seconds=3600,
        default_status=default_status,
        description="Rescans what runs: every digest of the newest scanning/deployed_images "
        "whose latest scan is missing or was made with another vulnerability DB (scanning/"
        "trivy_db's UpdatedAt) or another scan policy (its sha256). One run per digest, DB and "
        f"policy (run key digest|UpdatedAt|policy sha256[:12]), at most {max_requests} a tick.",
    )
    def image_rescan_sensor(
        context: dg.SensorEvaluationContext,
        artefact_store: ArtefactStoreResource,
        trivy: TrivyResource,
        policies: PoliciesResource,
    ):
        # Imported here: pandas and pyarrow load slowly, and only ticks need them.
        from gsv_pipelines.lib.scanning import deployed as lib
        from gsv_pipelines.lib.scanning.store import ScanStoreError, latest_scan

        scanner = trivy.trivy()
        db = scanner.db_metadata()
        if db is None:
            return dg.SkipReason(
                f"no vulnerability DB in {scanner.describe()}: materialize scanning/trivy_db first"
            )
        db_updated_at = str(db.get("UpdatedAt"))
        policy_sha256 = policies.scanning().sha256
        store = artefact_store.store()
        key = lib.newest_deployed_key(store)
        if key is None:
            return dg.SkipReason(
                f"no deployed images in {store.location(lib.DEPLOYED_PREFIX)}: "
                "materialize scanning/deployed_images first"
            )
        references = lib.digest_references(lib.read_frame(store, key))
        digests = list(references)
        if not digests:
            return dg.SkipReason(f"{store.location(key)} lists no image digest")

        # Due-ness is recomputed from the scan records every tick; the cursor only says where the
        # last tick stopped reading, for a round robin. Without it, a tick cut by the cap or the
        # budget would re-read the same first digests forever: a failed scan's digest stays due,
        # and its run key (unchanged until the DB or policy is) makes Dagster skip it again.
        after = json.loads(context.cursor)["after"] if context.cursor else ""
        start = next((n for n, digest in enumerate(digests) if digest > after), 0)
        order = digests[start:] + digests[:start]
        started = time.monotonic()
        due: list[str] = []
        examined = 0
        for digest in order:
            if examined and time.monotonic() - started >= tick_budget_seconds:
                break
            examined += 1
            try:
                record = latest_scan(store, digest)
            except ScanStoreError as exc:
                # A rescan writes a new record: better than one bad file stopping every rescan.
                context.log.warning(f"{exc}: rescanning {digest}")
                record = None
            if record is None or not record.is_current(db_updated_at, policy_sha256):
                due.append(digest)
                if len(due) == max_requests:
                    break
        cursor = json.dumps({"after": order[examined - 1]})
        what = (
            f"{examined} of {len(digests)} deployed digests ({key}) read against the DB of "
            f"{db_updated_at} and policy {policy_sha256[:12]}"
        )
        if not due:
            return dg.SensorResult(skip_reason=f"nothing due: {what}", cursor=cursor)

        known = set(context.instance.get_dynamic_partitions(IMAGE_DIGESTS.name))
        new = [digest for digest in due if digest not in known]
        context.log.info(f"{len(due)} due ({len(new)} new partitions): {what}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=rescan_run_key(digest, db_updated_at, policy_sha256),
                    partition_key=digest,
                    run_config={"ops": {SCAN_OP: {"config": {"reference": references[digest]}}}},
                )
                for digest in due
            ],
            dynamic_partitions_requests=[IMAGE_DIGESTS.build_add_request(new)] if new else [],
            cursor=cursor,
        )

    return image_rescan_sensor


@dg.definitions
def rescan_sensors() -> dg.Definitions:
    return dg.Definitions(sensors=[build_image_rescan_sensor(default_status=sensor_status())])
