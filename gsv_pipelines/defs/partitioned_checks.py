"""Asset checks evaluated per partition: which image, day or collection fails, not only whether
the last run's one did.

Partitioned asset checks are a preview API in Dagster 1.13.27 (`partitions_def` on an asset check
warns with a PreviewWarning, silenced here knowingly). Its behaviour is pinned by
tests/defs/test_partitioned_checks.py. Dagster records an AssetCheckResult against the run's
partition when the run has exactly one; a run over a range of partitions (the usage schedule's
lookback) or over none (the hourly freshness job, a check launched on its own) would record an
evaluation without a partition, shown for none of them, and leave the range's partitions "in
progress" until the run ends, then "skipped". Such runs get one evaluation per partition judged,
built here.
"""

import warnings
from collections.abc import Callable, Iterator, Mapping

import dagster as dg

# Not exported at dagster's top level in 1.13.27. Without it an evaluation is never "current" for
# a partition that has a materialization (AssetCheckPartitionInfo.is_current), so the UI shows no
# status for it.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

# Failing partitions a blocking check's failure names; the others are counted.
LISTED = 10


def partitioned_asset_check(
    *, partitions_def: dg.PartitionsDefinition, **kwargs
) -> Callable[[Callable], dg.AssetChecksDefinition]:
    """`dg.asset_check(partitions_def=..., **kwargs)`, without its preview warning."""

    def decorate(fn: Callable) -> dg.AssetChecksDefinition:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return dg.asset_check(partitions_def=partitions_def, **kwargs)(fn)

    return decorate


def partitioned_check_spec(
    name: str, *, partitions_def: dg.PartitionsDefinition, **kwargs
) -> dg.AssetCheckSpec:
    """`dg.AssetCheckSpec(name, partitions_def=..., **kwargs)`, without its preview warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, partitions_def=partitions_def, **kwargs)


def run_partition(context: dg.AssetCheckExecutionContext) -> str | None:
    """The run's one partition key, or None (a range of partitions, or none)."""
    return context.partition_key if context.has_partition_key else None


def per_partition(
    context: dg.AssetCheckExecutionContext, results: Mapping[str, dg.AssetCheckResult]
) -> Iterator:
    """Record `results` (partition key -> result) as this check's evaluations, each against its
    partition and that partition's latest materialization. A failed blocking check of ERROR
    severity then fails the step with a dg.Failure naming the failing partitions and why, which
    the run shows first (instead of Dagster's DagsterAssetCheckFailedError and its traceback);
    the steps downstream of the check do not run, as with any blocking check."""
    [spec] = context.check_specs
    partition = run_partition(context)
    if partition is not None and list(results) == [partition]:
        yield results[partition]
    else:
        for key, result in results.items():
            yield dg.AssetCheckEvaluation(
                asset_key=spec.asset_key,
                check_name=spec.name,
                passed=result.passed,
                metadata=result.metadata,
                target_materialization_data=_latest_materialization(context, spec.asset_key, key),
                severity=result.severity,
                description=result.description,
                blocking=spec.blocking,
                partition=key,
            )
        # The check's output, which Dagster yields itself for an AssetCheckResult.
        yield dg.Output(None, output_name=context.op_def.output_defs[0].name)
    failed = {
        key: result
        for key, result in results.items()
        if not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    }
    if spec.blocking and failed:
        named = [f"{_short(key)}: {result.description}" for key, result in failed.items()]
        more = f"; and {len(named) - LISTED} more" if len(named) > LISTED else ""
        raise dg.Failure(
            description=f"{spec.name} failed (a blocking check) for {len(failed)} of "
            f"{len(results)} partition(s): " + "; ".join(named[:LISTED]) + more,
            allow_retries=False,
        )


def _short(key: str) -> str:
    """A partition key for a message: an image digest cut to its first 12 hex digits."""
    return key[:19] + "…" if len(key) > 40 else key


def _latest_materialization(
    context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey, partition: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    [record] = records
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )
