"""Declarative automation: the explicit sensor that evaluates every asset's AutomationCondition.

Open-source Dagster starts its implicit default sensor stopped; this one runs in prod.
"""

import dagster as dg

from gsv_pipelines.lib.settings import load_settings


@dg.definitions
def automation() -> dg.Definitions:
    running = load_settings().is_prod
    return dg.Definitions(
        sensors=[
            dg.AutomationConditionSensorDefinition(
                "automation_condition_sensor",
                target=dg.AssetSelection.all(),
                default_status=(
                    dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
                ),
                minimum_interval_seconds=30,
                description="Evaluates the AutomationCondition of every asset in gsv_pipelines.",
            )
        ]
    )
