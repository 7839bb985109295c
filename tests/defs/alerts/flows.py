"""Small partitioned assets, checks and jobs whose outcomes a test decides (through a JSON file),
beside the real alert sensors and resources, the notifier bound to a loopback receiver. The
sensors read real runs of a real instance (DAGSTER_HOME).

`python -m tests.defs.alerts.flows <sensor> <cursor>` evaluates one tick in a process of its
own and prints the new cursor: a restart of the sensor's process, as the daemon's would be.
"""

import json
import os
import sys
from pathlib import Path

import dagster as dg

from gsv_pipelines.defs.alerts.sensors import check_failure_alert_sensor, run_failure_alert_sensor
from gsv_pipelines.resources.notifier import NotifierResource
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource

IMAGES = dg.StaticPartitionsDefinition(["sha256:aaa", "sha256:bbb"])
DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-02-01")
STATE = "GSV_TEST_ALERTS_STATE"


def outcome(name: str) -> list[str]:
    """The partitions the test wants to fail in this way ("raise", "critical", "error_rate")."""
    return json.loads(Path(os.environ[STATE]).read_text()).get(name, [])


@dg.asset(key=["scanning", "probe_scan"], partitions_def=IMAGES, group_name="scanning")
def probe_scan(context: dg.AssetExecutionContext) -> None:
    if context.partition_key in outcome("raise"):
        raise dg.Failure("the scanner crashed")


@dg.asset_check(asset=probe_scan, name="probe_critical")
def probe_critical(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    bad = context.partition_key in outcome("critical")
    return dg.AssetCheckResult(
        passed=not bad,
        description="1 fixable CRITICAL: CVE-2099-0001 (busybox)" if bad else "none",
        metadata={"fixable_critical": int(bad), "report": dg.MetadataValue.md("| big |")},
    )


@dg.asset(key=["usage", "probe_usage"], partitions_def=DAYS, group_name="usage")
def probe_usage() -> None:
    pass


# Not partitioned (as every check of the code location is today): the run's partition counts.
@dg.asset_check(asset=probe_usage, name="probe_error_rate")
def probe_error_rate(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    day = context.run.tags.get("dagster/partition")
    bad = day in outcome("error_rate")
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        description="agent-7: 9.0% of 400 calls failed" if bad else "every agent under 5%",
    )


probe_scan_job = dg.define_asset_job("probe_scan_job", selection=[probe_scan])
probe_usage_job = dg.define_asset_job("probe_usage_job", selection=[probe_usage])


def build_defs() -> dg.Definitions:
    """The flows with the sensors; channels, store and policy from the environment the test set."""
    env = os.environ.get
    return dg.Definitions(
        assets=[probe_scan, probe_usage],
        asset_checks=[probe_critical, probe_error_rate],
        jobs=[probe_scan_job, probe_usage_job],
        sensors=[run_failure_alert_sensor, check_failure_alert_sensor],
        resources={
            "notifier": NotifierResource(
                slack_webhook_url=env("GSV_SLACK_WEBHOOK_URL"),
                teams_webhook_url=env("GSV_TEAMS_WEBHOOK_URL"),
                webhook_url=env("GSV_ALERT_WEBHOOK_URL"),
                webhook_secret=env("GSV_ALERT_WEBHOOK_SECRET"),
                ui_url="http://dagster.test",
            ),
            "artefact_store": ArtefactStoreResource(url=os.environ["GSV_BACKUP_URL"]),
            "policies": PoliciesResource(alerts_policy_path=env("GSV_ALERTS_POLICY")),
        },
    )


def tick(defs: dg.Definitions, sensor: str, cursor: str | None) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.get(),
        cursor=cursor,
        resources=defs.resources,
        repository_def=defs.get_repository_def(),
    ) as context:
        return defs.resolve_sensor_def(sensor)(context)


if __name__ == "__main__":
    result = tick(build_defs(), sys.argv[1], sys.argv[2])
    print(
        json.dumps(
            {
                "cursor": result.cursor,
                "skip_reason": result.skip_reason.skip_message if result.skip_reason else None,
            }
        )
    )
