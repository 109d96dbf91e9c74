"""Which connectors exist in this process, built from settings (explicit, no plugin scanning).

A provider is registered only when its credentials are configured; SMTP and webhooks are
always there (they need no account). Optional providers are imported lazily so a deployment
without, say, push credentials never loads the push stacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson

from connectors.base import Connector
from connectors.ledger import SendLedger
from connectors.provider_limits import ProviderLimiter
from connectors.routing import ProviderRoutes
from connectors.tokens import TokenStore
from notiflow.settings import Settings

logger = logging.getLogger(__name__)


def _optional(settings: Settings) -> list[tuple[bool, Callable[[], Connector]]]:
    """(configured?, builder) for every provider beyond SMTP and webhooks."""

    def build(module: str, name: str) -> Callable[[], Connector]:
        def make() -> Connector:
            cls = getattr(__import__(module, fromlist=[name]), name)
            return cls.from_settings(settings)

        return make

    s = settings
    return [
        (bool(s.sendgrid_api_key), build("connectors.email.sendgrid", "SendGridConnector")),
        (
            bool(s.mailgun_api_key and s.mailgun_domain),
            build("connectors.email.mailgun", "MailgunConnector"),
        ),
        (
            bool(s.twilio_account_sid and s.twilio_auth_token),
            build("connectors.sms.twilio", "TwilioSmsConnector"),
        ),
        (
            bool(s.vonage_api_key and s.vonage_api_secret),
            build("connectors.sms.vonage", "VonageSmsConnector"),
        ),
        (
            bool(s.twilio_account_sid and s.twilio_auth_token),
            build("connectors.voice.twilio", "TwilioVoiceConnector"),
        ),
        (
            bool(s.fcm_project_id or s.apns_key_file or s.webpush_vapid_private_key),
            build("connectors.push.router", "PushRouter"),
        ),
        (bool(s.redis_url), build("connectors.inapp.redis_inbox", "RedisInboxConnector")),
    ]


def build_connectors(settings: Settings) -> list[Connector]:
    """Every configured connector for this process."""
    from connectors.email.smtp import SmtpConnector
    from connectors.webhook.standard import WebhookConnector

    connectors: list[Connector] = [
        SmtpConnector.from_settings(settings),
        WebhookConnector.from_settings(settings),
    ]
    connectors += [make() for configured, make in _optional(settings) if configured]
    costs = orjson.loads(settings.provider_costs)
    for connector in connectors:
        if connector.provider in costs:
            connector.cost_per_message = float(costs[connector.provider])
    logger.info("connectors", extra={"providers": [c.provider for c in connectors]})
    return connectors


def build_routes(settings: Settings) -> ProviderRoutes:
    return ProviderRoutes(build_connectors(settings), orjson.loads(settings.providers))


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


def build_ledger(settings: Settings) -> SendLedger | None:
    """The send ledger, when Redis is configured and the ledger is on."""
    if not (settings.redis_url and settings.send_ledger):
        return None
    return SendLedger(settings.redis_url, in_flight=settings.ledger_in_flight)


def build_token_store(settings: Settings) -> TokenStore | None:
    return TokenStore(settings.redis_url) if settings.redis_url else None
