"""The `scanning` group: Trivy's vulnerability DB, refreshed once for every scan that uses it,
and the misconfiguration scan of the project's own deploy/ folder."""

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

import gsv_pipelines
from gsv_pipelines.lib.core import pod_sizes
from gsv_pipelines.lib.scanning.trivy_report import SEVERITIES, parse_report, severity_counts
from gsv_pipelines.resources.trivy import TrivyResource

if TYPE_CHECKING:
    import pandas as pd

OWNERS = ["team:platform"]

CONFIG_SCAN_CHECK = "no_severe_misconfigurations"
SEVERE = ("CRITICAL", "HIGH")
# The project's Dockerfile and manifests sit beside the package, in a checkout and in the image.
DEPLOY_FOLDER = Path(gsv_pipelines.__file__).resolve().parents[1] / "deploy"
# Rows shown in a metadata table; the counts always cover every finding.
TABLE_ROWS = 50
# How long trivy_db waits for the Trivy server to hold the DB it published.
SERVER_SWITCH_SECONDS = 120


@dg.asset(
    key=["scanning", "trivy_db"],
    group_name="scanning",
    owners=OWNERS,
    kinds={"trivy"},
    tags={"gsv/domain": "scanning"},
    # Trivy publishes a new DB every few hours; one refresh a day keeps scans current.
    automation_condition=dg.AutomationCondition.on_cron("0 1 * * *"),
    op_tags=pod_sizes.SCAN,
)
def trivy_db(context: dg.AssetExecutionContext, trivy: TrivyResource) -> dg.MaterializeResult:
    """Trivy's vulnerability DB, downloaded once into the shared cache (TRIVY_CACHE_DIR), from
    TRIVY_DB_REPOSITORY when a mirror is set, into a folder of its own that is published only
    once complete. Every image scan then uses it (through the Trivy server, which switches to it
    once the scans in flight are done, or on its own) and never downloads: one DB download per
    refresh, not one per scan."""
    scanner = trivy.trivy()
    before = scanner.published_db_metadata()
    started = datetime.now(UTC)
    metadata = scanner.download_db()
    seconds = (datetime.now(UTC) - started).total_seconds()
    changed = before is None or before.get("UpdatedAt") != metadata.get("UpdatedAt")
    context.log.info(
        f"vulnerability DB of {metadata.get('UpdatedAt')} "
        + ("downloaded" if changed else "already current (Trivy's NextUpdate not reached)")
    )
    served = {}
    if scanner.server_url:
        held = scanner.await_server_db(str(metadata.get("UpdatedAt")), SERVER_SWITCH_SECONDS)
        held_at = str((held or {}).get("UpdatedAt"))
        if held_at != str(metadata.get("UpdatedAt")):
            context.log.warning(
                f"{scanner.describe()} still holds the DB of {held_at} after "
                f"{SERVER_SWITCH_SECONDS} s: it switches once its scans in flight are done "
                "(is it running `python -m gsv_pipelines.lib.scanning.trivy_server` on this cache?)"
            )
        served = {"server": scanner.server_url, "server_db_updated_at": held_at}
    return dg.MaterializeResult(
        metadata={
            **served,
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


class ConfigScanConfig(dg.Config):
    folder: str = Field(
        default="", description="The folder to scan; empty means the project's deploy/ folder"
    )


@dg.asset(
    key=["scanning", "config_scan"],
    group_name="scanning",
    owners=OWNERS,
    kinds={"trivy", "kubernetes", "docker"},
    tags={"gsv/domain": "scanning"},
    # The checks ship inside the trivy binary, and deploy/ changes only with a new image: a daily
    # scan notices both.
    automation_condition=dg.AutomationCondition.on_cron("30 1 * * *"),
    op_tags=pod_sizes.SCAN,
    check_specs=[
        dg.AssetCheckSpec(
            CONFIG_SCAN_CHECK,
            asset=["scanning", "config_scan"],
            blocking=True,
            description="No HIGH or CRITICAL misconfiguration in the scanned folder.",
        )
    ],
)
def config_scan(
    context: dg.AssetExecutionContext, config: ConfigScanConfig, trivy: TrivyResource
) -> dg.MaterializeResult:
    """`trivy config` over the project's own deploy/ folder (the Dockerfile, the Kubernetes
    manifests, anything else Trivy recognises), with the checks embedded in the trivy binary,
    offline. Records the failing checks per severity and lists them; the blocking check
    no_severe_misconfigurations fails the run on any HIGH or CRITICAL one."""
    folder = Path(config.folder).expanduser().absolute() if config.folder else DEPLOY_FOLDER
    if not folder.is_dir():
        raise dg.Failure(
            description=f"no folder to scan at {folder}: "
            + (
                "the config's `folder` names none"
                if config.folder
                else "the project's deploy/ folder is missing beside the gsv_pipelines package"
            )
        )
    run = trivy.trivy().scan_config(folder)
    findings = parse_report(run.report).misconfigurations
    failures = findings[findings["status"].eq("FAIL")]
    severe = failures[failures["severity"].isin(SEVERE)]
    files = {result.get("Target") for result in run.report.get("Results") or []}
    context.log.info(
        f"trivy config: {len(failures)} failing check(s) in {len(files)} file(s) of {folder}, "
        f"{len(severe)} of them HIGH or CRITICAL"
    )

    counts = severity_counts(failures)
    passed = severe.empty
    return dg.MaterializeResult(
        metadata={
            **{
                f"failures_{severity.lower()}": dg.MetadataValue.int(counts[severity])
                for severity in SEVERITIES
            },
            "failures": dg.MetadataValue.md(_findings_table(failures)),
            "files_scanned": dg.MetadataValue.int(len(files)),
            "folder": dg.MetadataValue.path(str(folder)),
            "duration_seconds": dg.MetadataValue.float(round(run.seconds, 3)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=CONFIG_SCAN_CHECK,
                passed=passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description="no HIGH or CRITICAL misconfiguration"
                if passed
                else f"{len(severe)} HIGH or CRITICAL misconfiguration(s): "
                + "; ".join(
                    f"{row.id} ({row.severity}) in {row.target}"
                    for row in _ordered(severe).head(TABLE_ROWS).itertuples()
                ),
                metadata={
                    "severe_failures": dg.MetadataValue.int(len(severe)),
                    "failures": dg.MetadataValue.md(_findings_table(severe)),
                },
            )
        ],
    )


def _ordered(findings: "pd.DataFrame") -> "pd.DataFrame":
    """Most severe first, then by check id and file."""
    rank = findings["severity"].map({s: -i for i, s in enumerate(SEVERITIES)})
    return findings.assign(_rank=rank).sort_values(["_rank", "id", "target", "start_line"])


def _findings_table(findings: "pd.DataFrame") -> str:
    import pandas as pd

    if findings.empty:
        return "No failing check."
    lines = ["| id | severity | target | title |", "|---|---|---|---|"]
    for row in _ordered(findings).head(TABLE_ROWS).itertuples():
        where = row.target if pd.isna(row.start_line) else f"{row.target}:{row.start_line}"
        lines.append(f"| {_cell(row.id)} | {row.severity} | {_cell(where)} | {_cell(row.title)} |")
    if len(findings) > TABLE_ROWS:
        lines.append(f"\n{len(findings) - TABLE_ROWS} more not shown.")
    return "\n".join(lines)


def _cell(value: object) -> str:
    import pandas as pd

    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")
