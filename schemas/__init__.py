"""Wire contracts. JSON Schema exports live in ``schemas/json`` (``python -m schemas``)."""

from schemas.event import DeliveryEvent, DeliveryStatus
from schemas.request import (
    Channel,
    ChannelContent,
    NotificationRequest,
    Priority,
    PushToken,
    Recipient,
)

__all__ = [
    "Channel",
    "ChannelContent",
    "DeliveryEvent",
    "DeliveryStatus",
    "NotificationRequest",
    "Priority",
    "PushToken",
    "Recipient",
]
