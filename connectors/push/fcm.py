"""Firebase Cloud Messaging, HTTP v1: ``POST {base}/v1/projects/{project}/messages:send``.

Credentials come from firebase-admin / google-auth (a service-account file, or any google-auth
credential); the OAuth access token is cached and refreshed ``TOKEN_REFRESH_MARGIN_S`` before it
expires, in a worker thread (google-auth refreshes synchronously) under a lock, so one refresh
serves every concurrent send. Requests go out on one shared aiohttp session rather than through
firebase-admin's messaging: against the local stand-in (``benchmarks/push_bench.py fcm
--firebase-admin``, concurrency 100) this path sent 2-8x more per second than ``send_each``
(a thread per message, ``requests``) and 5-15x more than ``send_each_async`` (httpx), and
firebase-admin also retries internally, which is the dispatcher's job here.

Errors (the ``errorCode`` of the ``google.firebase.fcm.v1.FcmError`` detail decides first):

- ``UNREGISTERED`` (a 404 carrying an ``FcmError``) → ``TokenInvalid``: the token is dead.
- 400 ``INVALID_ARGUMENT`` whose detail is an ``FcmError`` (not a ``google.rpc.BadRequest`` field
  violation) and whose message names the registration token → ``TokenInvalid``: this is how FCM
  reports a malformed token, and Firebase's token-management guide says to remove those. Any
  other 400 is ``InvalidRequest`` (the message, not the token, is wrong).
- 429 ``QUOTA_EXCEEDED``, 500 ``INTERNAL``, 503 ``UNAVAILABLE``, any 5xx → ``RetryableError``
  with ``Retry-After``.
- 401 ``UNAUTHENTICATED`` (our OAuth token was refused): refresh it and try once more within the
  same attempt; a second refusal, ``THIRD_PARTY_AUTH_ERROR`` (APNs/Web Push credentials in the
  Firebase project) and 403 ``SENDER_ID_MISMATCH`` / ``PERMISSION_DENIED`` → ``PermanentError``.
  ``SENDER_ID_MISMATCH`` is not treated as a dead token: a wrong project id would otherwise
  delete every user's tokens.
- A 404 without an ``FcmError`` (a wrong ``fcm_base_url`` or project) → ``PermanentError``: only
  FCM's own verdict on the token may delete it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from firebase_admin import credentials as firebase_credentials
from google.auth import exceptions as google_auth_exceptions
from google.auth.credentials import Credentials as GoogleCredentials
from google.auth.transport.requests import Request as GoogleAuthRequest

from connectors.base import (
    ConnectorError,
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
    TokenInvalid,
)
from connectors.http import HttpConnector, HttpSession, excerpt, parse_retry_after
from connectors.push import (
    collapse_key,
    is_background,
    is_urgent,
    platform_token,
    string_data,
    ttl_seconds,
)

if TYPE_CHECKING:
    from notiflow.settings import Settings

__all__ = ["FcmConnector", "classify_fcm_error"]

log = logging.getLogger(__name__)

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
RETRYABLE_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
EXCERPT_CHARS = 200


def classify_fcm_error(status: int, body: bytes, retry_after: float | None) -> ConnectorError:
    """The error for a non-2xx FCM response (see the module docstring for the table)."""
    try:
        parsed = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        parsed = {}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        reason = f"http_{status}: {excerpt(body, EXCERPT_CHARS)}".rstrip(": ")
        if status == 429 or status >= 500:
            return RetryableError(reason, status=status, retry_after=retry_after)
        return PermanentError(reason, status=status)
    google_status = str(error.get("status") or "")
    message = str(error.get("message") or "")[:EXCERPT_CHARS]
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    fcm_codes = [str(d.get("errorCode")) for d in details if d.get("@type") == FCM_ERROR_TYPE]
    code = fcm_codes[0] if fcm_codes else google_status or f"http_{status}"
    reason = f"{code}: {message}" if message else code
    if code == "UNREGISTERED" or (status == 404 and fcm_codes):
        return TokenInvalid(reason, status=status)
    if code == "INVALID_ARGUMENT" and fcm_codes:
        bad_field = any(d.get("@type") == BAD_REQUEST_TYPE for d in details)
        if not bad_field and "registration token" in message.lower():
            return TokenInvalid(reason, status=status)
    if code in RETRYABLE_CODES or status == 429 or status >= 500:
        return RetryableError(reason, status=status, retry_after=retry_after)
    if status == 400:
        return InvalidRequest(reason, status=status)
    return PermanentError(reason, status=status)


class FcmConnector(HttpConnector):
    """Send to ``fcm:<registration token>`` addresses through FCM HTTP v1."""

    channel: ClassVar[str] = "push"
    provider: ClassVar[str] = "fcm"

    DEFAULT_BASE_URL: ClassVar[str] = "https://fcm.googleapis.com"
    DEFAULT_TIMEOUT_S: ClassVar[float] = 10.0
    DEFAULT_MAX_CONNECTIONS: ClassVar[int] = 100
    #: Refresh the OAuth token this long before it expires.
    TOKEN_REFRESH_MARGIN_S: ClassVar[float] = 300.0
    #: Lifetime assumed for a token whose credential reports no expiry.
    DEFAULT_TOKEN_LIFETIME_S: ClassVar[float] = 3600.0
    #: FCM's limit on the notification + data of one message.
    MAX_PAYLOAD_BYTES: ClassVar[int] = 4096
    RESERVED_DATA_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"from", "notification", "message_type"}
    )
    RESERVED_DATA_PREFIXES: ClassVar[tuple[str, ...]] = ("google", "gcm")

    def __init__(
        self,
        project_id: str,
        credential: GoogleCredentials,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if not project_id:
            raise ValueError("FCM project id is required")
        self._http = HttpSession(timeout=timeout, max_connections=max_connections)
        self.project_id = project_id
        self.credential = credential
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/v1/projects/{project_id}/messages:send"
        self.timeout = timeout
        self.max_connections = max_connections
        self.token_refreshes = 0
        self._auth_request: GoogleAuthRequest | None = None
        self._token: str | None = None
        self._refresh_at = 0.0  # time.monotonic() when the cached token should be renewed
        self._refresh_lock = asyncio.Lock()
        self._headers: dict[str, str] = {}

    @classmethod
    def from_service_account_file(
        cls, path: str | Path, project_id: str | None = None, **options: Any
    ) -> FcmConnector:
        """Credentials (and, unless given, the project id) from a service-account JSON file."""
        certificate = firebase_credentials.Certificate(str(path))
        project = project_id or certificate.project_id
        if not project:
            raise ValueError(f"{path}: no project_id; set NOTIFLOW_FCM_PROJECT_ID")
        return cls(project, certificate.get_credential(), **options)

    @classmethod
    def from_settings(cls, settings: Settings) -> FcmConnector:
        if settings.fcm_credentials_file is None:
            raise ValueError("NOTIFLOW_FCM_CREDENTIALS_FILE is not set")
        return cls.from_service_account_file(
            settings.fcm_credentials_file,
            settings.fcm_project_id,
            base_url=settings.fcm_base_url,
            max_connections=max(settings.delivery_concurrency, 1),
        )

    def payload(self, delivery: Delivery) -> bytes:
        """The JSON request body for ``delivery``."""
        message: dict[str, Any] = {"token": platform_token(delivery.address, "fcm")}
        background, size = is_background(delivery), 0
        if not background and (delivery.subject or delivery.body):
            notification = {"title": delivery.subject, "body": delivery.body}
            message["notification"] = {k: v for k, v in notification.items() if v}
            size = len((delivery.subject or "").encode()) + len(delivery.body.encode())
        if delivery.data:
            message["data"] = data = string_data(delivery.data)
            for key, value in data.items():
                if key in self.RESERVED_DATA_KEYS or key.startswith(self.RESERVED_DATA_PREFIXES):
                    raise InvalidRequest(f"reserved FCM data key {key!r}")
                size += len(key.encode()) + len(value.encode())
        if size > self.MAX_PAYLOAD_BYTES:
            raise InvalidRequest(f"payload_too_large: {size} > {self.MAX_PAYLOAD_BYTES} bytes")
        android: dict[str, Any] = {"priority": "high" if is_urgent(delivery) else "normal"}
        apns_headers = {"apns-priority": "5" if background else "10"}
        if delivery.metadata:
            ttl, collapse = ttl_seconds(delivery, -1), collapse_key(delivery)
            if ttl >= 0:
                android["ttl"] = f"{ttl}s"
                apns_headers["apns-expiration"] = str(int(time.time()) + ttl if ttl else 0)
            if collapse:
                android["collapse_key"] = collapse
                apns_headers["apns-collapse-id"] = collapse
        message["android"] = android
        message["apns"] = {"headers": apns_headers}
        return orjson.dumps({"message": message})

    async def send(self, delivery: Delivery) -> SendResult:
        body = self.payload(delivery)
        bearer = await self._bearer()
        status, raw, retry_after = await self._post(body, bearer)
        if status == 401 and b"UNAUTHENTICATED" in raw and b"THIRD_PARTY_AUTH_ERROR" not in raw:
            log.info("FCM refused the OAuth token; refreshing it once")
            bearer = await self._bearer(stale=bearer)
            status, raw, retry_after = await self._post(body, bearer)
        if 200 <= status < 300:
            try:
                name = orjson.loads(raw).get("name")
            except (orjson.JSONDecodeError, AttributeError):
                name = None
            return SendResult(provider_message_id=name, detail={"status": status})
        raise classify_fcm_error(status, raw, retry_after)

    # --- internals -----------------------------------------------------------------------
    async def _post(self, body: bytes, bearer: str) -> tuple[int, bytes, float | None]:
        if self._headers.get("Authorization") != f"Bearer {bearer}":
            self._headers = {
                "Authorization": f"Bearer {bearer}",
                "Content-Type": "application/json",
            }
        status, headers, raw = await self._http.post(self.url, body, self._headers)
        if 200 <= status < 300:
            return status, raw, None
        return status, raw, parse_retry_after(headers.get("Retry-After"))

    async def _bearer(self, stale: str | None = None) -> str:
        """A valid OAuth access token; ``stale`` forces renewal unless another task did it."""
        token = self._token
        if token and token != stale and time.monotonic() < self._refresh_at:
            return token
        async with self._refresh_lock:
            token = self._token
            if token and token != stale and time.monotonic() < self._refresh_at:
                return token
            return await self._refresh()

    async def _refresh(self) -> str:
        if self._auth_request is None:
            self._auth_request = GoogleAuthRequest()
        try:
            await asyncio.to_thread(self.credential.refresh, self._auth_request)
        except google_auth_exceptions.RefreshError as error:
            if getattr(error, "retryable", False):
                raise RetryableError(f"oauth_refresh_failed: {error}") from error
            raise PermanentError(f"oauth_refresh_failed: {error}") from error
        except google_auth_exceptions.TransportError as error:
            raise RetryableError(f"oauth_transport_error: {error}") from error
        token = self.credential.token
        if not token:
            raise PermanentError("oauth_refresh_failed: the credential produced no token")
        self._token = token
        self._refresh_at = time.monotonic() + self._refresh_in(self.credential.expiry)
        self.token_refreshes += 1
        return token

    def _refresh_in(self, expiry: dt.datetime | None) -> float:
        """Seconds until the token should be renewed (google-auth expiries are naive UTC)."""
        if expiry is None:
            lifetime = self.DEFAULT_TOKEN_LIFETIME_S
        else:
            aware = expiry if expiry.tzinfo else expiry.replace(tzinfo=dt.UTC)
            lifetime = (aware - dt.datetime.now(dt.UTC)).total_seconds()
        if lifetime > 2 * self.TOKEN_REFRESH_MARGIN_S:
            return lifetime - self.TOKEN_REFRESH_MARGIN_S
        return max(lifetime / 2, 0.0)

    def __repr__(self) -> str:
        return f"FcmConnector(project_id={self.project_id!r}, base_url={self.base_url!r})"
