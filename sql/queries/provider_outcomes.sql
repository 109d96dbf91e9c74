-- Provider outcomes: for each channel and provider, how many attempts ended sent, failed or
-- handed to another provider, what share succeeded, and how many retries, bounces and dead
-- push tokens were seen?
--
-- success_rate = sent / (sent + failed + failed_over): the final outcome of each attempt
-- chain at that provider (retries are intermediate and counted apart). NaN without attempts.
-- Events without a provider are left out. Parameters (optional, NULL = no filter):
-- since/until on occurred_at (event time), tenant, channel. FINAL counts replays once.

SELECT
    channel,
    provider,
    countIf(status = 'sent') AS sent,
    countIf(status = 'failed') AS failed,
    countIf(status = 'failed_over') AS failed_over,
    countIf(status = 'retrying') AS retried,
    countIf(status = 'bounced') AS bounced,
    countIf(status = 'token_invalidated') AS tokens_invalidated,
    round(sent / (sent + failed + failed_over), 4) AS success_rate,
    round((failed + failed_over) / (sent + failed + failed_over), 4) AS failure_rate
FROM {database:Identifier}.delivery_events FINAL
WHERE provider != ''
  AND ({since:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR occurred_at >= {since:Nullable(DateTime64(3, 'UTC'))})
  AND ({until:Nullable(DateTime64(3, 'UTC'))} IS NULL
       OR occurred_at < {until:Nullable(DateTime64(3, 'UTC'))})
  AND ({tenant:Nullable(String)} IS NULL OR tenant_id = {tenant:Nullable(String)})
  AND ({channel:Nullable(String)} IS NULL OR channel = {channel:Nullable(String)})
GROUP BY channel, provider
ORDER BY channel, provider
