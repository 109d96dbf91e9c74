-- A/B experiments: for each experiment and variant, how many notifications were enrolled, how
-- many were sent, delivered, opened, clicked, failed or suppressed, at what rates, and does a
-- variant's open or click rate differ significantly from the baseline variant's?
--
-- Events carry `variant = '<experiment>:<variant>'` (operators/experiments.py); a variant set
-- by a producer without ':' is listed under experiment ''. Per notification, over all its
-- channels (a notification counts once in each column however many messages it had):
-- sent/delivered/opened/clicked = it reached that status on some channel; failed = a failed,
-- dead_lettered or bounced event and no delivered receipt; suppressed = refused by the
-- user's preferences (status suppressed) on some channel and sent on none. Rates are over
-- `notifications` (every enrolled notification, whatever became of it), so a variant that
-- loses messages before the provider shows it.
--
-- Baseline: the variant named 'control', else the experiment's first variant by name.
-- open_z/click_z: two-proportion z-score (pooled) of the rate against the baseline's; NULL on
-- the baseline row or when undefined. *_significant: |z| >= 1.96 (two-sided, 95 %); a rough
-- guide only (checking repeatedly while an experiment runs inflates false positives).
-- Parameters (optional, NULL = no filter): experiment, since/until on requested_at, tenant.
-- FINAL counts replayed events once.

SELECT
    experiment,
    variant,
    notifications,
    sent,
    delivered,
    opened,
    clicked,
    failed,
    suppressed,
    round(delivered / notifications, 4) AS delivery_rate,
    round(opened / notifications, 4) AS open_rate,
    round(clicked / notifications, 4) AS click_rate,
    baseline,
    if(variant = baseline OR open_se = 0, NULL,
       round((opened / notifications - base_opened / base_notifications) / open_se, 2)) AS open_z,
    abs(open_z) >= 1.96 AS open_significant,
    if(variant = baseline OR click_se = 0, NULL,
       round((clicked / notifications - base_clicked / base_notifications) / click_se, 2))
        AS click_z,
    abs(click_z) >= 1.96 AS click_significant
FROM (
    SELECT
        *,
        sumIf(notifications, variant = baseline) OVER (PARTITION BY experiment)
            AS base_notifications,
        sumIf(opened, variant = baseline) OVER (PARTITION BY experiment) AS base_opened,
        sumIf(clicked, variant = baseline) OVER (PARTITION BY experiment) AS base_clicked,
        (opened + base_opened) / (notifications + base_notifications) AS open_pooled,
        (clicked + base_clicked) / (notifications + base_notifications) AS click_pooled,
        sqrt(open_pooled * (1 - open_pooled) * (1 / notifications + 1 / base_notifications))
            AS open_se,
        sqrt(click_pooled * (1 - click_pooled) * (1 / notifications + 1 / base_notifications))
            AS click_se
    FROM (
        SELECT
            *,
            argMin(variant, (variant != 'control', variant)) OVER (PARTITION BY experiment)
                AS baseline
        FROM (
            SELECT
                if(position(assigned, ':') > 0,
                   substring(assigned, 1, position(assigned, ':') - 1), '') AS experiment,
                if(position(assigned, ':') > 0,
                   substring(assigned, position(assigned, ':') + 1), assigned) AS variant,
                count() AS notifications,
                countIf(reached_sent) AS sent,
                countIf(reached_delivered) AS delivered,
                countIf(reached_opened) AS opened,
                countIf(reached_clicked) AS clicked,
                countIf(reached_failed AND NOT reached_delivered) AS failed,
                countIf(reached_suppressed AND NOT reached_sent) AS suppressed
            FROM (
                SELECT
                    tenant_id,
                    notification_id,
                    max(toString(variant)) AS assigned,
                    max(status = 'sent') AS reached_sent,
                    max(status = 'delivered') AS reached_delivered,
                    max(status = 'opened') AS reached_opened,
                    max(status = 'clicked') AS reached_clicked,
                    max(status IN ('failed', 'dead_lettered', 'bounced')) AS reached_failed,
                    max(status = 'suppressed') AS reached_suppressed
                FROM {database:Identifier}.delivery_events FINAL
                WHERE ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
                       OR requested_at >= {since:Nullable(DateTime64(3, 'UTC'))})
                  AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
                       OR requested_at < {until:Nullable(DateTime64(3, 'UTC'))})
                  AND ({tenant:Nullable(String)} IS NULL
                       OR tenant_id = {tenant:Nullable(String)})
                GROUP BY tenant_id, notification_id
                HAVING assigned != ''
            )
            GROUP BY experiment, variant
            HAVING {experiment:Nullable(String)} IS NULL
                OR experiment = {experiment:Nullable(String)}
        )
    )
)
ORDER BY experiment, variant != baseline, variant
