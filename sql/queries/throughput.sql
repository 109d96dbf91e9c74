-- Throughput over time: how many events of each outcome happened per time bucket, from the
-- per-minute rollups the analytics flow writes (cheap over long periods)?
--
-- One row per (bucket, outcome). Outcomes group statuses: sent, delivered (delivered,
-- opened, clicked), failed (failed, dead_lettered, bounced, rejected), suppressed
-- (deduplicated, rate_limited, expired, suppressed, token_invalidated), held (deferred,
-- scheduled, held_quiet_hours, digested), accepted, other. late_count: events that reached
-- their minute after it closed (already included in `event_count`).
-- Parameters: bucket_seconds (a multiple of 60); optional since/until on window_start,
-- tenant, channel. FINAL keeps the latest version of each rollup row.

SELECT
    toStartOfInterval(window_start, toIntervalSecond({bucket_seconds:UInt32})) AS bucket,
    multiIf(status = 'sent', 'sent',
            status IN ('delivered', 'opened', 'clicked'), 'delivered',
            status IN ('failed', 'dead_lettered', 'bounced', 'rejected'), 'failed',
            status IN ('deduplicated', 'rate_limited', 'expired', 'suppressed',
                       'token_invalidated'), 'suppressed',
            status IN ('deferred', 'scheduled', 'held_quiet_hours', 'digested'), 'held',
            status = 'accepted', 'accepted', 'other') AS outcome,
    sum(events) AS event_count,
    sum(late_events) AS late_count
FROM {database:Identifier}.delivery_rollup_1m FINAL
WHERE ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR window_start >= {since:Nullable(DateTime64(3, 'UTC'))})
  AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR window_start < {until:Nullable(DateTime64(3, 'UTC'))})
  AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
  AND ({channel:Nullable(String)} IS NULL OR channel = {channel:Nullable(String)})
GROUP BY bucket, outcome
ORDER BY bucket, outcome
