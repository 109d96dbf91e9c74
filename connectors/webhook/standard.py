"""Webhooks signed per the Standard Webhooks spec (https://www.standardwebhooks.com).

One JSON POST per delivery to ``delivery.address`` over a shared aiohttp session. Headers:
``webhook-id`` (stable across retries, so receivers can de-duplicate), ``webhook-timestamp``
(unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` over ``{id}.{ts}.{body}``.
``sign`` and ``verify`` are the receiver-side half, for tests and users alike.

Redirects are not followed (a 3xx is a misconfigured endpoint: PermanentError).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import aiohttp
import orjson
from yarl import URL

from connectors.base import (
    ConnectorError,
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.http import (
    TRANSPORT_ERRORS,
    HttpConnector,
    HttpSession,
    excerpt,
    parse_retry_after,
    transport_error,
)

if TYPE_CHECKING:
    from notiflow.settings import Settings

__all__ = ["WebhookConnector", "parse_retry_after", "sign", "verify"]

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


def _secret_key(secret: str | bytes) -> bytes:
    """HMAC key of a ``whsec_<base64>`` secret (raw bytes are used as they are)."""
    if isinstance(secret, bytes):
        return secret
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise ValueError("webhook secret must be 'whsec_' + base64") from error


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` value: ``v1,<base64(HMAC-SHA256(key, id.ts.body))>``."""
    payload = body.encode() if isinstance(body, str) else body
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    digest = hmac.new(_secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """True when one of the ``v1`` signatures matches and the timestamp is within tolerance."""
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not msg_id or not raw_timestamp.isdigit() or not signatures:
        return False
    timestamp = int(raw_timestamp)
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, msg_id, timestamp, body).encode()
    # Several space-separated signatures are allowed (secret rotation): any may match.
    return any(
        hmac.compare_digest(expected, candidate.encode())
        for candidate in signatures.split()
        if candidate.startswith(f"{SIGNATURE_VERSION},")
    )


class WebhookConnector(HttpConnector):
    """POST a signed JSON notification to the URL in ``delivery.address``.

    Safe to share across tasks on one event loop; ``max_connections`` caps open sockets.
    """

    channel: ClassVar[str] = "webhook"
    provider: ClassVar[str] = "webhook"

    DEFAULT_TIMEOUT_S: ClassVar[float] = 10.0
    DEFAULT_MAX_CONNECTIONS: ClassVar[int] = 100
    USER_AGENT: ClassVar[str] = "notiflow-webhook/0.1"
    ERROR_EXCERPT_CHARS: ClassVar[int] = 200
    RETRYABLE_STATUSES: ClassVar[frozenset[int]] = frozenset({408, 425, 429})

    def __init__(
        self,
        secret: str,
        *,
        endpoint_secrets: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        user_agent: str = USER_AGENT,
    ) -> None:
        """``endpoint_secrets``: per-endpoint signing secrets, keyed by the endpoint URL, its
        origin (``https://host:port``) or a tenant id — the most specific match wins, then
        ``secret``."""
        for candidate in (secret, *(endpoint_secrets or {}).values()):
            _secret_key(candidate)  # fail fast on a malformed secret
        self.endpoint_secrets = dict(endpoint_secrets or {})
        self._http = HttpSession(
            timeout=timeout, max_connections=max_connections, headers={"User-Agent": user_agent}
        )
        self.secret = secret
        self.timeout = timeout
        self.max_connections = max_connections
        self.user_agent = user_agent

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConnector:
        return cls(
            settings.webhook_secret,
            endpoint_secrets=orjson.loads(settings.webhook_endpoint_secrets),
            timeout=settings.webhook_timeout_seconds,
            max_connections=max(settings.delivery_concurrency, 1),
        )

    @staticmethod
    def message_id(delivery: Delivery) -> str:
        """The ``webhook-id``: the same for every attempt of one delivery."""
        return f"{delivery.notification_id}.{delivery.channel}"

    @staticmethod
    def payload(delivery: Delivery) -> bytes:
        """The JSON body sent (and signed) for ``delivery``."""
        try:
            return orjson.dumps(
                {
                    "type": "notification",
                    "id": delivery.notification_id,
                    "tenant_id": delivery.tenant_id,
                    "user_id": delivery.user_id,
                    "category": delivery.category,
                    "subject": delivery.subject,
                    "body": delivery.body,
                    "data": delivery.data,
                    "metadata": delivery.metadata,
                },
                option=orjson.OPT_NON_STR_KEYS,
            )
        except TypeError as error:  # orjson.JSONEncodeError subclasses TypeError
            raise InvalidRequest(f"unserializable_payload: {error}") from error

    def secret_for(self, delivery: Delivery) -> str:
        """The signing secret of this delivery's endpoint (URL, then origin, then tenant)."""
        if self.endpoint_secrets:
            url = URL(delivery.address)
            origin = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.explicit_port else "")
            for key in (delivery.address, origin, delivery.tenant_id):
                if key in self.endpoint_secrets:
                    return self.endpoint_secrets[key]
        return self.secret

    def signed_headers(
        self,
        msg_id: str,
        body: bytes,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> dict[str, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        return {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret or self.secret, msg_id, ts, body),
        }

    async def send(self, delivery: Delivery) -> SendResult:
        url = self._target(delivery.address)
        body = self.payload(delivery)
        msg_id = self.message_id(delivery)
        session = await self._http.open()
        try:
            async with session.post(
                url,
                data=body,
                headers=self.signed_headers(msg_id, body, secret=self.secret_for(delivery)),
                allow_redirects=False,
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    await response.read()  # drain so the connection is reused
                    return SendResult(provider_message_id=msg_id, detail={"status": status})
                detail = await self._excerpt(response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except aiohttp.InvalidURL as error:
            raise InvalidRequest(f"invalid_url: {error}") from error
        except TRANSPORT_ERRORS as error:
            raise transport_error(error, self.timeout) from error
        raise self._classify(status, detail, retry_after)

    # --- internals -----------------------------------------------------------------------
    @staticmethod
    def _target(address: str) -> URL:
        try:
            url = URL(address)
        except (TypeError, ValueError) as error:
            raise InvalidRequest(f"invalid_url: {address!r}") from error
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidRequest(f"invalid_url: {address!r} (need http(s)://host/...)")
        return url

    async def _excerpt(self, response: aiohttp.ClientResponse) -> str:
        try:
            raw = await response.content.read(self.ERROR_EXCERPT_CHARS * 4)
        except TRANSPORT_ERRORS:
            return ""
        return excerpt(raw, self.ERROR_EXCERPT_CHARS)

    @classmethod
    def _classify(cls, status: int, detail: str, retry_after: float | None) -> ConnectorError:
        reason = f"http_{status}: {detail}" if detail else f"http_{status}"
        if status in cls.RETRYABLE_STATUSES or status >= 500:
            return RetryableError(reason, status=status, retry_after=retry_after)
        if 300 <= status < 400:
            return PermanentError(f"{reason} (redirects are not followed)", status=status)
        return PermanentError(reason, status=status)

    def __repr__(self) -> str:
        return f"WebhookConnector(timeout={self.timeout}, max_connections={self.max_connections})"
