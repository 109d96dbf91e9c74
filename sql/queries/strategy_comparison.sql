-- Strategy comparison: for each delivery strategy (immediate, sequential, priority, cost,
-- smart), how many notifications did it handle, how many messages did it send for them, what
-- share were delivered, opened and clicked or failed, and what did they cost?
--
-- Events carry the strategy that chose the channels (`strategy`, sql/0006); notifications
-- never released to a strategy (suppressed, deduplicated, deferred…) are left out. Per
-- notification over all its channels, with the definitions of ab_variants.sql: sent /
-- delivered / opened / clicked = reached on some channel; failed = a failed, dead_lettered
-- or bounced event and no delivered receipt. `messages_sent` counts sent events (a
-- sequential or smart strategy sends fewer per notification than immediate); rates are over
-- `notifications`. Strategies are chosen per tenant and category, not at random: compare
-- them fairly with an A/B experiment whose variants set the strategy (ab_variants.sql).
-- Parameters (optional, NULL = no filter): since/until on requested_at, tenant.
-- FINAL counts replayed events once.

SELECT
    strategy_name AS strategy,
    count() AS notifications,
    sum(messages) AS messages_sent,
    countIf(reached_sent) AS sent,
    countIf(reached_delivered) AS delivered,
    countIf(reached_opened) AS opened,
    countIf(reached_clicked) AS clicked,
    countIf(reached_failed AND NOT reached_delivered) AS failed,
    round(delivered / notifications, 4) AS delivery_rate,
    round(opened / notifications, 4) AS open_rate,
    round(clicked / notifications, 4) AS click_rate,
    round(messages_sent / notifications, 4) AS messages_per_notification,
    round(sum(cost), 6) AS cost_usd,
    round(cost_usd / notifications, 6) AS cost_per_notification
FROM (
    SELECT
        tenant_id,
        notification_id,
        max(toString(strategy)) AS strategy_name,
        countIf(status = 'sent') AS messages,
        sum(ifNull(cost_usd, 0)) AS cost,
        max(status = 'sent') AS reached_sent,
        max(status = 'delivered') AS reached_delivered,
        max(status = 'opened') AS reached_opened,
        max(status = 'clicked') AS reached_clicked,
        max(status IN ('failed', 'dead_lettered', 'bounced')) AS reached_failed
    FROM {database:Identifier}.delivery_events FINAL
    WHERE ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
           OR requested_at >= {since:Nullable(DateTime64(3, 'UTC'))})
      AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
           OR requested_at < {until:Nullable(DateTime64(3, 'UTC'))})
      AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
    GROUP BY tenant_id, notification_id
    HAVING strategy_name != ''
)
GROUP BY strategy_name
ORDER BY strategy
