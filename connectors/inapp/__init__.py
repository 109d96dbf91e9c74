"""In-app notifications: per-user inboxes the gateway reads (``redis_inbox``)."""
