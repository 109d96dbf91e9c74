"""A local APNs provider API over real HTTP/2 + TLS: the stand-in for ``api.push.apple.com``.

An ``h2`` server on asyncio in a background thread (``server.LoopbackServer``: lifecycle,
recording, fault queue), TLS with a self-signed certificate made at start (``ca_file`` /
``ssl_context()`` for clients), ALPN ``h2`` only. ``POST /3/device/{token}`` is checked like
APNs does: the ES256 provider JWT against the public keys it was given (kid,
iss, one-hour age, renewals at most every 20 minutes), ``apns-topic``, ``apns-push-type``,
``apns-priority``, ``apns-expiration``, ``apns-id``, the token, the 4096-byte payload. Success is
200 with an ``apns-id`` header; errors are ``{"reason": ...}`` (410 adds ``timestamp``).

Faults: scripted statuses, 429 with ``Retry-After``, dead tokens, latency, a dropped
connection, a GOAWAY that ends the connection under an in-flight request (``goaway_next``), and
a graceful GOAWAY after N requests per connection (``max_requests_per_connection``, as
Hypercorn does after 1,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import ssl
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hyperframe.frame
import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notiflow.devservices.server import LoopbackServer, Shutdown, retry_after_value

__all__ = ["ApnsApi", "ApnsRequest"]

log = logging.getLogger(__name__)

_PUSH_TYPE_NAMES = "alert background voip complication fileprovider mdm location liveactivity"
PUSH_TYPES = frozenset([*_PUSH_TYPE_NAMES.split(), "pushtotalk", "widgets", "controls"])
_PEM_PKCS8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8)


@dataclass(frozen=True)
class ApnsRequest:
    """One request and the answer (status 0: connection dropped or ended by GOAWAY)."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    reason: str | None
    connection: int
    stream_id: int
    received_at: float = field(default_factory=time.time)

    @property
    def device_token(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def json(self) -> Any:
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: str  # "reply", "drop" or "goaway"
    status: int = 200
    reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class _H2Connection(asyncio.Protocol):
    """One client connection: frames in, ``ApnsApi._on_request`` per finished request."""

    CLOSE_GRACE_S = 1.0

    def __init__(self, api: ApnsApi, number: int) -> None:
        self.api, self.number = api, number
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.answered = 0
        self.pending = 0  # answers waiting on the configured latency
        self.last_stream: int | None = None  # set once a graceful GOAWAY went out
        self.closing = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.api._live.add(self)
        self.h2.local_settings.max_concurrent_streams = self.api.max_concurrent_streams
        self.h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                if self.last_stream is None or event.stream_id <= self.last_stream:
                    self.streams[event.stream_id] = (dict(event.headers), bytearray())  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                if event.stream_id in self.streams:
                    self.streams[event.stream_id][1].extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id in self.streams:
                headers, body = self.streams.pop(event.stream_id)
                self.api._on_request(self, event.stream_id, headers, bytes(body))
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._close()
            if self.closing:
                return
        self._flush()

    def respond(
        self, stream_id: int, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        if self.closing:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.send_headers(
                stream_id, [(":status", str(status)), *headers], end_stream=not body
            )
            if body:
                self.h2.send_data(stream_id, body, end_stream=True)
        self.answered += 1
        limit = self.api.max_requests_per_connection
        if limit and self.answered >= limit and self.last_stream is None:
            self._drain()
        self._flush()
        if self.last_stream is not None and not self.streams and not self.pending:
            asyncio.get_running_loop().call_later(self.CLOSE_GRACE_S, self._close)

    def _drain(self) -> None:
        """Graceful GOAWAY: streams up to the newest are still answered, later ones refused.

        The frame is written beside h2's state machine, which would refuse to answer the
        remaining streams once it has sent GOAWAY itself.
        """
        self._flush()
        self.last_stream = self.h2.highest_inbound_stream_id
        frame = hyperframe.frame.GoAwayFrame(0)
        frame.last_stream_id = self.last_stream
        if self.transport is not None:
            self.transport.write(frame.serialize())

    def goaway(self, last_stream_id: int, error_code: int = 0, debug: bytes | None = None) -> None:
        """Abrupt GOAWAY: stop answering at once; the socket closes after a grace period."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code, debug, last_stream_id)
        self._flush()
        self.closing = True
        asyncio.get_running_loop().call_later(self.CLOSE_GRACE_S, self._close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.api._live.discard(self)

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class ApnsApi(LoopbackServer[ApnsRequest, _Fault]):
    """APNs on a loopback port; ``base_url`` goes in ``NOTIFLOW_APNS_BASE_URL``.

    ``count`` is requests answered 200.
    """

    NAME = "apns-api"
    SCHEME = "https"
    MAX_PAYLOAD_BYTES = 4096
    TOKEN_MAX_AGE_S = 3600
    MIN_TOKEN_RENEWAL_S = 20 * 60

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        team_id: str = "TEAM000001",
        topic: str = "org.notiflow.app",
        delay_seconds: float = 0.0,
        max_requests_per_connection: int = 0,
        max_concurrent_streams: int = 1000,
    ) -> None:
        super().__init__(host, port, delay_seconds=delay_seconds)
        self.team_id, self.topic = team_id, topic
        self.max_requests_per_connection = max_requests_per_connection
        self.max_concurrent_streams = max_concurrent_streams
        self.connections = 0
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._jwt_iat: dict[str, int] = {}  # verified token → iat
        self._latest_iat: dict[str, int] = {}  # key id → iat of its newest accepted token
        self._expired: set[str] = set()
        self._dead: dict[str, int] = {}  # device token → unregistered-since (ms)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server_ssl: ssl.SSLContext | None = None
        self._live: set[_H2Connection] = set()  # open connections (server thread only)

    # --- keys and TLS ------------------------------------------------------------------------
    def trust(self, key_id: str, public_key: ec.EllipticCurvePublicKey) -> None:
        """Accept provider tokens with this ``kid`` signed by this key."""
        with self._cond:
            self._keys[key_id] = public_key

    def generate_key(self, key_id: str = "KEY0000001") -> bytes:
        """A new trusted signing key, as the PEM text of an Apple ``.p8`` file."""
        key = ec.generate_private_key(ec.SECP256R1())
        self.trust(key_id, key.public_key())
        return key.private_bytes(*_PEM_PKCS8, serialization.NoEncryption())

    @property
    def ca_file(self) -> str:
        """PEM of the server certificate (self-signed), for ``verify=``."""
        if self._tmp is None:
            raise RuntimeError("ApnsApi is not started")
        return str(Path(self._tmp.name) / "cert.pem")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    # --- fault injection ---------------------------------------------------------------------
    def respond_with(
        self,
        status: int,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and ``{"reason": reason}``."""
        self._push(_Fault("reply", status, reason, dict(headers or {})), times)

    def script(self, statuses: Iterable[int]) -> None:
        for status in statuses:
            self.respond_with(status, _DEFAULT_REASONS.get(status, f"HTTP{status}"))

    def throttle(self, retry_after: str | float = 1, *, times: int = 1) -> None:
        headers = {"retry-after": retry_after_value(retry_after)}
        self.respond_with(429, "TooManyRequests", headers, times=times)

    def drop_next(self, times: int = 1) -> None:
        """Abort the TCP connection instead of answering the next ``times`` requests."""
        self._push(_Fault("drop"), times)

    def goaway_next(self, times: int = 1) -> None:
        """End the connection with GOAWAY (last stream = this request) without answering."""
        self._push(_Fault("goaway"), times)

    def kill_token(self, *tokens: str, since_ms: int | None = None) -> None:
        """These device tokens answer 410 ``Unregistered`` from now on."""
        with self._cond:
            self._dead.update(dict.fromkeys(tokens, since_ms or int(time.time() * 1000)))

    def expire_provider_tokens(self) -> None:
        """Every provider token seen so far now answers 403 ``ExpiredProviderToken``."""
        with self._cond:
            self._expired.update(self._jwt_iat)

    # --- request handling (server thread) ------------------------------------------------------
    def _on_request(
        self, conn: _H2Connection, stream_id: int, headers: dict[str, str], body: bytes
    ) -> None:
        fault = self._next_fault()
        if fault is not None and fault.kind != "reply":
            self._record(conn, stream_id, headers, body, 0, fault.kind)
            if fault.kind == "drop":
                conn.abort()
            else:
                conn.goaway(stream_id, h2.errors.ErrorCodes.NO_ERROR, b'{"reason":"Shutdown"}')
            return
        if fault is not None and fault.status != 200:
            status, reason, extra = fault.status, fault.reason, dict(fault.headers)
        else:
            status, reason, extra = *self._check(headers, body), {}
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        answer: dict[str, Any] | None = None if status == 200 else {"reason": reason}
        if reason == "Unregistered" and answer is not None:
            answer["timestamp"] = self._dead.get(headers.get(":path", "").rsplit("/", 1)[-1], 0)
        payload = orjson.dumps(answer) if answer is not None else b""
        reply_headers = [("apns-id", apns_id), *extra.items()]
        if payload:
            reply_headers.append(("content-type", "application/json"))
        self._record(conn, stream_id, headers, body, status, reason)
        if self.delay_seconds > 0:
            conn.pending += 1

            def later() -> None:
                conn.pending -= 1
                conn.respond(stream_id, status, reply_headers, payload)

            asyncio.get_running_loop().call_later(self.delay_seconds, later)
        else:
            conn.respond(stream_id, status, reply_headers, payload)

    def _check(self, headers: dict[str, str], body: bytes) -> tuple[int, str | None]:
        """APNs' validation, in its order; (200, None) when the push is accepted."""
        path = headers.get(":path", "")
        if headers.get(":method") != "POST":
            return 405, "MethodNotAllowed"
        if not path.startswith("/3/device/"):
            return 404, "BadPath"
        auth_error = self._check_provider_token(headers.get("authorization", ""))
        if auth_error is not None:
            return auth_error
        topic = headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic"
        if topic != self.topic:
            return 400, "TopicDisallowed"
        if headers.get("apns-push-type", "alert") not in PUSH_TYPES:
            return 400, "InvalidPushType"
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return 400, "BadPriority"
        if not headers.get("apns-expiration", "0").isdigit():
            return 400, "BadExpirationDate"
        if "apns-id" in headers and not _is_uuid(headers["apns-id"]):
            return 400, "BadMessageId"
        token = path.removeprefix("/3/device/")
        if not token:
            return 400, "MissingDeviceToken"
        if (
            len(token) % 2
            or len(token) < 64
            or any(c not in "0123456789abcdefABCDEF" for c in token)
        ):
            return 400, "BadDeviceToken"
        if token in self._dead:
            return 410, "Unregistered"
        if not body:
            return 400, "PayloadEmpty"
        if len(body) > self.MAX_PAYLOAD_BYTES:
            return 413, "PayloadTooLarge"
        return 200, None

    def _check_provider_token(self, authorization: str) -> tuple[int, str] | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return 403, "MissingProviderToken"
        with self._cond:
            iat = self._jwt_iat.get(token)
            expired = token in self._expired
        if iat is None:
            try:
                key_id = jwt.get_unverified_header(token).get("kid", "")
                key = self._keys.get(key_id)
                if key is None:
                    return 403, "InvalidProviderToken"
                claims = jwt.decode(token, key, algorithms=["ES256"], options={"verify_iat": False})
                iat = int(claims["iat"])
                if claims.get("iss") != self.team_id:
                    return 403, "InvalidProviderToken"
            except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
                return 403, "InvalidProviderToken"
            with self._cond:
                newest = self._latest_iat.get(key_id)
                if newest is not None and 0 < iat - newest < self.MIN_TOKEN_RENEWAL_S:
                    return 429, "TooManyProviderTokenUpdates"
                self._latest_iat[key_id] = max(iat, newest or iat)
                self._jwt_iat[token] = iat
        if expired or time.time() - iat > self.TOKEN_MAX_AGE_S:
            return 403, "ExpiredProviderToken"
        return None

    def _record(
        self,
        conn: _H2Connection,
        stream_id: int,
        headers: dict[str, str],
        body: bytes,
        status: int,
        reason: str | None,
    ) -> None:
        entry = ApnsRequest(
            headers.get(":path", ""), headers, body, status, reason, conn.number, stream_id
        )
        self._store(entry, status == 200)

    # --- server (background thread) ----------------------------------------------------------
    def _make_tls(self, folder: Path) -> ssl.SSLContext:
        """A self-signed certificate for localhost/127.0.0.1, and a server context (ALPN h2)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = dt.datetime.now(dt.UTC)
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = x509.CertificateBuilder(
            name,
            name,
            key.public_key(),
            x509.random_serial_number(),
            now - dt.timedelta(minutes=5),
            now + dt.timedelta(days=2),
        )
        cert = (
            builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / "key.pem").write_bytes(
            key.private_bytes(*_PEM_PKCS8, serialization.NoEncryption())
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        context.set_alpn_protocols(["h2"])
        return context

    def _prepare(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="apns-api-")
        self._server_ssl = self._make_tls(Path(self._tmp.name))

    def _release(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def _listen(self) -> Shutdown:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            self._new_connection, self.host, self.port, ssl=self._server_ssl
        )
        self.port = int(server.sockets[0].getsockname()[1])

        async def shutdown() -> None:
            server.close()
            for connection in list(self._live):
                connection.abort()
            await asyncio.sleep(0)  # let the aborts run

        return shutdown

    def _new_connection(self) -> _H2Connection:
        with self._cond:
            self.connections += 1
            return _H2Connection(self, self.connections)


_DEFAULT_REASONS = {
    400: "BadDeviceToken",
    403: "InvalidProviderToken",
    404: "BadPath",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36
