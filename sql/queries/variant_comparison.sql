-- A/B variant comparison: for each campaign and variant, how many notifications were routed,
-- and what share were delivered, opened and clicked?
--
-- Per notification and channel (a notification sent to two channels counts on each); only
-- events that carry a variant. Rates are over `notifications`; `sent_rate` shows whether a
-- variant lost messages before the provider. Parameters (optional, NULL = no filter):
-- campaign_id, since/until on requested_at, tenant, channel. FINAL counts replays once.

SELECT
    campaign AS campaign_id,
    variant_name AS variant,
    count() AS notifications,
    countIf(reached_sent) AS sent,
    countIf(reached_delivered) AS delivered,
    countIf(reached_opened) AS opened,
    countIf(reached_clicked) AS clicked,
    round(sent / notifications, 4) AS sent_rate,
    round(delivered / notifications, 4) AS delivered_rate,
    round(opened / notifications, 4) AS opened_rate,
    round(clicked / notifications, 4) AS clicked_rate
FROM (
    SELECT
        tenant_id,
        notification_id,
        channel,
        max(campaign_id) AS campaign,
        max(variant) AS variant_name,
        max(status = 'sent') AS reached_sent,
        max(status = 'delivered') AS reached_delivered,
        max(status = 'opened') AS reached_opened,
        max(status = 'clicked') AS reached_clicked
    FROM {database:Identifier}.delivery_events FINAL
    WHERE channel != '' AND variant != ''
      AND ({campaign_id:Nullable(String)} IS NULL
           OR campaign_id = {campaign_id:Nullable(String)})
      AND ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
           OR requested_at >= {since:Nullable(DateTime64(3, 'UTC'))})
      AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
           OR requested_at < {until:Nullable(DateTime64(3, 'UTC'))})
      AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
      AND ({channel:Nullable(String)} IS NULL OR channel = {channel:Nullable(String)})
    GROUP BY tenant_id, notification_id, channel
)
GROUP BY campaign, variant_name
ORDER BY campaign_id, variant
