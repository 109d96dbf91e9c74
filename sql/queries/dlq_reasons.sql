-- Dead-letter reasons: what ended on the DLQ or failed for good, and why? Events and
-- notifications per status (rejected: malformed request; dead_lettered: could not be
-- attempted; failed: every attempt failed) and reason, with an example notification id and
-- when the reason was first and last seen.
--
-- Read from delivery_failures (materialized view, sql/0005): distinct event ids, so replays
-- count once. Parameters (optional, NULL = no filter): since/until on the day of
-- occurred_at (whole UTC days), tenant, channel ('' = request level, i.e. rejected).

SELECT
    status,
    reason,
    uniqExactMerge(event_ids) AS events,
    uniqExactMerge(notification_ids) AS notifications,
    max(example_id) AS example_notification_id,
    min(first_at) AS first_seen,
    max(last_at) AS last_seen
FROM {database:Identifier}.delivery_failures
WHERE status IN ('rejected', 'dead_lettered', 'failed')
  AND ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR day >= toDate({since:Nullable(DateTime64(3, 'UTC'))}))
  AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR day < toDate({until:Nullable(DateTime64(3, 'UTC'))}))
  AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
  AND ({channel:Nullable(String)} IS NULL OR channel = {channel:Nullable(String)})
GROUP BY status, reason
ORDER BY events DESC, status, reason
