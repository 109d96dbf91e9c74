-- 0001: the delivery_events table, one row per DeliveryEvent (schemas/event.py).
--
-- Replays are idempotent: ReplacingMergeTree collapses rows with the same sorting key, and
-- the key holds event_id plus only columns a replay repeats unchanged (tenant_id, channel,
-- status, requested_at). occurred_at may differ on a replay, so it is neither in the key nor
-- in the partition. Merges are eventual: queries read with FINAL for exact counts.
--
-- Absent optional strings are stored as '' (no Nullable strings); absent optional numbers
-- are NULL, because 0 is a real latency or cost and aggregates skip NULLs.
-- No TTL yet: retention is a deployment choice and will arrive as its own migration.

CREATE TABLE IF NOT EXISTS {database}.delivery_events
(
    schema_version      UInt16 DEFAULT 1,
    event_id            String,
    notification_id     String,
    tenant_id           LowCardinality(String),
    user_id             String,
    status              LowCardinality(String),
    channel             LowCardinality(String),   -- '' for request-level events
    provider            LowCardinality(String),
    category            LowCardinality(String),
    priority            LowCardinality(String),
    reason              String,
    attempt             UInt32,
    latency_ms          Nullable(Float64),
    cost_usd            Nullable(Float64),
    campaign_id         String,
    variant             LowCardinality(String),
    provider_message_id String,
    requested_at        DateTime64(3, 'UTC'),
    occurred_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(requested_at)
ORDER BY (tenant_id, channel, status, requested_at, event_id)
;
