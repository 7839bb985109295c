"""The preview API behind every partitioned check (gsv_pipelines/defs/partitioned_checks.py), pinned
at Dagster 1.13.27: each evaluation lands on its partition in runs of one partition, of a range,
and of none, and the UI (dagster-webserver's GraphQL) shows each partition's status."""

import dagster as dg
import pytest

from tests.defs import partitioned_checks_location as location
from tests.services.webserver import check_partitions, webserver

FIRST, SECOND, THIRD = "2026-03-01", "2026-03-02", "2026-03-03"
RANGE = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": THIRD}


def _evaluations(result) -> dict[str, bool]:
    return {e.partition: e.passed for e in result.get_asset_check_evaluations()}


def test_a_check_with_partitions_is_a_preview_at_the_pinned_dagster():
    # When this stops warning the API has graduated: drop the silencing in partitioned_checks.py.
    with pytest.warns(dg.PreviewWarning):
        dg.AssetCheckSpec("probe", asset="daily", partitions_def=location.DAILY)


def test_each_partition_shows_its_own_verdict_in_the_ui(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    job = location.defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        instance.add_dynamic_partitions(location.NAMES.name, ["good", "bad-one", "never-run"])

        def run(partition=None, tags=None, keys=(location.named.key,)):
            return job.execute_in_process(
                instance=instance,
                partition_key=partition,
                tags=tags,
                asset_selection=list(keys),
                raise_on_error=False,
            )

        # One partition per run: Dagster's own AssetCheckResult path.
        assert _evaluations(run("good")) == {"good": True}
        failed = run("bad-one", keys=(location.named.key, location.after_named.key))
        assert _evaluations(failed) == {"bad-one": False}
        # A failed blocking check: its step fails with what failed, and downstream does not run.
        assert not failed.success
        [failure] = failed.get_step_failure_events()
        error = failure.step_failure_data.error
        assert error.cls_name == "Failure"
        assert (
            "named_ok failed (a blocking check) for 1 of 1 partition(s): bad-one: judged bad-one"
            in error.message
        )
        materialized = {e.asset_key for e in failed.get_asset_materialization_events()}
        assert materialized == {location.named.key}

        # A range: one evaluation per day of the range, each on its day.
        ranged = run(tags=RANGE, keys=(location.daily.key,))
        assert _evaluations(ranged) == {FIRST: True, SECOND: False, THIRD: True}
        assert not ranged.success  # the blocking check failed for SECOND

        # Two keys of the day x name partitions.
        for name in ("good", "bad-one"):
            key = dg.MultiPartitionKey({"day": FIRST, "name": name})
            run(key, keys=(location.per_day_name.key,))

        # A run of the check alone, without a partition: every name judged, each on its own.
        alone = location.defs.resolve_job_def("checks_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
        assert _evaluations(alone) == {"good": True, "bad-one": False, "never-run": True}

        with webserver(home, ["-f", location.__file__, "-a", "defs"], tmp_path / "ui.log") as ui:
            shown = {
                "daily": check_partitions(ui, ["daily"]),
                "named": check_partitions(ui, ["named"]),
                "pairs": check_partitions(ui, ["per_day_name"]),
            }
            # Materialized again without its check: the old verdict is no longer shown for it.
            dg.materialize([location.named], partition_key="good", instance=instance)
            after = check_partitions(ui, ["named"])

    assert shown["daily"] == {"daily_ok": {"succeeded": [FIRST, THIRD], "failed": [SECOND]}}
    assert shown["named"] == {
        "named_ok": {"succeeded": ["good", "never-run"], "failed": ["bad-one"]}
    }
    assert shown["pairs"] == {
        "pair_ok": {"succeeded": [f"{FIRST}|good"], "failed": [f"{FIRST}|bad-one"]}
    }
    assert after == {"named_ok": {"succeeded": ["never-run"], "failed": ["bad-one"]}}
