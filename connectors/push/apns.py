"""Apple Push Notification service: HTTP/2 ``POST {base}/3/device/{token}``, token-based auth.

One shared httpx client (``http2=True``) multiplexes every send over one reused connection.
The provider token is a JWT (ES256; ``kid`` = key id, ``iss`` = team id, ``iat``) minted once
and reused until ``TOKEN_REFRESH_S`` (50 min; Apple refuses tokens older than an hour and
answers ``TooManyProviderTokenUpdates`` to tokens renewed more often than every 20 minutes).

Errors: 410 (``Unregistered``, ``ExpiredToken``) and ``BadDeviceToken`` → ``TokenInvalid``;
413 ``PayloadTooLarge`` and other 400s → ``InvalidRequest``; 429, 500, 503, and a connection
ended by GOAWAY (``ConnectionTerminated``), a reset or a timeout → ``RetryableError``. 403
``ExpiredProviderToken`` renews the token and tries once more within the same attempt — unless
the refused token is younger than ``MIN_TOKEN_REFRESH_S``: then the clocks disagree, renewing
cannot help and it is a ``PermanentError``, like every other 403 (bad key, team or topic).
Note that APNs also says ``BadDeviceToken`` for a sandbox token sent to production: keep
``apns_base_url`` matching the app's environment, or every token is reported dead.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.base import (
    Connector,
    ConnectorError,
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
    TokenInvalid,
)
from connectors.http import parse_retry_after
from connectors.push import collapse_key, is_background, platform_token, ttl_seconds

if TYPE_CHECKING:
    from collections.abc import Callable

    from notiflow.settings import Settings

__all__ = ["ApnsConnector", "classify_apns_error", "load_signing_key"]

log = logging.getLogger(__name__)

TOKEN_INVALID_REASONS = frozenset({"Unregistered", "BadDeviceToken", "ExpiredToken"})
_APNS_ID_NAMESPACE = uuid.UUID("6f1c7a52-4c35-4d3e-9a51-2f8f0c6b8e11")
_HEX = frozenset("0123456789abcdefABCDEF")


def load_signing_key(
    key: str | bytes | Path | ec.EllipticCurvePrivateKey,
) -> ec.EllipticCurvePrivateKey:
    """The ES256 key from a ``.p8`` path, its PEM text, or a key object."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key
    if isinstance(key, Path) or (isinstance(key, str) and "-----BEGIN" not in key):
        key = Path(key).read_bytes()
    pem = key.encode() if isinstance(key, str) else key
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError("APNs auth key must be an EC P-256 key (.p8)")
    return loaded


def classify_apns_error(
    status: int, reason: str, retry_after: float | None, timestamp: Any = None
) -> ConnectorError:
    """The error for a non-200 APNs response (see the module docstring)."""
    text = f"{reason} (since {timestamp})" if timestamp else reason
    if status == 410 or reason in TOKEN_INVALID_REASONS:
        return TokenInvalid(text, status=status)
    if status == 413 or reason == "PayloadTooLarge":
        return InvalidRequest(text, status=status)
    if status in (429, 500, 503) or status >= 500:
        return RetryableError(text, status=status, retry_after=retry_after)
    if status == 400:
        return InvalidRequest(text, status=status)
    return PermanentError(text, status=status)


class ApnsConnector(Connector):
    """Send to ``apns:<hex device token>`` addresses over HTTP/2."""

    channel: ClassVar[str] = "push"
    provider: ClassVar[str] = "apns"

    DEFAULT_BASE_URL: ClassVar[str] = "https://api.push.apple.com"
    DEFAULT_TIMEOUT_S: ClassVar[float] = 10.0
    DEFAULT_TTL_S: ClassVar[int] = 86_400
    #: httpx opens one HTTP/2 connection per origin; more only if streams run out.
    DEFAULT_MAX_CONNECTIONS: ClassVar[int] = 4
    MAX_PAYLOAD_BYTES: ClassVar[int] = 4096
    TOKEN_REFRESH_S: ClassVar[float] = 50 * 60
    MIN_TOKEN_REFRESH_S: ClassVar[float] = 20 * 60
    MAX_COLLAPSE_ID_BYTES: ClassVar[int] = 64

    def __init__(
        self,
        key: str | bytes | Path | ec.EllipticCurvePrivateKey,
        key_id: str,
        team_id: str,
        topic: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        verify: bool | str | ssl.SSLContext = True,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (key_id and team_id and topic):
            raise ValueError("APNs needs a key id, a team id and a topic")
        if timeout <= 0 or max_connections < 1:
            raise ValueError("timeout must be positive and max_connections at least 1")
        self.key = load_signing_key(key)
        self.key_id, self.team_id, self.topic = key_id, team_id, topic
        self.base_url = base_url.rstrip("/")
        self.verify = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self.timeout = timeout
        self.max_connections = max_connections
        self.clock = clock
        self.tokens_minted = 0
        self._client: httpx.AsyncClient | None = None
        self._jwt: str | None = None
        self._jwt_iat = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ApnsConnector:
        missing = [
            name
            for name in ("apns_key_file", "apns_key_id", "apns_team_id", "apns_topic")
            if not getattr(settings, name)
        ]
        if missing:
            raise ValueError(f"APNs settings missing: {', '.join(missing)}")
        return cls(
            Path(str(settings.apns_key_file)),
            str(settings.apns_key_id),
            str(settings.apns_team_id),
            str(settings.apns_topic),
            base_url=settings.apns_base_url,
            verify=settings.apns_validate_certs,
        )

    async def open(self) -> None:
        if self._client is not None and not self._client.is_closed:
            return
        limits = httpx.Limits(
            max_connections=self.max_connections, max_keepalive_connections=self.max_connections
        )
        self._client = httpx.AsyncClient(
            http2=True, verify=self.verify, timeout=self.timeout, limits=limits
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # --- provider token ------------------------------------------------------------------
    def provider_token(self) -> str:
        """The cached JWT, renewed once it is ``TOKEN_REFRESH_S`` old."""
        if self._jwt is None or self.clock() - self._jwt_iat >= self.TOKEN_REFRESH_S:
            return self._mint()
        return self._jwt

    def _mint(self) -> str:
        now = self.clock()
        headers = {"alg": "ES256", "kid": self.key_id}
        self._jwt = jwt.encode({"iss": self.team_id, "iat": int(now)}, self.key, "ES256", headers)
        self._jwt_iat = now
        self.tokens_minted += 1
        return self._jwt

    def _renew_refused(self, refused: str) -> str:
        """A token to retry with after ``ExpiredProviderToken`` refused ``refused``."""
        if self._jwt != refused:  # another send already renewed it
            return self.provider_token()
        age = self.clock() - self._jwt_iat
        if age < self.MIN_TOKEN_REFRESH_S:
            raise PermanentError(
                f"ExpiredProviderToken: the token is only {age:.0f}s old; check the clock",
                status=403,
            )
        log.info("APNs said the provider token expired; renewing it")
        return self._mint()

    # --- sending -------------------------------------------------------------------------
    def payload(self, delivery: Delivery) -> bytes:
        """The JSON payload: custom data at the top level beside ``aps``."""
        if "aps" in delivery.data:
            raise InvalidRequest("'aps' is reserved in APNs payload data")
        if is_background(delivery):
            aps: dict[str, Any] = {"content-available": 1}
        else:
            alert = {"title": delivery.subject, "body": delivery.body}
            aps = {"alert": {key: value for key, value in alert.items() if value}}
        try:
            body = orjson.dumps({**delivery.data, "aps": aps}, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as error:
            raise InvalidRequest(f"unserializable_payload: {error}") from error
        if len(body) > self.MAX_PAYLOAD_BYTES:
            raise InvalidRequest(
                f"payload_too_large: {len(body)} > {self.MAX_PAYLOAD_BYTES} bytes", status=413
            )
        return body

    def headers(self, delivery: Delivery) -> dict[str, str]:
        background = is_background(delivery)
        ttl = ttl_seconds(delivery, self.DEFAULT_TTL_S)
        apns_id = uuid.uuid5(_APNS_ID_NAMESPACE, f"{delivery.notification_id}|{delivery.address}")
        headers = {
            "apns-topic": self.topic,
            "apns-push-type": "background" if background else "alert",
            "apns-priority": "5" if background or delivery.priority == "low" else "10",
            "apns-expiration": str(int(self.clock()) + ttl if ttl else 0),
            "apns-id": str(apns_id),
        }
        collapse = collapse_key(delivery)
        if collapse:
            if len(collapse.encode()) > self.MAX_COLLAPSE_ID_BYTES:
                raise InvalidRequest(f"collapse_key longer than {self.MAX_COLLAPSE_ID_BYTES} bytes")
            headers["apns-collapse-id"] = collapse
        return headers

    async def send(self, delivery: Delivery) -> SendResult:
        token = platform_token(delivery.address, "apns")
        if not set(token) <= _HEX or len(token) % 2:
            raise TokenInvalid("BadDeviceToken: not a hex device token")
        body = self.payload(delivery)
        headers = self.headers(delivery)
        url = f"{self.base_url}/3/device/{token}"
        provider_token = self.provider_token()
        response = await self._post(url, body, headers, provider_token)
        reason, timestamp = self._reason(response)
        if response.status_code == 403 and reason == "ExpiredProviderToken":
            response = await self._post(url, body, headers, self._renew_refused(provider_token))
            reason, timestamp = self._reason(response)
        if response.status_code == 200:
            apns_id = response.headers.get("apns-id", headers["apns-id"])
            return SendResult(provider_message_id=apns_id, detail={"status": 200})
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise classify_apns_error(response.status_code, reason, retry_after, timestamp)

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], provider_token: str
    ) -> httpx.Response:
        if self._client is None or self._client.is_closed:
            await self.open()
        client = self._client
        if client is None:  # pragma: no cover - open() always sets it
            raise RetryableError("client_unavailable")
        headers = {**headers, "authorization": f"bearer {provider_token}"}
        try:
            return await client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as error:
            raise RetryableError(f"timeout after {self.timeout}s") from error
        except httpx.RemoteProtocolError as error:
            kind = "connection_terminated" if "ConnectionTerminated" in str(error) else "protocol"
            raise RetryableError(f"{kind}: {error}") from error
        except httpx.TransportError as error:
            raise RetryableError(f"transport_error: {type(error).__name__}: {error}") from error

    @staticmethod
    def _reason(response: httpx.Response) -> tuple[str, Any]:
        if response.status_code == 200:
            return "", None
        try:
            parsed = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        return str(parsed.get("reason") or f"http_{response.status_code}"), parsed.get("timestamp")

    def __repr__(self) -> str:
        return f"ApnsConnector(topic={self.topic!r}, base_url={self.base_url!r})"
