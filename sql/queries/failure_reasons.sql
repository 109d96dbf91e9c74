-- Failure reasons: why do deliveries fail at each provider? Events per provider, failure
-- status and reason, the notifications affected, the share of that provider's failure
-- events, and when the reason was first and last seen.
--
-- Failure statuses: failed, failed_over, retrying, bounced, token_invalidated (events with a
-- provider). Read from delivery_failures (materialized view, sql/0005): distinct event ids,
-- so replays count once. Parameters (optional, NULL = no filter): since/until on the day of
-- occurred_at (whole UTC days), tenant, channel.

SELECT
    provider,
    channel,
    status,
    reason,
    uniqExactMerge(event_ids) AS events,
    uniqExactMerge(notification_ids) AS notifications,
    round(events / sum(events) OVER (PARTITION BY provider), 4) AS share_of_provider,
    min(first_at) AS first_seen,
    max(last_at) AS last_seen
FROM {database:Identifier}.delivery_failures
WHERE provider != ''
  AND status IN ('failed', 'failed_over', 'retrying', 'bounced', 'token_invalidated')
  AND ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR day >= toDate({since:Nullable(DateTime64(3, 'UTC'))}))
  AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR day < toDate({until:Nullable(DateTime64(3, 'UTC'))}))
  AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
  AND ({channel:Nullable(String)} IS NULL OR channel = {channel:Nullable(String)})
GROUP BY provider, channel, status, reason
ORDER BY provider, events DESC, channel, status, reason
