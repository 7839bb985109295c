"""The demo's runner: every asset once, partitioned ones for today's partition."""

import dagster as dg

from gsv_pipelines.demo import materialize_all, partition_keys

DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)
TARGETS = dg.DynamicPartitionsDefinition(name="targets")


def test_materialize_all_reports_each_asset_partition_and_check():
    class Points(dg.Config):
        points: int = 3

    @dg.asset(key=["backups", "counted"], group_name="backups")
    def counted(config: Points) -> dg.MaterializeResult:
        return dg.MaterializeResult(
            metadata={"points": config.points, "path": dg.MetadataValue.path("/x")}
        )

    @dg.asset(key=["backups", "broken"], group_name="backups", deps=[counted])
    def broken() -> None:
        raise RuntimeError("boom")

    @dg.asset(
        key=["backups", "per_target"],
        group_name="backups",
        partitions_def=dg.MultiPartitionsDefinition({"day": DAILY, "target": TARGETS}),
    )
    def per_target(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return dg.MaterializeResult(
            metadata={"target": context.partition_key.keys_by_dimension["target"]}
        )

    @dg.asset_check(asset=per_target)
    def looks_right() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    defs = dg.Definitions(assets=[counted, broken, per_target], asset_checks=[looks_right])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("targets", ["b", "a"])
        outcome = materialize_all(defs, instance, config={counted.key: {"points": 5}})
    today = DAILY.get_last_partition_key()
    assert outcome["success"] is False
    rows = [
        (r["asset"], r["partition"], r["status"], r["checks"], r["metadata"])
        for r in outcome["assets"]
    ]
    assert rows == [
        # upstream first, and the given config applied
        ("backups/counted", None, "materialized", {}, {"points": 5, "path": "/x"}),
        ("backups/broken", None, "failed", {}, {}),
        (
            "backups/per_target",
            f"{today}|a",
            "materialized",
            {"looks_right": True},
            {"target": "a"},
        ),
        (
            "backups/per_target",
            f"{today}|b",
            "materialized",
            {"looks_right": True},
            {"target": "b"},
        ),
    ]
    assert len(outcome["runs"]) == 3


def test_partition_keys_for_a_dynamic_dimension_without_keys_is_empty():
    with dg.instance_for_test() as instance:
        multi = dg.MultiPartitionsDefinition({"day": DAILY, "target": TARGETS})
        assert partition_keys(multi, instance) == []
        assert partition_keys(None, instance) == [None]
        assert partition_keys(DAILY, instance) == [DAILY.get_last_partition_key()]


def test_an_asset_runs_after_its_parents_even_when_they_are_partitioned_otherwise():
    @dg.asset(key=["scanning", "daily_first"], partitions_def=DAILY)
    def daily_first() -> None: ...

    @dg.asset(key=["scanning", "per_target"], partitions_def=TARGETS, deps=[daily_first])
    def per_target() -> None: ...

    @dg.asset(
        key=["scanning", "daily_report"],
        partitions_def=DAILY,
        deps=[dg.AssetDep(per_target, partition_mapping=dg.AllPartitionMapping())],
    )
    def daily_report() -> None: ...

    @dg.asset(key=["scanning", "daily_other"], partitions_def=DAILY)
    def daily_other() -> None: ...

    defs = dg.Definitions(assets=[daily_first, per_target, daily_report, daily_other])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("targets", ["a"])
        outcome = materialize_all(defs, instance)
    order = [r["asset"] for r in outcome["assets"]]
    assert order.index("scanning/per_target") < order.index("scanning/daily_report")
    assert order.index("scanning/daily_first") < order.index("scanning/per_target")
    # daily_other joins the first daily run: three runs, not four
    assert len(outcome["runs"]) == 3
