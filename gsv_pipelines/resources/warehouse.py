"""The usage warehouse: where the usage aggregates land and Grafana reads them."""

from datetime import date

import dagster as dg
from pydantic import Field


class WarehouseResource(dg.ConfigurableResource):
    """A SQL database by SQLAlchemy URL (GSV_WAREHOUSE_URL): PostgreSQL in prod, SQLite locally.

    Tables and their columns are declared in gsv_pipelines/lib/usage/tables.py.
    """

    url: str = Field(description="SQLAlchemy URL; may carry a password, so bound from env")

    def write_partition(self, day: date, frames: dict) -> dict[str, int]:
        """Replace `day` in each table with its frame (validated), in one transaction."""
        from gsv_pipelines.lib.usage import warehouse as usage_warehouse

        return usage_warehouse.write_partition(self.url, day, frames)

    def read(self, table, first: date, last: date):
        """A table's rows for the days first..last, as a pandas DataFrame."""
        from gsv_pipelines.lib.usage import warehouse as usage_warehouse

        return usage_warehouse.read(self.url, table, first, last)
