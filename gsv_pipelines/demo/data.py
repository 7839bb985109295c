"""Demo data for the embedded defaults: agent memory in Qdrant, platform secrets in Vault.

Deterministic for a given seed and idempotent: re-seeding rewrites the same points and leaves
secrets that already exist untouched (a rotated secret is never reset by a re-seed).
"""

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hvac
import numpy as np
import sqlalchemy as sa
from qdrant_client import QdrantClient, models

PLATFORM_SCHEMA = Path(__file__).resolve().parents[1] / "sql" / "platform_schema.sql"

VECTOR_SIZE = 64

# Agent-memory collections of the marketplace's agents, with their point counts at scale 1.
DEMO_COLLECTIONS = {
    "agent_memory_support_bot": 400,
    "agent_memory_sales_assistant": 250,
    "agent_memory_code_reviewer": 150,
}
DEMO_TENANTS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")

# KV v2 paths (under the `secret/` mount) of the platform's secrets, and how each value is made.
KV_MOUNT = "secret"
DEMO_SECRETS = {
    "gsv/agent-registry/db": lambda: {"username": "agent_registry", "password": _token()},
    "gsv/webhooks/hmac": lambda: {"key": _token()},
    "gsv/api/signing": lambda: {"key": _token()},
    "gsv/qdrant/api-key": lambda: {"api_key": _token()},
    "gsv/keycloak/client": lambda: {"client_id": "gsv-platform", "client_secret": _token()},
}


def _token() -> str:
    return secrets.token_urlsafe(32)


def seed_qdrant(client: QdrantClient, seed: int = 7, scale: float = 1.0) -> dict[str, int]:
    """Create the demo collections (if missing) and upsert their points; return point counts."""
    counts = {}
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for index, (name, base_count) in enumerate(sorted(DEMO_COLLECTIONS.items())):
        count = max(1, int(base_count * scale))
        rng = np.random.default_rng(seed + index)
        if not client.collection_exists(name):
            client.create_collection(
                name,
                vectors_config=models.VectorParams(
                    size=VECTOR_SIZE, distance=models.Distance.COSINE
                ),
            )
        vectors = rng.normal(size=(count, VECTOR_SIZE)).astype(np.float32)
        # Power-law tenants: a few tenants hold most of an agent's memory.
        tenant_index = np.minimum(rng.zipf(1.6, size=count) - 1, len(DEMO_TENANTS) - 1)
        minutes = rng.integers(0, 60 * 24 * 300, size=count)
        points = [
            models.PointStruct(
                id=i,
                vector=vectors[i].tolist(),
                payload={
                    "tenant": DEMO_TENANTS[tenant_index[i]],
                    "agent": name.removeprefix("agent_memory_"),
                    "text": f"memory {i} of {name}",
                    "created_at": (start + timedelta(minutes=int(minutes[i]))).isoformat(),
                },
            )
            for i in range(count)
        ]
        for offset in range(0, count, 256):
            client.upsert(name, points=points[offset : offset + 256], wait=True)
        counts[name] = client.count(name, exact=True).count
    return counts


# Fields of the demo secrets that are not secret: names and bookkeeping.
NOT_SECRET = {"username", "client_id", "previous_until", "rotated_at"}


def vault_values(client: hvac.Client) -> set[str]:
    """Every string value of every version of the demo secrets (for the leak search)."""
    kv = client.secrets.kv.v2
    values = set()
    for path in DEMO_SECRETS:
        try:
            latest = kv.read_secret_metadata(path=path, mount_point=KV_MOUNT)["data"]
        except hvac.exceptions.InvalidPath:
            continue
        for version in range(1, latest["current_version"] + 1):
            data = kv.read_secret_version(path=path, version=version, mount_point=KV_MOUNT)
            values |= {
                v
                for k, v in data["data"]["data"].items()
                if isinstance(v, str) and k not in NOT_SECRET
            }
    return values


def seed_vault(client: hvac.Client) -> dict[str, str]:
    """Write each demo secret that does not exist yet; return path -> 'created' | 'kept'."""
    kv = client.secrets.kv.v2
    outcome = {}
    for path, make in DEMO_SECRETS.items():
        try:
            kv.read_secret_version(path=path, mount_point=KV_MOUNT, raise_on_deleted_version=True)
            outcome[path] = "kept"
        except hvac.exceptions.InvalidPath:
            # cas=0: written only if the path still has no version (no race with a rotation).
            kv.create_or_update_secret(path=path, secret=make(), cas=0, mount_point=KV_MOUNT)
            outcome[path] = "created"
    return outcome


DEMO_PLANS = [
    # plan_id, name, monthly price, included calls, included tokens, per 1k calls, per 1M tokens
    ("free", "Free", 0, 1_000, 200_000, 0, 0),
    ("team", "Team", 99, 50_000, 20_000_000, 2.5, 4.0),
    ("business", "Business", 499, 500_000, 250_000_000, 1.8, 3.0),
]
DEMO_AGENTS = [
    ("support_bot", "openai", "Support Bot"),
    ("sales_assistant", "anthropic", "Sales Assistant"),
    ("code_reviewer", "mistral", "Code Reviewer"),
]


def apply_platform_schema(conn: sa.Connection) -> None:
    """Create the platform's source tables (idempotent)."""
    lines = [
        ln for ln in PLATFORM_SCHEMA.read_text().splitlines() if not ln.lstrip().startswith("--")
    ]
    for statement in "\n".join(lines).split(";"):
        if statement.strip():
            conn.execute(sa.text(statement))
    # Databases created before received_at existed: add it (at the end, as the schema has it).
    columns = {c["name"] for c in sa.inspect(conn).get_columns("usage_events")}
    if "received_at" not in columns:
        conn.execute(sa.text("ALTER TABLE usage_events ADD COLUMN received_at TIMESTAMP"))


def seed_platform_db(url: str) -> dict[str, int]:
    """Schema plus reference rows (plans, tenants, agents, subscriptions); rows per table.

    Usage events are not invented here: the usage simulator writes those.
    """
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            apply_platform_schema(conn)
            if not conn.execute(sa.text("select count(*) from tenants")).scalar_one():
                start = datetime(2026, 1, 5)
                conn.execute(
                    sa.text("insert into plans values (:p, :n, :price, :c, :t, :oc, :ot)"),
                    [
                        dict(zip(("p", "n", "price", "c", "t", "oc", "ot"), row, strict=True))
                        for row in DEMO_PLANS
                    ],
                )
                conn.execute(
                    sa.text("insert into agents values (:a, :p, :n)"),
                    [dict(zip(("a", "p", "n"), row, strict=True)) for row in DEMO_AGENTS],
                )
                plans = [p[0] for p in DEMO_PLANS]
                for i, tenant in enumerate(DEMO_TENANTS):
                    joined = start + timedelta(days=9 * i)
                    conn.execute(
                        sa.text("insert into tenants values (:t, :n, :c)"),
                        {"t": tenant, "n": tenant.title(), "c": joined},
                    )
                    conn.execute(
                        sa.text(
                            "insert into subscriptions values (:s, :t, :p, 'active', :b, null)"
                        ),
                        {"s": f"sub-{tenant}", "t": tenant, "p": plans[i % 3], "b": joined},
                    )
            tables = ("plans", "agents", "tenants", "subscriptions", "usage_events")
            return {
                t: conn.execute(sa.text(f"select count(*) from {t}")).scalar_one() for t in tables
            }
    finally:
        engine.dispose()


def seed_trivy_db(cache_dir: Path) -> str:
    """A demo vulnerability DB published in Trivy's cache, unless one is there: no network
    reaches Trivy's own DB here. Labelled (`gsv_demo` in its metadata, CVE-2099-* advisories) as
    a demo DB."""
    from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES, write_trivy_db
    from gsv_pipelines.lib.scanning.trivy_cache import TrivyCache

    cache = TrivyCache(cache_dir)
    if cache.current() is not None:
        return "kept: a vulnerability DB is already in the cache"
    with cache.refreshing(), cache.staging() as staged:
        write_trivy_db(staged, list(DEMO_ADVISORIES))
        cache.publish(staged)
    return f"generated a demo DB ({len(DEMO_ADVISORIES)} synthetic advisories, CVE-2099-*)"
