"""Declarative automation: the explicit sensor that evaluates every asset's AutomationCondition,
and the one rule for every schedule and sensor: running in prod (GSV_ENV=prod), stopped locally.

Open-source Dagster starts its implicit default sensor stopped; this one runs in prod.
"""

import dagster as dg

from gsv_pipelines.lib.core.settings import load_settings


def schedule_status() -> dg.DefaultScheduleStatus:
    """How every schedule starts: running in prod, stopped locally (start it from the UI)."""
    running = load_settings().is_prod
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


def sensor_status() -> dg.DefaultSensorStatus:
    """How every sensor starts: running in prod, stopped locally (start it from the UI)."""
    running = load_settings().is_prod
    return dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED


@dg.definitions
def automation() -> dg.Definitions:
    return dg.Definitions(
        sensors=[
            dg.AutomationConditionSensorDefinition(
                "automation_condition_sensor",
                target=dg.AssetSelection.all(),
                default_status=sensor_status(),
                minimum_interval_seconds=30,
                description="Evaluates the AutomationCondition of every asset in gsv_pipelines.",
            )
        ]
    )
