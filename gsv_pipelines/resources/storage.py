"""Where artefacts go (the artefact store) and the SQL databases gsv_pipelines reads."""

import dagster as dg
from pydantic import Field

from gsv_pipelines.lib.core.store import ArtefactStore


class ArtefactStoreResource(dg.ConfigurableResource):
    """The artefact store: a path, `file://…` or `s3://bucket/prefix` (GSV_STORE_URL, or
    GSV_BACKUP_URL): backups, scan and risk reports, deployed-image inventories, drill and restore
    records and reports, alert incidents and dead letters.

    S3 credentials and endpoint come from the standard AWS variables (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 for S3-compatible stores, AWS_DEFAULT_REGION).
    """

    url: str = Field(description="GSV_STORE_URL, or GSV_BACKUP_URL")

    def store(self) -> ArtefactStore:
        return ArtefactStore(self.url)


class DatabaseResource(dg.ConfigurableResource):
    """A SQL database by SQLAlchemy URL (PostgreSQL in prod, a SQLite file locally)."""

    url: str = Field(description="SQLAlchemy URL; may carry a password, so bound from env")
