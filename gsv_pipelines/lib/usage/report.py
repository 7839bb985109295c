"""Per-tenant and per-agent tables of one day, from the warehouse, for `gsv demo` to print."""

from datetime import date

from gsv_pipelines.lib.usage import tables
from gsv_pipelines.lib.usage.warehouse import read

TENANT_HEADER = [
    "tenant", "plan", "calls", "errors", "tokens", "calls mtd", "amount mtd", "quota %", "level"
]  # fmt: skip
AGENT_HEADER = [
    "agent", "provider", "calls", "error %", "p50 ms", "p95 ms", "p99 ms", "p95 mtd", "tokens"
]  # fmt: skip


def day_tables(warehouse_url: str, day: date) -> dict[str, list[list[str]]]:
    """{"tenants": rows, "agents": rows} for `day` (rows as text, headers above)."""
    usage = read(warehouse_url, tables.TENANT_USAGE, day, day).set_index("tenant_id")
    bills = read(warehouse_url, tables.BILLING, day, day).set_index("tenant_id")
    quota = read(warehouse_url, tables.QUOTA_STATUS, day, day).set_index("tenant_id")
    tenant_rows = []
    for tenant in sorted(set(usage.index) | set(bills.index)):
        u = usage.loc[tenant] if tenant in usage.index else None
        b = bills.loc[tenant] if tenant in bills.index else None
        q = quota.loc[tenant] if tenant in quota.index else None
        tenant_rows.append(
            [
                tenant,
                str(b["plan_id"]) if b is not None and b["plan_id"] is not None else "-",
                f"{int(u['calls']):,}" if u is not None else "0",
                f"{int(u['errors']):,}" if u is not None else "0",
                f"{int(u['tokens']):,}" if u is not None else "0",
                f"{int(b['calls_mtd']):,}" if b is not None else "-",
                f"{float(b['amount_mtd']):,.2f}" if b is not None else "-",
                f"{float(q['usage_pct']):.1f}" if q is not None else "-",
                str(int(q["level"])) if q is not None else "-",
            ]
        )
    perf = read(warehouse_url, tables.AGENT_PERFORMANCE, day, day).sort_values("agent_id")
    agent_rows = [
        [
            r.agent_id,
            r.provider,
            f"{int(r.calls):,}",
            f"{100 * r.error_rate:.2f}",
            f"{r.latency_p50_ms:,.0f}",
            f"{r.latency_p95_ms:,.0f}",
            f"{r.latency_p99_ms:,.0f}",
            f"{r.latency_p95_ms_mtd:,.0f}",
            f"{int(r.tokens_in + r.tokens_out):,}",
        ]
        for r in perf.itertuples()
    ]
    return {"tenants": tenant_rows, "agents": agent_rows}
