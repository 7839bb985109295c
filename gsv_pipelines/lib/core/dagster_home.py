"""The Dagster instance folder of the `gsv` commands: DAGSTER_HOME, or $GSV_DATA_DIR/dagster with
the project's dagster.yaml copied in (SQLite storage, the run queue's limits, run monitoring)."""

import os
import shutil
from pathlib import Path

from gsv_pipelines.lib.core.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def prepare_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME, defaulting to $GSV_DATA_DIR/dagster with the project's dagster.yaml; set in
    the environment for what this process starts."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home).absolute()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
