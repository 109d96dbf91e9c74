"""Real local stand-ins for the services notiflow talks to, for tests and the demo.

- ``SmtpCatcher``: an aiosmtpd SMTP server that keeps messages (AUTH, STARTTLS, faults).
- ``WebhookReceiver``: an aiohttp server that records and verifies Standard Webhooks calls.
- ``RedisServer``: a throwaway ``redis-server`` process without persistence.
- ``ClickHouseHttpServer``: the ClickHouse HTTP interface in front of chDB, for testing the
  ``CLICKHOUSE_URL`` (server) code path where no ClickHouse server binary is available.

Each binds a free loopback port, is a context manager, and starts and stops in bounded time.
The HTTP provider stand-ins (``WebhookReceiver`` and the SendGrid, Mailgun, FCM and Web Push
APIs on it; ``provider_api.ProviderApiServer`` for Twilio and Vonage; ``apns_api.ApnsApi``)
share one base, ``server.LoopbackServer``: thread, lifecycle, recording and fault queue.
"""

from notiflow.devservices.clickhouse_http import ClickHouseHttpServer
from notiflow.devservices.redis_server import RedisServer
from notiflow.devservices.smtp_catcher import CaughtMessage, SmtpCatcher
from notiflow.devservices.webhook_receiver import ReceivedRequest, WebhookReceiver
from notiflow.netutil import free_port

__all__ = [
    "CaughtMessage",
    "ClickHouseHttpServer",
    "ReceivedRequest",
    "RedisServer",
    "SmtpCatcher",
    "WebhookReceiver",
    "free_port",
]
