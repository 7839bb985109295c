"""The `alerts` sensors: a message when a run fails or an asset check fails for a partition, one
per incident, and one when it clears (gsv_pipelines/lib/alerts/).

Both read the same feed: runs as they end, in the order the instance stored their end events
(Dagster's run-status change records, the ones its run-status sensors read), each run's outcome
and the asset-check evaluations it recorded. `run_failure_alert_sensor` follows runs: a failed
run of a job (and partition) opens an incident that the next successful run of the same job and
partition resolves. `check_failure_alert_sensor` follows checks: a failed evaluation of a check
for one partition (the evaluation's own partition, else the run's) opens an incident that a
passing evaluation of the same check and partition resolves. Each sensor keeps its place in the
feed in its cursor and its incidents in the artefact store, so a restart neither repeats nor
loses a message; alerts it cannot deliver become dead letters (`gsv alerts replay`).
"""

import json
import time
from collections.abc import Callable

import dagster as dg

from gsv_pipelines.defs.automation import sensor_status
from gsv_pipelines.lib.alerts.incidents import Incidents, Observation
from gsv_pipelines.lib.alerts.messages import asset_link, run_link
from gsv_pipelines.lib.alerts.policy import DOMAINS, alert_severity
from gsv_pipelines.resources.notifier import NotifierResource
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource

RUN_ENDS = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
# Run ends read per event type and tick, and when a tick stops taking new runs: what is left
# waits for the next tick, and the deliveries under way finish far inside the 60 s limit.
BATCH = 25
TICK_BUDGET_SECONDS = 25.0
PARTITION_TAG = "dagster/partition"
# Metadata a message shows as figures: numbers and short texts (tables and markdown stay in the UI).
FIGURE_TYPES = (
    dg.IntMetadataValue,
    dg.FloatMetadataValue,
    dg.TextMetadataValue,
    dg.BoolMetadataValue,
)

Observer = Callable[[dg.DagsterInstance, dg.DagsterRun, dg.EventLogRecord, str], list[Observation]]


def run_ends(
    instance: dg.DagsterInstance, after: int, limit: int = BATCH
) -> list[dg.EventLogRecord]:
    """Runs' end events stored after `after`, in storage order, without gaps: where one type's
    page is full, nothing of another type past its last record is returned yet."""
    pages = []
    for event_type in RUN_ENDS:
        records = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after),
            limit=limit,
            ascending=True,
        ).records
        pages.append(records)
    full = [page[-1].storage_id for page in pages if len(page) == limit]
    cutoff = min(full) if full else None
    merged = [r for page in pages for r in page if cutoff is None or r.storage_id <= cutoff]
    return sorted(merged, key=lambda r: r.storage_id)


def latest_run_end(instance: dg.DagsterInstance) -> int:
    newest = [
        instance.fetch_run_status_changes(event_type, limit=1).records for event_type in RUN_ENDS
    ]
    return max((page[0].storage_id for page in newest if page), default=-1)


def run_partition(tags) -> str | None:
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    first = tags.get("dagster/asset_partition_range_start")
    last = tags.get("dagster/asset_partition_range_end")
    return f"{first}...{last}" if first and last else None


def _labelled(name: str, partition: str | None) -> str:
    return f"{name} [{partition}]" if partition else name


def _domains(keys) -> tuple[str, ...]:
    return tuple(sorted({k.path[0] for k in keys if k.path and k.path[0] in DOMAINS}))


def _run_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[dg.AssetKey]:
    keys = set(run.asset_selection or ())
    keys |= {check.asset_key for check in run.asset_check_selection or ()}
    if not keys:
        planned = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        ).records
        keys = {r.event_log_entry.dagster_event.asset_key for r in planned}
    return keys


def observe_run(
    instance: dg.DagsterInstance, run: dg.DagsterRun, end: dg.EventLogRecord, ui_url: str
) -> list[Observation]:
    """The run's outcome for its job and partition; a canceled run is an operator's act, not an
    incident or a recovery."""
    event_type = end.event_log_entry.dagster_event_type
    if event_type == dg.DagsterEventType.RUN_CANCELED:
        return []
    failed = event_type == dg.DagsterEventType.RUN_FAILURE
    partition = run_partition(run.tags)
    assets = _run_assets(instance, run)
    subject = {"kind": "run", "job": run.job_name, "partition": partition}
    if run.job_name.startswith("__ASSET_JOB"):
        # Materializations launched from the UI all share this job: what ran tells them apart.
        subject["assets"] = sorted(k.to_user_string() for k in assets)
    figures: dict = {"run_id": run.run_id}
    record = instance.get_run_record_by_id(run.run_id)
    if record and record.start_time and record.end_time:
        figures["duration_seconds"] = round(record.end_time - record.start_time, 1)
    summary = f"Run {run.run_id} of {run.job_name} succeeded."
    if failed:
        steps = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
        ).records
        names = [r.event_log_entry.dagster_event.step_key for r in steps]
        errors = [
            r.event_log_entry.dagster_event.step_failure_data.error
            for r in steps
            if r.event_log_entry.dagster_event.step_failure_data.error
        ]
        figures["failed_steps"] = len(names)
        first = errors[0].message.strip().splitlines()[0] if errors else ""
        summary = (
            f"{len(names)} step(s) failed: {', '.join(names)}. {first}"
            if names
            else end.event_log_entry.dagster_event.message or "The run failed."
        )
    return [
        Observation(
            subject=subject,
            what="run",
            label=_labelled(run.job_name, partition),
            failed=failed,
            at=end.event_log_entry.timestamp,
            severity="error",
            run_id=run.run_id,
            domains=_domains(assets),
            summary=summary,
            figures=figures,
            links={"run": run_link(ui_url, run.run_id)},
        )
    ]


def observe_checks(
    instance: dg.DagsterInstance, run: dg.DagsterRun, end: dg.EventLogRecord, ui_url: str
) -> list[Observation]:
    """Every asset-check evaluation the run recorded, each for its own partition."""
    records = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    seen = []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.asset_check_evaluation_data
        partition = evaluation.partition or run_partition(run.tags)
        asset = evaluation.asset_key.to_user_string()
        links = {"check": asset_link(ui_url, asset, check=evaluation.check_name)}
        if partition:
            links["partition"] = asset_link(ui_url, asset, partition=partition)
        links["run"] = run_link(ui_url, run.run_id)
        seen.append(
            Observation(
                subject={
                    "kind": "check",
                    "asset": asset,
                    "check": evaluation.check_name,
                    "partition": partition,
                },
                what=evaluation.check_name,
                label=_labelled(asset, partition),
                failed=not evaluation.passed,
                at=record.event_log_entry.timestamp,
                severity=alert_severity(evaluation.severity.value),
                run_id=run.run_id,
                domains=_domains([evaluation.asset_key]),
                summary=evaluation.description or "",
                figures={
                    name: value.value
                    for name, value in evaluation.metadata.items()
                    if isinstance(value, FIGURE_TYPES)
                },
                links=links,
            )
        )
    return seen


def evaluate(
    context: dg.SensorEvaluationContext,
    observe: Observer,
    notifier: NotifierResource,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
) -> dg.SensorResult:
    """One tick: the runs that ended since the cursor, observed, incidents updated, alerts sent."""
    instance = context.instance
    if context.cursor is None:
        # A sensor turned on for the first time alerts on what ends from now on, not on history.
        start = latest_run_end(instance)
        return dg.SensorResult(
            cursor=json.dumps({"after": start}),
            skip_reason=f"starting after run-end event {start}",
        )
    after = json.loads(context.cursor)["after"]
    store = artefact_store.store()
    sender = notifier.notifier(policies.alerts(), store, log=context.log)
    incidents = Incidents(store)
    started, runs, sent = time.monotonic(), 0, []
    try:
        for end in run_ends(instance, after):
            if time.monotonic() - started > TICK_BUDGET_SECONDS:
                break
            run = instance.get_run_by_id(end.event_log_entry.run_id)
            if run is not None:
                for seen in observe(instance, run, end, notifier.ui_url):
                    alert = incidents.observe(seen, sender.notify)
                    if alert is not None:
                        sent.append(f"{alert.status}: {alert.title}")
                runs += 1
            after = end.storage_id
    finally:
        sender.close()
    summary = f"{runs} run(s) read; {len(sent)} alert(s)" + (f": {'; '.join(sent)}" if sent else "")
    return dg.SensorResult(cursor=json.dumps({"after": after}), skip_reason=summary)


@dg.sensor(
    name="run_failure_alert_sensor",
    minimum_interval_seconds=30,
    default_status=sensor_status(),
    description="A message when a run of any job fails (per job and partition), deduplicated "
    "while the failures go on, and one when a later run of the same job and partition succeeds. "
    "Routes: the alerts policy (GSV_ALERTS_POLICY).",
)
def run_failure_alert_sensor(
    context: dg.SensorEvaluationContext,
    notifier: NotifierResource,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
) -> dg.SensorResult:
    return evaluate(context, observe_run, notifier, artefact_store, policies)


@dg.sensor(
    name="check_failure_alert_sensor",
    minimum_interval_seconds=30,
    default_status=sensor_status(),
    description="A message when an asset check fails for a partition (which image, collection, "
    "day), deduplicated while it keeps failing, and one when it passes again. Severity ERROR "
    "checks are errors, WARN checks warnings; routes: the alerts policy (GSV_ALERTS_POLICY).",
)
def check_failure_alert_sensor(
    context: dg.SensorEvaluationContext,
    notifier: NotifierResource,
    artefact_store: ArtefactStoreResource,
    policies: PoliciesResource,
) -> dg.SensorResult:
    return evaluate(context, observe_checks, notifier, artefact_store, policies)
