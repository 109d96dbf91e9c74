-- Cost: what did delivery cost (provider-reported cost_usd) per tenant, channel and category
-- over a period, with totals per tenant, per channel and overall?
--
-- `level` tells rows apart: 'tenant/channel/category', 'tenant', 'channel', 'total'; columns
-- aggregated away are NULL on total rows. `messages` counts the events that carried a cost.
-- Parameters (optional, NULL = no filter): since/until on occurred_at (when the cost was
-- incurred), tenant, channel. FINAL counts replayed events once.

SELECT
    multiIf(level_bits = 0, 'tenant/channel/category', level_bits = 3, 'tenant',
            level_bits = 5, 'channel', 'total') AS level,
    if(bitTest(level_bits, 2), NULL, tenant) AS tenant_id,
    if(bitTest(level_bits, 1), NULL, channel_name) AS channel,
    if(bitTest(level_bits, 0), NULL, category_name) AS category,
    messages,
    total_cost_usd,
    avg_cost_usd
FROM (
    SELECT
        grouping(tenant_id, channel, category) AS level_bits,
        toString(tenant_id) AS tenant,
        toString(channel) AS channel_name,
        toString(category) AS category_name,
        count() AS messages,
        round(sum(cost_usd), 6) AS total_cost_usd,
        round(avg(cost_usd), 6) AS avg_cost_usd
    FROM {database:Identifier}.delivery_events FINAL
    WHERE cost_usd IS NOT NULL
      AND ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
           OR occurred_at >= {since:Nullable(DateTime64(3, 'UTC'))})
      AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
           OR occurred_at < {until:Nullable(DateTime64(3, 'UTC'))})
      AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
      AND ({channel:Nullable(String)} IS NULL OR channel = {channel:Nullable(String)})
    GROUP BY GROUPING SETS ((tenant_id, channel, category), (tenant_id), (channel), ())
)
ORDER BY level_bits, tenant_id, channel, category
