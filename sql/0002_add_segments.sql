-- 0002: SMS segments per event (GSM-7 / UCS-2 counting by the SMS connectors), NULL otherwise.
ALTER TABLE {database}.delivery_events ADD COLUMN IF NOT EXISTS segments Nullable(UInt16)
    AFTER provider_message_id
;
