"""Real local stand-ins for the services notiflow talks to, for tests and the demo.

- ``SmtpCatcher``: an aiosmtpd SMTP server that keeps messages (AUTH, STARTTLS, faults).
- ``WebhookReceiver``: an aiohttp server that records and verifies Standard Webhooks calls.
- ``RedisServer``: a throwaway ``redis-server`` process without persistence.

Each binds a free loopback port, is a context manager, and starts and stops in bounded time.
"""

from notiflow.devservices.redis_server import RedisServer
from notiflow.devservices.smtp_catcher import CaughtMessage, SmtpCatcher
from notiflow.devservices.webhook_receiver import ReceivedRequest, WebhookReceiver
from notiflow.netutil import free_port

__all__ = [
    "CaughtMessage",
    "ReceivedRequest",
    "RedisServer",
    "SmtpCatcher",
    "WebhookReceiver",
    "free_port",
]
