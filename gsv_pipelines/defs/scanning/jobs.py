"""Jobs of the `scanning` group."""

import dagster as dg

from gsv_pipelines.defs.scanning.image_scan import image_scan

# One digest per run (image_push_sensor and the rescans request them), with the blocking checks
# no_fixable_critical and no_embedded_secrets: the selection of an asset takes its checks along.
image_scan_job = dg.define_asset_job(
    "image_scan_job",
    selection=dg.AssetSelection.assets(image_scan),
    description="Scan one image digest with Trivy (run config: the image's reference) and judge "
    "it against the scan policy.",
)
