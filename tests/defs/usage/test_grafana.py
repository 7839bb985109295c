"""Every Grafana panel's SQL runs against a PostgreSQL warehouse the pipeline filled, and returns
rows: a week simulated into a PostgreSQL platform database, all seven days materialized."""

import json
import re
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from gsv_pipelines.defs.usage import assets, checks
from gsv_pipelines.demo.usage_sim import seed_usage
from gsv_pipelines.resources.storage import DatabaseResource
from gsv_pipelines.resources.warehouse import WarehouseResource
from tests.defs.usage import crafted

DASHBOARDS = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "dashboards"
LAST_DAY = date(2026, 3, 10)
FIRST_DAY = LAST_DAY - timedelta(days=6)


@pytest.fixture(scope="module")
def warehouse(postgres) -> str:
    source = crafted.new_postgres_database(postgres, "platform")
    url = crafted.new_postgres_database(postgres, "warehouse")
    seeded = seed_usage(source, days=7, scale=0.2, seed=7, last_day=LAST_DAY)
    resources = {
        "platform_db": DatabaseResource(url=source),
        "warehouse": WarehouseResource(url=url),
    }
    usage = [
        assets.usage_events,
        assets.tenant_usage,
        assets.agent_performance,
        assets.billing,
        assets.subscription_metrics,
        assets.quota_status,
        checks.events_reconciled,
    ]
    with dg.instance_for_test() as instance:
        for partition in seeded["partitions"]:
            result = dg.materialize(
                usage, partition_key=partition, instance=instance, resources=resources
            )
            assert result.success
    return url


def _dashboards() -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted(DASHBOARDS.glob("*.json"))]


def _expand(sql: str, variables: dict[str, str]) -> str:
    """Grafana's macros and variables as Grafana expands them for a PostgreSQL data source."""
    window = f"'{FIRST_DAY}T00:00:00Z' AND '{LAST_DAY}T23:59:59Z'"
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN {window}", sql)
    for name, value in variables.items():
        sql = sql.replace(f"${name}", value)
    assert "$" not in sql, sql
    return sql


def test_there_are_the_four_dashboards_on_the_warehouse_data_source():
    boards = dict(_dashboards())
    assert set(boards) == {
        "platform-overview.json",
        "tenant-usage-billing.json",
        "agent-performance.json",
        "subscriptions.json",
    }
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == 4
    for board in boards.values():
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "gsv-warehouse"
            assert panel["datasource"]["type"] == "grafana-postgresql-datasource"
            assert panel["targets"] and all(t["rawSql"].strip() for t in panel["targets"])


@pytest.mark.parametrize(("name", "board"), _dashboards(), ids=[n for n, _ in _dashboards()])
def test_every_panel_query_returns_rows(warehouse, name, board):
    engine = sa.create_engine(warehouse)
    try:
        with engine.connect() as conn:
            variables = {}
            for variable in board["templating"]["list"]:
                values = [r[0] for r in conn.execute(sa.text(variable["query"]))]
                assert values, f"{name}: variable {variable['name']} has no values"
                variables[variable["name"]] = values[0]
            empty = []
            for panel in board["panels"]:
                for target in panel["targets"]:
                    rows = conn.execute(sa.text(_expand(target["rawSql"], variables))).all()
                    if not rows or all(v is None for v in rows[0]):
                        empty.append(panel["title"])
    finally:
        engine.dispose()
    assert empty == []
