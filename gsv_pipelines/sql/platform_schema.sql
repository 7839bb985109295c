-- The GSV platform database's source tables, as gsv_pipelines reads them (PostgreSQL in prod,
-- SQLite for the embedded default). Migration-free: every statement is idempotent, in SQL that
-- both engines accept. `gsv seed` applies it to the embedded default; tests apply it too.

CREATE TABLE IF NOT EXISTS tenants (
    tenant_id   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS plans (
    plan_id                 TEXT PRIMARY KEY,
    name                    TEXT NOT NULL,
    monthly_price           NUMERIC(12, 2) NOT NULL,
    included_calls          BIGINT NOT NULL,
    included_tokens         BIGINT NOT NULL,
    overage_per_1k_calls    NUMERIC(12, 4) NOT NULL,
    overage_per_1m_tokens   NUMERIC(12, 4) NOT NULL
);

CREATE TABLE IF NOT EXISTS subscriptions (
    subscription_id  TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (tenant_id),
    plan_id          TEXT NOT NULL REFERENCES plans (plan_id),
    status           TEXT NOT NULL,
    started_at       TIMESTAMP NOT NULL,
    ended_at         TIMESTAMP
);

CREATE TABLE IF NOT EXISTS agents (
    agent_id  TEXT PRIMARY KEY,
    provider  TEXT NOT NULL,
    name      TEXT NOT NULL
);

-- Raw deliveries: a source may deliver the same event twice, so event_id is not unique here
-- (it is unique per source). occurred_at is when the call happened (UTC); received_at when the
-- platform stored the delivery, later than occurred_at by seconds, or hours for a late event.
-- received_at is last so that databases created before it existed take it by ALTER TABLE
-- (gsv_pipelines.lib.demo_data.apply_platform_schema) with the same column order.
CREATE TABLE IF NOT EXISTS usage_events (
    source       TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    occurred_at  TIMESTAMP NOT NULL,
    latency_ms   DOUBLE PRECISION,
    status       TEXT NOT NULL,
    tokens_in    BIGINT,
    tokens_out   BIGINT,
    received_at  TIMESTAMP
);

CREATE INDEX IF NOT EXISTS usage_events_occurred_at ON usage_events (occurred_at);
