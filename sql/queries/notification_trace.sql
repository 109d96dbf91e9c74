-- Notification trace: why didn't user X get notification Y? Every event of one notification
-- (notification_id) or of one user (user_id), or both, in the order they happened, with
-- channel, provider, attempt, reason and latency.
--
-- At least one of notification_id / user_id must be given (otherwise no rows). Optional:
-- tenant, since on requested_at. Ordered by occurred_at, then the pipeline order of the
-- status for events in the same millisecond. FINAL shows each replayed event once.

SELECT
    occurred_at,
    notification_id,
    user_id,
    tenant_id,
    status,
    channel,
    provider,
    attempt,
    reason,
    latency_ms,
    cost_usd,
    category,
    campaign_id,
    variant,
    requested_at,
    event_id
FROM {database:Identifier}.delivery_events FINAL
WHERE NOT ({notification_id:Nullable(String)} IS NULL AND {user_id:Nullable(String)} IS NULL)
  AND ({notification_id:Nullable(String)} IS NULL
       OR notification_id = {notification_id:Nullable(String)})
  AND ({user_id:Nullable(String)} IS NULL OR user_id = {user_id:Nullable(String)})
  AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
  AND ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR requested_at >= {since:Nullable(DateTime64(3, 'UTC'))})
ORDER BY
    occurred_at,
    indexOf(['accepted', 'rejected', 'deduplicated', 'rate_limited', 'deferred', 'scheduled',
             'held_quiet_hours', 'expired', 'digested', 'suppressed', 'retrying', 'failed_over',
             'sent', 'failed', 'dead_lettered', 'token_invalidated', 'delivered', 'bounced',
             'opened', 'clicked'], toString(status)),
    channel,
    attempt,
    event_id
