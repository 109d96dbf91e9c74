-- 0003: per-minute rollups computed by the analytics flow, and the late events it saw.
--
-- delivery_rollup_1m: one row per minute (event time, occurred_at) x tenant x channel x
-- provider x status. The flow writes a window's row when the window closes; any later write
-- for the same key (a late event, a replay, a resumed run) is the full aggregate recomputed
-- from the deduplicated raw table, so rows are replaced, never added to:
-- ReplacingMergeTree(version) keeps the highest version. Read it with FINAL.
-- computed_by says which writer produced the row ('flow' or 'raw').
-- latency_* cover events that carry a latency (latency_events of them); absent costs are 0.
--
-- delivery_late_events: one row per event that reached the flow after the watermark had
-- passed it, keyed by event_id so replays record it once; late_events in the rollup is the
-- number of these for the row's key at its last recompute.
--
-- Both are partitioned by day for TTL (see notiflow.clickhouse.apply_retention) and ordered
-- tenant first, then time, like delivery_events.

CREATE TABLE IF NOT EXISTS {database}.delivery_rollup_1m
(
    window_start    DateTime('UTC'),
    tenant_id       LowCardinality(String),
    channel         LowCardinality(String),
    provider        LowCardinality(String),
    status          LowCardinality(String),
    events          UInt64,
    latency_events  UInt64,
    latency_sum_ms  Float64,
    latency_max_ms  Float64,
    cost_usd        Float64,
    late_events     UInt64,
    computed_by     LowCardinality(String),
    version         UInt64,
    written_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toDate(window_start)
ORDER BY (tenant_id, window_start, channel, provider, status)
SETTINGS ttl_only_drop_parts = 1
;

CREATE TABLE IF NOT EXISTS {database}.delivery_late_events
(
    window_start    DateTime('UTC'),
    tenant_id       LowCardinality(String),
    channel         LowCardinality(String),
    provider        LowCardinality(String),
    status          LowCardinality(String),
    event_id        String,
    occurred_at     DateTime64(3, 'UTC'),
    detected_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(window_start)
ORDER BY (tenant_id, window_start, channel, provider, status, event_id)
SETTINGS ttl_only_drop_parts = 1
;
