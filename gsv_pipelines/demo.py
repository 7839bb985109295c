"""Run every asset of the code location once, as `gsv demo` does, and report what happened.

Partitioned assets run for today's partition (and, for dynamic dimensions, every known key);
dynamic partitions are first brought in sync by evaluating the sensors that own them and
applying their requests, as the sensor daemon would.
"""

import itertools
from typing import Any

import dagster as dg

from gsv_pipelines.lib.alerts.policy import alert_severity

# Sensors that only keep dynamic partitions in sync (they request no runs).
PARTITION_SENSORS = ("qdrant_collections_sensor",)
# Sensors that send alerts about the runs (they request no runs either).
ALERT_SENSORS = ("run_failure_alert_sensor", "check_failure_alert_sensor")

# Metadata a summary can show: figures and short text (tables and markdown stay in the UI).
SUMMARY_TYPES = (
    dg.IntMetadataValue,
    dg.FloatMetadataValue,
    dg.TextMetadataValue,
    dg.PathMetadataValue,
)


# The terminal shows progress and problems; every event is in the run's log in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


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


def partition_keys(
    partitions_def: dg.PartitionsDefinition | None,
    instance: dg.DagsterInstance,
    chosen: list[tuple[dg.PartitionsDefinition, list[str]]] = (),
) -> list[str | None]:
    """The keys a demo runs: today's time partition, crossed with each dynamic key; or the
    keys `chosen` for that partitioning."""
    for chosen_def, keys in chosen:
        if chosen_def == partitions_def:
            return list(keys)
    if partitions_def is None:
        return [None]
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        last = partitions_def.get_last_partition_key()
        return [last] if last else []
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return sorted(instance.get_dynamic_partitions(partitions_def.name))
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        dimensions = partitions_def.partitions_defs
        choices = [partition_keys(d.partitions_def, instance) for d in dimensions]
        return [
            dg.MultiPartitionKey(dict(zip([d.name for d in dimensions], combo, strict=True)))
            for combo in itertools.product(*choices)
        ]
    return list(partitions_def.get_partition_keys(dynamic_partitions_store=instance))


def materialize_all(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    config: dict[dg.AssetKey, dict[str, Any]] | None = None,
    chosen: list[tuple[dg.PartitionsDefinition, list[str]]] = (),
) -> dict[str, Any]:
    """One run per partition key of every executable asset group; the outcome per asset.

    Groups of assets that share a partitioning run upstream first; `config` is run config for
    the assets that take some; `chosen` names the partition keys to run (in order) for a
    partitioning, instead of its last one.
    """
    graph = defs.resolve_asset_graph()
    executable = graph.executable_asset_keys
    groups: list[tuple[dg.PartitionsDefinition | None, list[dg.AssetKey]]] = []
    placed: dict[dg.AssetKey, int] = {}
    for key in [k for k in graph.toposorted_asset_keys if k in executable]:
        partitions_def = graph.get(key).partitions_def
        # The earliest run group of the same partitioning that comes no sooner than the groups
        # of the asset's parents: parents always run first, in as few runs as possible.
        earliest = max((placed[p] for p in graph.get(key).parent_keys if p in placed), default=0)
        for index in range(earliest, len(groups)):
            if groups[index][0] == partitions_def:
                groups[index][1].append(key)
                placed[key] = index
                break
        else:
            groups.append((partitions_def, [key]))
            placed[key] = len(groups) - 1

    rows, runs, success = [], [], True
    for partitions_def, keys in groups:
        job = defs.resolve_implicit_job_def_def_for_assets(keys)
        ops = {
            "__".join(key.path): {"config": (config or {})[key]}
            for key in keys
            if key in (config or {})
        }
        run_config = {**QUIET, "ops": ops} if ops else QUIET
        for partition in partition_keys(partitions_def, instance, chosen):
            result = job.execute_in_process(
                instance=instance,
                partition_key=partition,
                asset_selection=keys,
                raise_on_error=False,
                run_config=run_config,
            )
            runs.append(result.run_id)
            success = success and result.success
            rows += _rows(graph, keys, partition, result)
    return {"success": success, "runs": runs, "assets": rows}


def _rows(graph, keys, partition, result: dg.ExecuteInProcessResult) -> list[dict[str, Any]]:
    materialized = {
        event.asset_key: event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    checks: dict[dg.AssetKey, dict[str, bool]] = {}
    warnings: dict[dg.AssetKey, list[str]] = {}
    for evaluation in result.get_asset_check_evaluations():
        checks.setdefault(evaluation.asset_key, {})[evaluation.check_name] = evaluation.passed
        if not evaluation.passed and alert_severity(evaluation.severity.value) == "warning":
            warnings.setdefault(evaluation.asset_key, []).append(evaluation.check_name)
    rows = []
    for key in keys:
        metadata = materialized.get(key)
        rows.append(
            {
                "asset": key.to_user_string(),
                "group": graph.get(key).group_name,
                "partition": str(partition) if partition is not None else None,
                "status": "materialized" if metadata is not None else "failed",
                "checks": checks.get(key, {}),
                # Failed checks of WARN severity: warnings for the alerts domain (routed by the
                # alerts policy), not a failed pipeline.
                "warnings": warnings.get(key, []),
                "metadata": {
                    name: value.value
                    for name, value in (metadata or {}).items()
                    if isinstance(value, SUMMARY_TYPES)
                },
                "run_id": result.run_id,
            }
        )
    return rows
