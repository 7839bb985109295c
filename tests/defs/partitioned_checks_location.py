"""A small code location for tests/defs/test_partitioned_checks.py: a daily asset, a dynamic one
and a day x dynamic one, each with checks through gsv_pipelines.defs.partitioned_checks. Loaded
in the tests and by dagster-webserver (`-f` this file)."""

import dagster as dg

from gsv_pipelines.defs.partitioned_checks import (
    partitioned_asset_check,
    per_partition,
    run_partition,
)

DAILY = dg.DailyPartitionsDefinition(start_date="2026-03-01", end_offset=1)
NAMES = dg.DynamicPartitionsDefinition(name="names")
DAY_NAME = dg.MultiPartitionsDefinition({"day": DAILY, "name": NAMES})
# A key passes its checks unless it says "bad", or is this day.
BAD = "bad"
BAD_DAY = "2026-03-02"


@dg.asset(partitions_def=DAILY)
def daily() -> None: ...


@dg.asset(partitions_def=NAMES)
def named() -> None: ...


@dg.asset(partitions_def=DAY_NAME)
def per_day_name() -> None: ...


@dg.asset(partitions_def=NAMES, deps=[named])
def after_named() -> None: ...


def _verdicts(keys) -> dict[str, dg.AssetCheckResult]:
    return {
        key: dg.AssetCheckResult(
            passed=BAD not in key and key != BAD_DAY, description=f"judged {key}"
        )
        for key in keys
    }


@partitioned_asset_check(asset=daily, partitions_def=DAILY, name="daily_ok", blocking=True)
def daily_ok(context: dg.AssetCheckExecutionContext):
    # A range run judges each of its days; a run without a partition judges the last day.
    keys = (
        context.partition_keys
        if context.has_partition_key_range or run_partition(context)
        else [DAILY.get_last_partition_key()]
    )
    yield from per_partition(context, _verdicts(keys))


@partitioned_asset_check(asset=named, partitions_def=NAMES, name="named_ok", blocking=True)
def named_ok(context: dg.AssetCheckExecutionContext):
    partition = run_partition(context)
    keys = [partition] if partition else context.instance.get_dynamic_partitions(NAMES.name)
    yield from per_partition(context, _verdicts(keys))


@partitioned_asset_check(asset=per_day_name, partitions_def=DAY_NAME, name="pair_ok")
def pair_ok(context: dg.AssetCheckExecutionContext):
    yield from per_partition(context, _verdicts([run_partition(context)]))


checks_job = dg.define_asset_job("checks_job", selection=dg.AssetSelection.checks(named_ok))
defs = dg.Definitions(
    assets=[daily, named, per_day_name, after_named],
    asset_checks=[daily_ok, named_ok, pair_ok],
    jobs=[checks_job],
)
