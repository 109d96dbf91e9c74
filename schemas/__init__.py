"""Wire contracts. JSON Schema exports live in ``schemas/json`` (``python -m schemas``)."""

from schemas.event import DeliveryEvent, DeliveryStatus
from schemas.profile import ConsentRecord, ProfileUpdate, UserProfile
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
    Strategy,
)

__all__ = [
    "Audience",
    "CampaignRequest",
    "Channel",
    "ChannelContent",
    "ConsentRecord",
    "DeliveryEvent",
    "DeliveryStatus",
    "DigestSpec",
    "NotificationRequest",
    "Priority",
    "ProfileUpdate",
    "PushToken",
    "Recipient",
    "Strategy",
    "UserProfile",
]
