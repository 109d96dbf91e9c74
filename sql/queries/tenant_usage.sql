-- Tenant usage for billing: per tenant and channel over a period, how many requests were
-- accepted, messages sent and delivered, SMS segments sent, and what the providers charged?
--
-- One row per (tenant, channel); channel '' carries the request-level figures (accepted,
-- rejected), the channel rows the deliveries. `segments` sums the SMS segments of sent
-- events. Parameters (optional, NULL = no filter): since/until on occurred_at (billing
-- period by event time), tenant. FINAL counts replayed events once.

SELECT
    tenant_id,
    channel,
    countIf(status = 'accepted') AS accepted,
    countIf(status = 'rejected') AS rejected,
    countIf(status = 'sent') AS sent,
    countIf(status = 'delivered') AS delivered,
    sumIf(ifNull(segments, 0), status = 'sent') AS sms_segments,
    round(sum(ifNull(cost_usd, 0)), 6) AS total_cost_usd
FROM {database:Identifier}.delivery_events FINAL
WHERE ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR occurred_at >= {since:Nullable(DateTime64(3, 'UTC'))})
  AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR occurred_at < {until:Nullable(DateTime64(3, 'UTC'))})
  AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
GROUP BY tenant_id, channel
ORDER BY tenant_id, channel
