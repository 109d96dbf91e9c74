-- Delivery summary: how many events of each status did each channel produce, and how fast
-- were successful sends (latency_ms of `sent` events, p50/p95/p99), for the notifications
-- requested since a time (all time when NULL), optionally for one tenant and one channel?
--
-- channel is '' for request-level events (accepted, rejected, deduplicated, ...).
-- GROUPING SETS returns three levels, told apart by `level` (standard GROUPING bits:
-- a bit is 1 when that column is aggregated away): 0 = channel x status, 1 = channel total,
-- 3 = grand total. Latency quantiles are computed per level, not merged from groups;
-- they are NaN where a group has no sent events. FINAL counts replayed events once.
-- Parameters are all bound server-side; `since` filters requested_at (the partition key).

SELECT
    channel,
    status,
    grouping(channel, status) AS level,
    count() AS events,
    quantilesIf(0.5, 0.95, 0.99)(latency_ms, status = 'sent') AS sent_latency_ms
FROM {database:Identifier}.delivery_events FINAL
WHERE ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR requested_at >= {since:Nullable(DateTime64(3, 'UTC'))})
  AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
  AND ({channel:Nullable(String)} IS NULL OR channel = {channel:Nullable(String)})
GROUP BY GROUPING SETS ((channel, status), (channel), ())
ORDER BY level DESC, channel, status
