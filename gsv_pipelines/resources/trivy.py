"""The Trivy scanner: its binary, its shared cache (with the vulnerability DB), a DB mirror, and
the Trivy server scans go through when one is set."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from gsv_pipelines.lib.scanning.trivy import Trivy


class TrivyResource(dg.ConfigurableResource):
    binary: str | None = Field(default=None, description="TRIVY_BIN, else trivy on PATH or bundled")
    cache_dir: str = Field(description="TRIVY_CACHE_DIR: the published DBs, shared by scans")
    db_repository: str | None = Field(default=None, description="TRIVY_DB_REPOSITORY mirror")
    server_url: str | None = Field(
        default=None,
        description="GSV_TRIVY_SERVER_URL: scans as clients of this Trivy server (any number at "
        "once); unset: each scan runs Trivy on its own, one at a time",
    )
    server_token: str | None = Field(
        default=None, description="GSV_TRIVY_SERVER_TOKEN: the token the Trivy server requires"
    )
    timeout_seconds: float = 600

    def trivy(self) -> Trivy:
        return Trivy(
            binary=self.binary,
            cache_dir=Path(self.cache_dir),
            timeout_seconds=self.timeout_seconds,
            db_repository=self.db_repository,
            server_url=self.server_url,
            server_token=self.server_token,
        )
