"""Which connector serves which channel, built from settings (explicit, no plugin scanning)."""

from __future__ import annotations

import orjson

from connectors.base import Connector
from connectors.email.smtp import SmtpConnector
from connectors.provider_limits import ProviderLimiter
from connectors.webhook.standard import WebhookConnector
from notiflow.settings import Settings


def build_connectors(settings: Settings) -> dict[str, Connector]:
    """Channel → connector for this process. Channels without one are dead-lettered."""
    return {
        "email": SmtpConnector.from_settings(settings),
        "webhook": WebhookConnector.from_settings(settings),
    }


def build_provider_limiter(settings: Settings) -> ProviderLimiter | None:
    """The account-wide provider limiter, when Redis is configured (pauses on 429 need it too).

    ``NOTIFLOW_PROVIDER_LIMITS`` is JSON ``{"provider": [rate_per_second, burst]}``.
    """
    if not settings.redis_url:
        return None
    limits = {
        provider: (float(rate), float(burst))
        for provider, (rate, burst) in orjson.loads(settings.provider_limits).items()
    }
    return ProviderLimiter(settings.redis_url, limits)
