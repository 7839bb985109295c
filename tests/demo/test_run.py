"""The demo's runner: the named jobs, tagged as the demo's, filed under the code location."""

import dagster as dg

from gsv_pipelines.definitions import defs as load_defs
from gsv_pipelines.demo.run import DEMO_TAGS, Launch, demo_plan, run_plan

DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)
TARGETS = dg.DynamicPartitionsDefinition(name="targets")


def test_run_plan_runs_named_jobs_and_reports_each_asset_partition_and_check():
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

    @dg.asset(key=["backups", "per_target"], group_name="backups", partitions_def=TARGETS)
    def per_target(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"target": context.partition_key})

    @dg.asset(key=["usage", "daily"], group_name="usage", partitions_def=DAILY)
    def daily(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        for day in context.partition_keys:
            context.add_asset_metadata({"day": day}, partition_key=day)
        return dg.MaterializeResult()

    @dg.asset_check(asset=per_target)
    def looks_right() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    jobs = [
        dg.define_asset_job("counted_job", selection=[counted, broken]),
        dg.define_asset_job("per_target_job", selection=[per_target]),
        dg.define_asset_job("daily_job", selection=[daily]),
    ]
    defs = dg.Definitions(
        assets=[counted, broken, per_target, daily], asset_checks=[looks_right], jobs=jobs
    )
    plan = [
        Launch("counted_job", run_config={"ops": {"backups__counted": {"config": {"points": 5}}}}),
        Launch("per_target_job", ["a"], tags={"gsv/target": "a"}),
        Launch("daily_job", ["2026-03-01", "2026-03-02"]),
    ]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("targets", ["a"])
        outcome = run_plan(defs, instance, plan)
        runs = [instance.get_run_by_id(run_id) for run_id in outcome["runs"]]
    assert outcome["success"] is False
    rows = [
        (r["job"], r["asset"], r["partition"], r["status"], r["checks"], r["metadata"])
        for r in outcome["assets"]
    ]
    assert rows == [
        # upstream first, and the given config applied
        ("counted_job", "backups/counted", None, "materialized", {}, {"points": 5, "path": "/x"}),
        ("counted_job", "backups/broken", None, "failed", {}, {}),
        (
            "per_target_job",
            "backups/per_target",
            "a",
            "materialized",
            {"looks_right": True},
            {"target": "a"},
        ),
        # a range: one row per day, each with its own figures
        ("daily_job", "usage/daily", "2026-03-01", "materialized", {}, {"day": "2026-03-01"}),
        ("daily_job", "usage/daily", "2026-03-02", "materialized", {}, {"day": "2026-03-02"}),
    ]
    assert [run.job_name for run in runs] == ["counted_job", "per_target_job", "daily_job"]
    assert all(run.tags[name] == value for run in runs for name, value in DEMO_TAGS.items())
    assert runs[1].tags["gsv/target"] == "a" and runs[1].tags["dagster/partition"] == "a"
    assert runs[2].tags["dagster/asset_partition_range_end"] == "2026-03-02"
    # Filed under the code location of workspace.yaml, as a schedule's runs are.
    for run in runs:
        repository = run.remote_job_origin.repository_origin
        assert (repository.code_location_origin.location_name, run.tags[".dagster/repository"]) == (
            "gsv_pipelines",
            f"{repository.repository_name}@gsv_pipelines",
        )


def test_the_demo_plan_runs_every_asset_of_the_code_location_once_in_order():
    defs = load_defs()
    images = {
        "agents/agent-runtime": {"digest": "sha256:" + "a" * 64, "image": "oci:/i/a@sha256:a"},
        "platform/web-gateway": {"digest": "sha256:" + "b" * 64, "image": "oci:/i/b@sha256:b"},
    }
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("qdrant_collections", ["memory_b", "memory_a"])
        plan = demo_plan(defs, instance, images, days)
    graph = defs.resolve_asset_graph()
    covered = [
        key
        for launch in plan
        for key in defs.resolve_job_def(launch.job).asset_layer.selected_asset_keys
    ]
    assert set(covered) == set(graph.executable_asset_keys)
    jobs = [launch.job for launch in plan]
    assert jobs.count("qdrant_backup_job") == 2 and jobs.count("image_scan_job") == 2
    assert jobs.count("rotation_job") == len(
        defs.resolve_job_def("rotation_job").partitions_def.get_partition_keys()
    )
    # Parents before children; the inventory after the rotations, so it shows their versions.
    last = {job: max(i for i, name in enumerate(jobs) if name == job) for job in jobs}
    first = {job: jobs.index(job) for job in jobs}
    assert last["rotation_job"] < first["secret_inventory_job"]
    assert last["trivy_db_job"] < first["image_scan_job"]
    assert last["image_scan_job"] < first["deployed_images_job"]
    assert max(last["qdrant_backup_job"], last["platform_db_backup_job"]) < first["dr_drill_job"]
    [usage] = [launch for launch in plan if launch.job == "usage_job"]
    assert list(usage.partitions) == days
    scans = [launch for launch in plan if launch.job == "image_scan_job"]
    assert [s.tags["gsv/image"] for s in scans] == [
        "agents/agent-runtime:demo",
        "platform/web-gateway:demo",
    ]
