"""The per-tenant and per-agent tables `gsv demo` prints, on the crafted data (SQLite)."""

import dagster as dg

from gsv_pipelines.lib.usage import sketch as usage_sketch
from gsv_pipelines.lib.usage.report import day_tables
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import DatabaseResource
from gsv_pipelines.resources.warehouse import WarehouseResource
from tests.defs.usage import crafted
from tests.defs.usage.test_usage import USAGE


def test_the_day_tables(tmp_path):
    source, warehouse = f"sqlite:///{tmp_path / 'p.db'}", f"sqlite:///{tmp_path / 'w.db'}"
    crafted.build(source)
    resources = {
        "platform_db": DatabaseResource(url=source),
        "warehouse": WarehouseResource(url=warehouse),
        "policies": PoliciesResource(),
    }
    with dg.instance_for_test() as instance:
        for day in (crafted.PREVIOUS_DAY, crafted.DAY):
            dg.materialize(USAGE, partition_key=day.isoformat(), instance=instance,
                           resources=resources, raise_on_error=False)  # fmt: skip
    tables = day_tables(warehouse, crafted.DAY)
    assert tables["tenants"] == [
        ["alpha", "pro", "4", "1", "550", "13", "4.00", "65.0", "0"],
        ["beta", "basic", "2", "0", "40", "4", "3.00", "40.0", "0"],
        ["gamma", "pro", "25", "0", "50,000", "25", "2.50", "125.0", "120"],
    ]
    r, b = usage_sketch.representative, usage_sketch.bucket
    assert tables["agents"][0] == [
        "bot", "openai", "5", "0.00", f"{r(b(100.0)):,.0f}", f"{r(b(200.0)):,.0f}",
        f"{r(b(200.0)):,.0f}", f"{r(b(200.0)):,.0f}", "490",
    ]  # fmt: skip
    assert [row[0] for row in tables["agents"]] == ["bot", "coder"]
