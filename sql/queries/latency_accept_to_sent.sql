-- Acceptance to sent latency: how long after a notification was accepted was it sent, per
-- channel (p50/p95/p99 in milliseconds), over all channels on the row with channel NULL?
--
-- Per notification and channel: first `sent` event minus the `accepted` event (request
-- level); notifications without both are left out. Quantiles are NaN for an empty set.
-- Parameters (optional, NULL = no filter): since/until on requested_at, tenant, channel.
-- FINAL counts replayed events once.

SELECT
    if(overall = 1, NULL, channel_name) AS channel,
    sent,
    latency_ms
FROM (
SELECT
    grouping(channel) AS overall,
    toString(channel) AS channel_name,
    count() AS sent,
    quantiles(0.5, 0.95, 0.99)(wait_ms) AS latency_ms
FROM (
    SELECT s.channel, dateDiff('millisecond', a.accepted_at, s.sent_at) AS wait_ms
    FROM (
        SELECT tenant_id, notification_id, channel, min(occurred_at) AS sent_at
        FROM {database:Identifier}.delivery_events FINAL
        WHERE status = 'sent'
          AND ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
               OR requested_at >= {since:Nullable(DateTime64(3, 'UTC'))})
          AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
               OR requested_at < {until:Nullable(DateTime64(3, 'UTC'))})
          AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
          AND ({channel:Nullable(String)} IS NULL OR channel = {channel:Nullable(String)})
        GROUP BY tenant_id, notification_id, channel
    ) AS s
    INNER JOIN (
        SELECT tenant_id, notification_id, min(occurred_at) AS accepted_at
        FROM {database:Identifier}.delivery_events FINAL
        WHERE status = 'accepted'
          AND ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
               OR requested_at >= {since:Nullable(DateTime64(3, 'UTC'))})
          AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
               OR requested_at < {until:Nullable(DateTime64(3, 'UTC'))})
          AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
        GROUP BY tenant_id, notification_id
    ) AS a USING (tenant_id, notification_id)
)
GROUP BY GROUPING SETS ((channel), ())
)
ORDER BY overall, channel
