"""Wire contracts. JSON Schema exports live in ``schemas/json`` (``python -m schemas``)."""

from schemas.event import DeliveryEvent, DeliveryStatus
from schemas.request import (
    Audience,
    CampaignRequest,
    Channel,
    ChannelContent,
    DigestSpec,
    NotificationRequest,
    Priority,
    PushToken,
    Recipient,
)

__all__ = [
    "Audience",
    "CampaignRequest",
    "Channel",
    "ChannelContent",
    "DeliveryEvent",
    "DeliveryStatus",
    "DigestSpec",
    "NotificationRequest",
    "Priority",
    "PushToken",
    "Recipient",
]
