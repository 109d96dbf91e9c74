-- 0005: delivery_failures, failure and dead-letter events pre-aggregated by a materialized view.
--
-- Why a view here and not elsewhere: failures are a few percent of events but are asked
-- about over long periods (which provider, which reason, since when). The view filters each
-- inserted block to the failure statuses and folds them into one row per day x tenant x
-- channel x provider x status x reason, at no measurable ingest cost (docs/analytics.md).
-- A view over every event (per-notification funnel state) cost several-fold ingest and was
-- left out; the funnel is computed at read time.
--
-- Idempotent: event_ids and notification_ids are uniqExact states over event_id and
-- notification_id, so replayed or duplicated events, and re-running the backfill, count
-- once - also across days when merged (uniqExactMerge). Read with GROUP BY + -Merge.

CREATE TABLE IF NOT EXISTS {database}.delivery_failures
(
    day             Date,
    tenant_id       LowCardinality(String),
    channel         LowCardinality(String),
    provider        LowCardinality(String),
    status          LowCardinality(String),
    reason          String,
    event_ids       AggregateFunction(uniqExact, String),
    notification_ids AggregateFunction(uniqExact, String),
    first_at        SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at         SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    example_id      SimpleAggregateFunction(max, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, status, channel, provider, reason)
;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.delivery_failures_mv
TO {database}.delivery_failures
AS SELECT
    toDate(occurred_at) AS day,
    tenant_id,
    channel,
    provider,
    status,
    reason,
    uniqExactState(event_id) AS event_ids,
    uniqExactState(notification_id) AS notification_ids,
    min(occurred_at) AS first_at,
    max(occurred_at) AS last_at,
    max(notification_id) AS example_id
FROM {database}.delivery_events
WHERE status IN ('rejected', 'failed', 'dead_lettered', 'bounced', 'retrying', 'failed_over',
                 'token_invalidated')
GROUP BY day, tenant_id, channel, provider, status, reason
;

-- Backfill what delivery_events already holds (idempotent, like the view).
INSERT INTO {database}.delivery_failures
SELECT
    toDate(occurred_at),
    tenant_id,
    channel,
    provider,
    status,
    reason,
    uniqExactState(event_id),
    uniqExactState(notification_id),
    min(occurred_at),
    max(occurred_at),
    max(notification_id)
FROM {database}.delivery_events
WHERE status IN ('rejected', 'failed', 'dead_lettered', 'bounced', 'retrying', 'failed_over',
                 'token_invalidated')
GROUP BY toDate(occurred_at), tenant_id, channel, provider, status, reason
;
