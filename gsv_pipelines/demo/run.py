"""What `gsv demo` runs: the code location's named jobs, once each, as its schedules and sensors
would launch them, every run tagged `gsv/demo=true`; and what happened.

Dynamic partitions are first brought in sync by evaluating the sensors that own them and applying
their requests, as the sensor daemon would. The runs execute in this process; each is then filed
under the code location of workspace.yaml (as `dagster run migrate-repository` files a run), so
the UI's Overview, Jobs and Runs pages show them as they show a schedule's runs.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from gsv_pipelines.lib.alerts.policy import alert_severity

# Sensors that only keep dynamic partitions in sync (they request no runs).
PARTITION_SENSORS = ("qdrant_collections_sensor",)
# Sensors that send alerts about the runs (they request no runs either).
ALERT_SENSORS = ("run_failure_alert_sensor", "check_failure_alert_sensor")
DEMO_TAGS = {"gsv/demo": "true"}
WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"

# Metadata a summary can show: figures and short text (tables and markdown stay in the UI).
SUMMARY_TYPES = (
    dg.IntMetadataValue,
    dg.FloatMetadataValue,
    dg.TextMetadataValue,
    dg.PathMetadataValue,
)

# The terminal shows progress and problems; every event is in the run's log in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass(frozen=True)
class Launch:
    """One run of a named job: for one partition, a range of them (in order), or none."""

    job: str
    partitions: Sequence[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    run_config: Mapping[str, Any] = field(default_factory=dict)


def sync_partitions(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, str]:
    """Evaluate the partition-sync sensors once and apply what they ask for."""
    outcome = {}
    for name in PARTITION_SENSORS:
        result = _tick(defs, instance, name, None)
        if not isinstance(result, dg.SensorResult):
            outcome[name] = getattr(result, "skip_message", None) or "nothing to do"
            continue
        changes = []
        for request in result.dynamic_partitions_requests or []:
            keys = list(request.partition_keys)
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, keys)
                changes.append(f"added {', '.join(keys)}")
            else:
                for key in keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
                changes.append(f"retired {', '.join(keys)}")
        outcome[name] = "; ".join(changes)
    return outcome


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None):
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources=defs.resources,
        repository_def=defs.get_repository_def(),
    ) as context:
        return defs.resolve_sensor_def(name)(context)


def start_alert_sensors(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, str]:
    """Each alert sensor's first tick: it will read what ends from now on."""
    return {name: _tick(defs, instance, name, None).cursor for name in ALERT_SENSORS}


def run_alert_sensors(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursors: dict[str, str]
) -> list[str]:
    """Tick each alert sensor until it has read every run that ended; what each tick said."""
    said = []
    for name, cursor in cursors.items():
        while True:
            result = _tick(defs, instance, name, cursor)
            said.append(f"{name}: {result.skip_reason.skip_message}")
            if result.cursor == cursor:
                break
            cursor = result.cursor
        cursors[name] = cursor
    return said


def demo_plan(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    images: Mapping[str, Mapping[str, str]],
    usage_days: Sequence[str],
) -> list[Launch]:
    """Every named job once, in the order a day of schedules and sensors would run them: the
    nightly backups (a run per collection), a rotation of every secret ("rotate now"), the
    inventory after it, the vulnerability DB and config scan, a scan of each pushed image (as
    image_push_sensor requests it), the day's deployed images and risk report, a DR drill of the
    backups just taken, and usage over the seeded days in one run (as usage_schedule's lookback).
    `images`: name -> {digest, image (its reference)}; `usage_days`: consecutive days, in order."""
    today = datetime.now(UTC).date().isoformat()
    collections = sorted(instance.get_dynamic_partitions("qdrant_collections"))
    secrets = defs.resolve_job_def("rotation_job").partitions_def.get_partition_keys()
    plan = [
        Launch("qdrant_backup_job", [str(dg.MultiPartitionKey({"day": today, "collection": c}))])
        for c in collections
    ]
    plan += [Launch("platform_db_backup_job", [today]), Launch("vault_snapshot_job", [today])]
    plan += [
        Launch(
            "rotation_job",
            [name],
            tags={"gsv/secret": name},
            run_config={"ops": {"rotation__rotated_secret": {"config": {"force": True}}}},
        )
        for name in secrets
    ]
    # After the rotations, as the hourly secret_inventory_schedule next: the versions they made.
    plan += [Launch("secret_inventory_job"), Launch("trivy_db_job"), Launch("config_scan_job")]
    for name, image in sorted(images.items()):
        shown = f"{name}:demo"
        plan.append(
            Launch(
                "image_scan_job",
                [image["digest"]],
                tags={"gsv/image": shown},
                run_config={
                    "ops": {
                        "scanning__image_scan": {
                            "config": {"reference": image["image"], "image": shown}
                        }
                    }
                },
            )
        )
    plan += [Launch("deployed_images_job", [today]), Launch("dr_drill_job", [today])]
    plan.append(Launch("usage_job", list(usage_days)))
    return plan


def run_plan(
    defs: dg.Definitions, instance: dg.DagsterInstance, plan: Sequence[Launch]
) -> dict[str, Any]:
    """Run each launch in order, tagged as the demo's; the outcome per asset and partition."""
    origin = _code_location_origin(defs)
    rows, runs, success = [], [], True
    for launch in plan:
        job = defs.resolve_job_def(launch.job)
        tags = {**DEMO_TAGS, **launch.tags}
        partition = None
        if len(launch.partitions) == 1:
            [partition] = launch.partitions
        elif launch.partitions:
            tags |= {RANGE_START: launch.partitions[0], RANGE_END: launch.partitions[-1]}
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition,
            tags=tags,
            run_config={**QUIET, **launch.run_config},
            raise_on_error=False,
        )
        if origin is not None:
            _file_under(instance, result.run_id, origin(launch.job))
        runs.append(result.run_id)
        success = success and result.success
        rows += _rows(defs, job, launch.partitions or [None], result)
    return {"success": success, "runs": runs, "assets": rows}


def _code_location_origin(defs: dg.Definitions):
    """A job's origin in the code location of workspace.yaml, as its schedules' runs have it;
    None without the file (an installed package: the runs then stay unfiled)."""
    if not WORKSPACE.exists():
        return None
    # Dagster's own types for a run's origin: no public constructor in 1.13.27.
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    [location] = WorkspaceFileTarget(paths=[str(WORKSPACE)]).create_origins()
    repository = RemoteRepositoryOrigin(location, defs.get_repository_def().name)
    return lambda job_name: RemoteJobOrigin(repository, job_name)


def _file_under(instance: dg.DagsterInstance, run_id: str, job_origin) -> None:
    """Give the run `job_origin` and the label the UI's job pages filter runs by."""
    from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

    # replace_job_origin relabels the tag of a run that has one: these runs get theirs first.
    instance.add_run_tags(run_id, {REPOSITORY_LABEL_TAG: job_origin.repository_origin.get_label()})
    instance.run_storage.replace_job_origin(instance.get_run_by_id(run_id), job_origin)


def _rows(
    defs: dg.Definitions,
    job: dg.JobDefinition,
    partitions: Sequence[str | None],
    result: dg.ExecuteInProcessResult,
) -> list[dict[str, Any]]:
    graph = defs.resolve_asset_graph()
    materialized = {
        (event.asset_key, event.partition): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    checks: dict[tuple, dict[str, bool]] = {}
    warnings: dict[tuple, list[str]] = {}
    for evaluation in result.get_asset_check_evaluations():
        where = (evaluation.asset_key, evaluation.partition)
        checks.setdefault(where, {})[evaluation.check_name] = evaluation.passed
        if not evaluation.passed and alert_severity(evaluation.severity.value) == "warning":
            warnings.setdefault(where, []).append(evaluation.check_name)
    keys = [k for k in graph.toposorted_asset_keys if k in job.asset_layer.selected_asset_keys]
    rows = []
    for partition in partitions:
        for key in keys:
            where = (key, partition)
            metadata = materialized.get(where)
            # An unpartitioned check judges the run's partition(s) as a whole.
            judged = {**checks.get((key, None), {}), **checks.get(where, {})}
            warned = [*warnings.get((key, None), []), *warnings.get(where, [])]
            rows.append(
                {
                    "asset": key.to_user_string(),
                    "group": graph.get(key).group_name,
                    "job": job.name,
                    "partition": partition,
                    "status": "materialized" if metadata is not None else "failed",
                    "checks": judged,
                    # Failed checks of WARN severity: warnings for the alerts domain (routed by
                    # the alerts policy), not a failed pipeline.
                    "warnings": warned,
                    "metadata": {
                        name: value.value
                        for name, value in (metadata or {}).items()
                        if isinstance(value, SUMMARY_TYPES)
                    },
                    "run_id": result.run_id,
                }
            )
    return rows
