import dagster as dg

from gsv_pipelines.defs.automation import schedule_status
from gsv_pipelines.defs.drills.assets import dr_drill, dr_report

dr_drill_job = dg.define_asset_job(
    "dr_drill_job",
    selection=dg.AssetSelection.assets(dr_drill, dr_report),
    description="Run a DR drill for one day (every target of the drill policy restored into "
    "scratch copies, verified, dropped) and write its report. Also on demand, from the UI.",
)


@dg.definitions
def schedules() -> dg.Definitions:
    status = schedule_status()

    @dg.schedule(
        job=dr_drill_job,
        # Sunday 04:00 UTC: after the nightly backups (02:00-02:45) it restores.
        cron_schedule="0 4 * * 0",
        execution_timezone="UTC",
        default_status=status,
        description="Weekly: a DR drill of the newest backups, for the day it runs.",
    )
    def dr_drill_schedule(context: dg.ScheduleEvaluationContext):
        day = context.scheduled_execution_time.strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"dr_drill|{day}", partition_key=day)

    return dg.Definitions(jobs=[dr_drill_job], schedules=[dr_drill_schedule])
