"""Web Push: RFC 8030 delivery, RFC 8291 ``aes128gcm`` encryption, RFC 8292 VAPID auth.

The address is ``webpush:`` + the browser's subscription JSON ``{"endpoint", "keys": {"p256dh",
"auth"}}``. Each message is encrypted for the subscription (a fresh ECDH key and salt every
time, as RFC 8291 requires) and POSTed to the endpoint with ``TTL``, ``Urgency``,
``Content-Encoding: aes128gcm`` and ``Authorization: vapid t=<JWT>, k=<public key>``. The VAPID
JWT (ES256; ``aud`` = the endpoint's origin, ``exp``, ``sub``) is cached per push service.

Built on ``cryptography`` and PyJWT rather than pywebpush / py-vapid / http-ece: those are
synchronous (``requests``), sign a new VAPID JWT per message and add three dependencies for
about eighty lines of well-specified crypto. ``decrypt`` is the receiver half (the local push
service uses it; ``notiflow.devservices.webpush_api.verify_vapid`` checks the VAPID header).

Errors: 404 / 410 (subscription gone) and a malformed subscription → ``TokenInvalid``; 429 and
5xx → ``RetryableError`` with ``Retry-After``; 413 and a payload over the limit →
``InvalidRequest``; 400 / 401 / 403 and other 4xx → ``PermanentError``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import os
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from yarl import URL

from connectors.base import (
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
    TokenInvalid,
)
from connectors.http import HttpConnector, HttpSession, excerpt, parse_retry_after
from connectors.push import collapse_key, platform_token, ttl_seconds

if TYPE_CHECKING:
    from collections.abc import Callable

    from notiflow.settings import Settings

__all__ = [
    "WebPushConnector",
    "b64url_decode",
    "b64url_encode",
    "decrypt",
    "encrypt",
    "load_vapid_key",
    "parse_subscription",
    "public_key_bytes",
]

log = logging.getLogger(__name__)

RECORD_SIZE = 4096
HEADER_BYTES = 16 + 4 + 1 + 65  # salt, record size, key id length, key id (RFC 8188)
TAG_BYTES = 16
SUBSCRIPTION_CACHE_SIZE = 10_000


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    """The 65-byte uncompressed point (how Web Push exchanges P-256 keys)."""
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _content_keys(
    salt: bytes, secret: bytes, auth: bytes, ua_public: bytes, as_public: bytes
) -> tuple[bytes, bytes]:
    """RFC 8291 section 3.4 then RFC 8188 section 2.2: the content key and nonce."""
    prk_key = _hmac(auth, secret)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    return cek, nonce


def encrypt(
    plaintext: bytes,
    ua_public: bytes,
    auth_secret: bytes,
    *,
    salt: bytes | None = None,
    private_key: ec.EllipticCurvePrivateKey | None = None,
    peer: ec.EllipticCurvePublicKey | None = None,
) -> bytes:
    """One ``aes128gcm`` record for the user agent's key (``peer``: the same key, parsed).

    A fresh sender key pair and salt per message; ``salt``/``private_key`` are for tests.
    """
    if len(plaintext) > RECORD_SIZE - TAG_BYTES - 1:
        raise ValueError("plaintext does not fit in one record")
    salt = salt if salt is not None else os.urandom(16)
    private_key = private_key or ec.generate_private_key(ec.SECP256R1())
    as_public = public_key_bytes(private_key.public_key())
    peer = peer or ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    secret = private_key.exchange(ec.ECDH(), peer)
    cek, nonce = _content_keys(salt, secret, auth_secret, ua_public, as_public)
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # 0x02: last record
    return salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public + record


def decrypt(body: bytes, ua_private: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """The plaintext of a single-record ``aes128gcm`` body (ValueError if it is not valid)."""
    if len(body) < HEADER_BYTES + TAG_BYTES + 1:
        raise ValueError("body too short for aes128gcm")
    salt, (record_size, key_length) = body[:16], struct.unpack("!IB", body[16:21])
    as_public, record = body[21 : 21 + key_length], body[21 + key_length :]
    if key_length != 65 or len(record) > record_size:
        raise ValueError("unsupported aes128gcm header (need one record and a P-256 key id)")
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public)
    secret = ua_private.exchange(ec.ECDH(), peer)
    ua_public = public_key_bytes(ua_private.public_key())
    cek, nonce = _content_keys(salt, secret, auth_secret, ua_public, as_public)
    padded = AESGCM(cek).decrypt(nonce, record, None).rstrip(b"\x00")
    if not padded.endswith(b"\x02"):
        raise ValueError("missing last-record delimiter")
    return padded[:-1]


def load_vapid_key(value: str | bytes | ec.EllipticCurvePrivateKey) -> ec.EllipticCurvePrivateKey:
    """A VAPID key from PEM text, a PEM file path, or base64url of the raw 32-byte key or DER."""
    if isinstance(value, ec.EllipticCurvePrivateKey):
        return value
    text = value.decode() if isinstance(value, bytes) else value.strip()
    if "-----BEGIN" not in text and len(text) < 200 and Path(text).is_file():
        text = Path(text).read_text().strip()
    if "-----BEGIN" in text:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    else:
        try:
            raw = b64url_decode(text)
        except (binascii.Error, ValueError) as error:
            raise ValueError("VAPID key: not PEM, a file, or base64url") from error
        if len(raw) == 32:
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        else:
            key = serialization.load_der_private_key(raw, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("VAPID key must be an EC P-256 key")
    return key


class WebPushConnector(HttpConnector):
    """Send encrypted Web Push messages to ``webpush:<subscription JSON>`` addresses."""

    channel: ClassVar[str] = "push"
    provider: ClassVar[str] = "webpush"

    DEFAULT_TIMEOUT_S: ClassVar[float] = 10.0
    DEFAULT_MAX_CONNECTIONS: ClassVar[int] = 100
    DEFAULT_TTL_S: ClassVar[int] = 86_400
    #: Push services accept at least 4096 bytes of encrypted body (RFC 8030 section 7.2).
    MAX_BODY_BYTES: ClassVar[int] = 4096
    MAX_PLAINTEXT_BYTES: ClassVar[int] = MAX_BODY_BYTES - HEADER_BYTES - TAG_BYTES - 1
    VAPID_LIFETIME_S: ClassVar[int] = 12 * 3600
    VAPID_RENEW_BEFORE_S: ClassVar[int] = 3600
    MAX_TOPIC_CHARS: ClassVar[int] = 32
    #: Delivery priority → RFC 8030 ``Urgency``.
    URGENCY: ClassVar[dict[str, str]] = {
        "critical": "high",
        "high": "high",
        "normal": "normal",
        "low": "low",
    }

    def __init__(
        self,
        vapid_private_key: str | bytes | ec.EllipticCurvePrivateKey,
        vapid_subject: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not vapid_subject.startswith(("mailto:", "https:")):
            raise ValueError("VAPID subject must be a mailto: or https: URI")
        self._http = HttpSession(timeout=timeout, max_connections=max_connections)
        self.vapid_key = load_vapid_key(vapid_private_key)
        self.vapid_subject = vapid_subject
        #: The ``applicationServerKey`` browsers subscribe with.
        self.vapid_public_key = b64url_encode(public_key_bytes(self.vapid_key.public_key()))
        self.timeout = timeout
        self.max_connections = max_connections
        self.clock = clock
        self._vapid: dict[str, tuple[str, float]] = {}  # origin → (header, renew at)

    @classmethod
    def from_settings(cls, settings: Settings) -> WebPushConnector:
        if not settings.webpush_vapid_private_key:
            raise ValueError("NOTIFLOW_WEBPUSH_VAPID_PRIVATE_KEY is not set")
        return cls(
            settings.webpush_vapid_private_key,
            settings.webpush_vapid_subject,
            max_connections=max(settings.delivery_concurrency, 1),
        )

    def vapid_header(self, origin: str) -> str:
        """``vapid t=<JWT>, k=<key>`` for a push service origin, cached until near expiry."""
        now = self.clock()
        cached = self._vapid.get(origin)
        if cached is not None and now < cached[1]:
            return cached[0]
        claims = {"aud": origin, "exp": int(now) + self.VAPID_LIFETIME_S, "sub": self.vapid_subject}
        token = jwt.encode(claims, self.vapid_key, algorithm="ES256")
        header = f"vapid t={token}, k={self.vapid_public_key}"
        self._vapid[origin] = (header, now + self.VAPID_LIFETIME_S - self.VAPID_RENEW_BEFORE_S)
        return header

    @staticmethod
    def plaintext(delivery: Delivery) -> bytes:
        """What the service worker receives: JSON with title, body, data and ids."""
        message = {
            "id": delivery.notification_id,
            "title": delivery.subject,
            "body": delivery.body,
            "category": delivery.category,
            "data": delivery.data,
        }
        try:
            return orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as error:
            raise InvalidRequest(f"unserializable_payload: {error}") from error

    def request(self, delivery: Delivery) -> tuple[URL, dict[str, str], bytes]:
        """Endpoint, headers and encrypted body for ``delivery``."""
        endpoint, ua_public, peer, auth = parse_subscription(
            platform_token(delivery.address, "webpush")
        )
        plaintext = self.plaintext(delivery)
        if len(plaintext) > self.MAX_PLAINTEXT_BYTES:
            raise InvalidRequest(
                f"payload_too_large: {len(plaintext)} > {self.MAX_PLAINTEXT_BYTES} bytes"
            )
        headers = {
            "TTL": str(ttl_seconds(delivery, self.DEFAULT_TTL_S)),
            "Urgency": self.URGENCY.get(delivery.priority, "normal"),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self.vapid_header(f"{endpoint.scheme}://{endpoint.raw_authority}"),
        }
        topic = collapse_key(delivery)
        if topic and len(topic) <= self.MAX_TOPIC_CHARS and _is_b64url(topic):
            headers["Topic"] = topic
        return endpoint, headers, encrypt(plaintext, ua_public, auth, peer=peer)

    async def send(self, delivery: Delivery) -> SendResult:
        endpoint, headers, body = self.request(delivery)
        status, reply_headers, raw = await self._http.post(
            endpoint, body, headers, allow_redirects=False
        )
        if 200 <= status < 300:
            location = reply_headers.get("Location")
            return SendResult(provider_message_id=location, detail={"status": status})
        retry_after = parse_retry_after(reply_headers.get("Retry-After"))
        text = excerpt(raw, 200)
        reason = f"http_{status}: {text}" if text else f"http_{status}"
        if status in (404, 410):
            raise TokenInvalid(reason, status=status)
        if status == 413:
            raise InvalidRequest(reason, status=status)
        if status == 429 or status >= 500:
            raise RetryableError(reason, status=status, retry_after=retry_after)
        raise PermanentError(reason, status=status)

    def __repr__(self) -> str:
        return f"WebPushConnector(subject={self.vapid_subject!r})"


def _is_b64url(text: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


@functools.lru_cache(maxsize=SUBSCRIPTION_CACHE_SIZE)
def parse_subscription(raw: str) -> tuple[URL, bytes, ec.EllipticCurvePublicKey, bytes]:
    """Endpoint, p256dh (raw and parsed) and auth of a subscription JSON; TokenInvalid when
    malformed. Cached: the same subscriptions come back for every campaign."""
    try:
        info = orjson.loads(raw)
        endpoint = URL(info["endpoint"])
        ua_public = b64url_decode(info["keys"]["p256dh"])
        auth = b64url_decode(info["keys"]["auth"])
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as error:
        raise TokenInvalid(f"invalid_subscription: {type(error).__name__}: {error}") from error
    if endpoint.scheme not in ("https", "http") or not endpoint.host or len(auth) != 16:
        raise TokenInvalid("invalid_subscription: need an http(s) endpoint and a 16-byte auth")
    return endpoint, ua_public, peer, auth
