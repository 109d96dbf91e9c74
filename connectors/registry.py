"""Which connector serves which channel, built from settings (explicit, no plugin scanning)."""

from __future__ import annotations

from connectors.base import Connector
from connectors.email.smtp import SmtpConnector
from connectors.webhook.standard import WebhookConnector
from notiflow.settings import Settings


def build_connectors(settings: Settings) -> dict[str, Connector]:
    """Channel → connector for this process. Channels without one are dead-lettered."""
    return {
        "email": SmtpConnector.from_settings(settings),
        "webhook": WebhookConnector.from_settings(settings),
    }
