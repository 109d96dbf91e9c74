-- Suppression: how many notifications were held back or dropped instead of sent, and why?
-- Events and notifications per status (deduplicated, rate_limited, deferred, expired,
-- held_quiet_hours, suppressed, scheduled, digested) and reason.
--
-- A notification deferred twice counts twice in `events` and once in `notifications`.
-- For why one user did not get one notification, see notification_trace.sql.
-- Parameters (optional, NULL = no filter): since/until on requested_at, tenant, channel.
-- FINAL counts replayed events once.

SELECT
    status,
    reason,
    count() AS events,
    uniqExact(notification_id) AS notifications,
    uniqExact(user_id) AS users
FROM {database:Identifier}.delivery_events FINAL
WHERE status IN ('deduplicated', 'rate_limited', 'deferred', 'expired', 'held_quiet_hours',
                 'suppressed', 'scheduled', 'digested')
  AND ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR requested_at >= {since:Nullable(DateTime64(3, 'UTC'))})
  AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR requested_at < {until:Nullable(DateTime64(3, 'UTC'))})
  AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
  AND ({channel:Nullable(String)} IS NULL OR channel = {channel:Nullable(String)})
GROUP BY status, reason
ORDER BY events DESC, status, reason
