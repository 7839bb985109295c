"""The Trivy scanner: its binary, its shared cache (with the vulnerability DB), a DB mirror."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from gsv_pipelines.lib.trivy import Trivy


class TrivyResource(dg.ConfigurableResource):
    binary: str | None = Field(default=None, description="TRIVY_BIN, else trivy on PATH or bundled")
    cache_dir: str = Field(description="TRIVY_CACHE_DIR: the DB and layer cache, shared by scans")
    db_repository: str | None = Field(default=None, description="TRIVY_DB_REPOSITORY mirror")
    timeout_seconds: float = 600

    def trivy(self) -> Trivy:
        return Trivy(
            binary=self.binary,
            cache_dir=Path(self.cache_dir),
            timeout_seconds=self.timeout_seconds,
            db_repository=self.db_repository,
        )
