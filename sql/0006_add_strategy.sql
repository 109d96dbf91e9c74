-- 0006: the delivery strategy that chose the channel(s) (immediate, sequential, priority, cost,
-- smart), so analysts can compare strategies as they compare A/B variants. '' before 0006.
ALTER TABLE {database}.delivery_events ADD COLUMN IF NOT EXISTS strategy LowCardinality(String)
    AFTER variant
;
