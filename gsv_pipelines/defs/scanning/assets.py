"""The `scanning` group: Trivy's vulnerability DB, refreshed once for every scan that uses it."""

from datetime import UTC, datetime

import dagster as dg

from gsv_pipelines.resources.trivy import TrivyResource

OWNERS = ["team:platform"]


@dg.asset(
    key=["scanning", "trivy_db"],
    group_name="scanning",
    owners=OWNERS,
    kinds={"trivy"},
    tags={"gsv/domain": "scanning"},
    # Trivy publishes a new DB every few hours; one refresh a day keeps scans current.
    automation_condition=dg.AutomationCondition.on_cron("0 1 * * *"),
    op_tags={"gsv/trivy-cache": "shared"},
)
def trivy_db(context: dg.AssetExecutionContext, trivy: TrivyResource) -> dg.MaterializeResult:
    """Trivy's vulnerability DB, downloaded once into the shared cache (TRIVY_CACHE_DIR), from
    TRIVY_DB_REPOSITORY when a mirror is set. Every image scan then runs with --skip-db-update
    against it: one DB download per refresh, not one per scan."""
    scanner = trivy.trivy()
    before = scanner.db_metadata()
    started = datetime.now(UTC)
    metadata = scanner.download_db()
    seconds = (datetime.now(UTC) - started).total_seconds()
    changed = before is None or before.get("UpdatedAt") != metadata.get("UpdatedAt")
    context.log.info(
        f"vulnerability DB of {metadata.get('UpdatedAt')} "
        + ("downloaded" if changed else "already current (Trivy's NextUpdate not reached)")
    )
    return dg.MaterializeResult(
        metadata={
            "db_version": dg.MetadataValue.int(int(metadata.get("Version", 0))),
            "updated_at": str(metadata.get("UpdatedAt")),
            "next_update": str(metadata.get("NextUpdate")),
            "downloaded_at": str(metadata.get("DownloadedAt")),
            "changed": str(changed),
            "source": scanner.db_repository or "Trivy's default repository",
            # The demo's offline DB says so, so that its findings are never taken for real ones.
            "origin": "demo DB generated offline by gsv (synthetic CVE-2099-* advisories)"
            if metadata.get("gsv_demo")
            else "Trivy",
            "cache_dir": dg.MetadataValue.path(str(scanner.cache_dir)),
            "duration_seconds": dg.MetadataValue.float(round(seconds, 3)),
        }
    )
