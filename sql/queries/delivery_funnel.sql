-- Delivery funnel: of the notifications routed to each channel and provider, how many were
-- sent, delivered, opened and clicked, and at what rates (each stage over `accepted`)?
--
-- One row per (channel, provider). `accepted` counts accepted notifications routed to the
-- channel (any event on it); provider is the last provider that handled the notification
-- there ('' if none did, e.g. rate limited before a provider was chosen). A stage counts a
-- notification once however many events it had. Rates are NaN where accepted is 0.
-- Parameters (all optional, NULL = no filter): since/until on requested_at, tenant, channel.
-- FINAL counts replayed events once.

SELECT
    channel,
    last_provider AS provider,
    count() AS accepted,
    countIf(reached_sent) AS sent,
    countIf(reached_delivered) AS delivered,
    countIf(reached_opened) AS opened,
    countIf(reached_clicked) AS clicked,
    round(sent / accepted, 4) AS sent_rate,
    round(delivered / accepted, 4) AS delivered_rate,
    round(opened / accepted, 4) AS opened_rate,
    round(clicked / accepted, 4) AS clicked_rate
FROM (
    SELECT
        tenant_id,
        notification_id,
        channel,
        argMaxIf(provider, occurred_at, provider != '') AS last_provider,
        max(status = 'sent') AS reached_sent,
        max(status = 'delivered') AS reached_delivered,
        max(status = 'opened') AS reached_opened,
        max(status = 'clicked') AS reached_clicked
    FROM {database:Identifier}.delivery_events FINAL
    WHERE channel != ''
      AND ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
           OR requested_at >= {since:Nullable(DateTime64(3, 'UTC'))})
      AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
           OR requested_at < {until:Nullable(DateTime64(3, 'UTC'))})
      AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
      AND ({channel:Nullable(String)} IS NULL OR channel = {channel:Nullable(String)})
    GROUP BY tenant_id, notification_id, channel
)
GROUP BY channel, last_provider
ORDER BY channel, provider
