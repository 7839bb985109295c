"""Jobs of the `scanning` group."""

import dagster as dg

from gsv_pipelines.defs.scanning.assets import config_scan, trivy_db
from gsv_pipelines.defs.scanning.image_scan import image_scan
from gsv_pipelines.lib.core import pod_sizes

# One digest per run (image_push_sensor and the rescans request them), with the blocking checks
# no_fixable_critical and no_embedded_secrets: the selection of an asset takes its checks along.
# Its three steps run in the run's own process, and on Kubernetes in the run's pod, sized as a
# scan: a process a step (Dagster's default) loads the code location again for each, a pod a step
# (k8s_job_executor) starts one; either costs several times the scan (docs/scanning.md).
image_scan_job = dg.define_asset_job(
    "image_scan_job",
    selection=dg.AssetSelection.assets(image_scan),
    description="Scan one image digest with Trivy (run config: the image's reference) and judge "
    "it against the scan policy.",
    executor_def=dg.in_process_executor,
    run_tags=pod_sizes.SCAN,
)

# The two daily assets AutomationCondition keeps current have jobs of their own too, so a refresh
# by hand (or the demo's) runs as a named job with a history.
trivy_db_job = dg.define_asset_job(
    "trivy_db_job",
    selection=dg.AssetSelection.assets(trivy_db),
    description="Refresh Trivy's vulnerability DB in the shared cache (daily by automation).",
)
config_scan_job = dg.define_asset_job(
    "config_scan_job",
    selection=dg.AssetSelection.assets(config_scan),
    description="Scan the project's deploy/ folder with `trivy config` (daily by automation).",
)
