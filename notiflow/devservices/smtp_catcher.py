"""A real SMTP server that keeps what it receives: the local stand-in for an email provider.

Wraps ``aiosmtpd``'s threaded ``Controller`` (its own event loop in a background thread), so
it serves blocking and asyncio clients alike. Used by tests (fault injection, connection
counting) and by the ``make run`` demo. Everything is kept in memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import functools
import ipaddress
import logging
import ssl
import tempfile
import threading
import warnings
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from notiflow.netutil import free_port

__all__ = ["CaughtMessage", "SmtpCatcher"]

log = logging.getLogger(__name__)


# aiosmtpd warns about a deprecated attribute that it sets itself, and about AUTH without TLS
# (deliberate on a loopback test server): drop both.
_NOISE = ("Session.login_data is deprecated", "auth_required == True but auth_require_tls")
logging.getLogger("mail.log").addFilter(lambda record: not record.getMessage().startswith(_NOISE))

Command = Literal["rcpt", "data"]


@dataclass(frozen=True)
class CaughtMessage:
    """One accepted message: the SMTP envelope, the raw bytes and (lazily) the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    @functools.cached_property
    def message(self) -> EmailMessage:
        """Parsed on first access, so receiving stays cheap. UTF-8 headers (SMTPUTF8) decoded."""
        try:
            text = self.raw.decode()
        except UnicodeDecodeError:  # some other 8-bit content: keep the bytes parser's view
            parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        else:
            parsed = email.message_from_string(text, policy=email.policy.default)
        return cast(EmailMessage, parsed)


class _TrackingSMTP(SMTP):
    """aiosmtpd's SMTP protocol, reporting live connections to its catcher."""

    def __init__(self, catcher: SmtpCatcher, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._catcher = catcher
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # called again after STARTTLS: a set keeps it once
        self._catcher._live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._catcher._live.discard(self)
        super().connection_lost(error)


class SmtpCatcher:
    """An SMTP server on loopback that stores messages and can be told to misbehave.

    ``username``/``password`` turn on required AUTH (PLAIN/LOGIN); ``tls=True`` offers
    STARTTLS with a self-signed certificate made at start-up (clients must not validate it).
    PIPELINING (RFC 2920) is offered unless ``pipelining=False``: aiosmtpd reads commands
    in order from its stream, so pipelined ones are answered in order.
    """

    START_TIMEOUT_S = 5.0
    STOP_TIMEOUT_S = 5.0
    BIND_ATTEMPTS = 3
    HOSTNAME = "catcher.notiflow.local"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        idle_timeout: float = 300.0,
        pipelining: bool = True,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.host, self.port, self._requested_port = host, port or 0, port
        self.username, self.password = username, password
        self.tls, self.idle_timeout, self.pipelining = tls, idle_timeout, pipelining
        self._controller: Controller | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._cond = threading.Condition()
        self._messages: list[CaughtMessage] = []
        self._connections = 0
        self._failures: dict[Command, deque[str]] = {"rcpt": deque(), "data": deque()}
        self._refused: dict[str, str] = {}
        self._live: set[_TrackingSMTP] = set()  # touched only on the server loop thread

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> SmtpCatcher:
        """Bind and serve; returns when the server answers (bounded by START_TIMEOUT_S)."""
        if self._controller is not None:
            return self
        tls_context = self._make_tls_context() if self.tls else None
        attempts = 1 if self._requested_port else self.BIND_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self.port = self._requested_port or free_port(self.host)
            controller = Controller(
                self,
                hostname=self.host,
                port=self.port,
                ready_timeout=self.START_TIMEOUT_S,
                server_hostname=self.HOSTNAME,
                tls_context=tls_context,
                require_starttls=False,
                auth_required=self.username is not None,
                auth_require_tls=bool(tls_context),
                authenticator=self._authenticate if self.username is not None else None,
                timeout=self.idle_timeout,
            )
            controller.factory = lambda c=controller: self._make_protocol(c)  # type: ignore[method-assign]
            try:
                controller.start()
            except OSError:
                if attempt == attempts:
                    raise
                log.debug("smtp catcher: port %s taken, retrying", self.port)
                continue
            self._controller = controller
            break
        log.info("smtp catcher listening on %s:%s", self.host, self.port)
        return self

    def stop(self) -> None:
        """Close client connections, stop the server thread (bounded by STOP_TIMEOUT_S)."""
        controller, self._controller = self._controller, None
        if controller is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_live(abort=True), controller.loop).result(
                self.STOP_TIMEOUT_S
            )
        except Exception:  # a dead loop must not prevent stopping the thread
            log.debug("smtp catcher: closing connections failed", exc_info=True)
        stopper = threading.Thread(target=controller.stop, name="smtp-catcher-stop", daemon=True)
        stopper.start()
        stopper.join(self.STOP_TIMEOUT_S)
        if stopper.is_alive():
            log.warning("smtp catcher on port %s did not stop in time", self.port)
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> SmtpCatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what was received ---------------------------------------------------------------
    @property
    def messages(self) -> list[CaughtMessage]:
        with self._cond:
            return list(self._messages)

    @property
    def count(self) -> int:
        with self._cond:
            return len(self._messages)

    @property
    def connections(self) -> int:
        """SMTP sessions opened so far (counted at their first HELO/EHLO)."""
        with self._cond:
            return self._connections

    def wait_for(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` messages arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._messages) >= n, timeout)

    def clear(self) -> None:
        """Forget messages, connection counts and pending faults."""
        with self._cond:
            self._messages.clear()
            self._connections = 0
            self._refused.clear()
            for queue in self._failures.values():
                queue.clear()

    # --- fault injection -----------------------------------------------------------------
    def fail_next(
        self,
        n: int = 1,
        code: int = 451,
        message: str = "Requested action aborted: local error in processing",
        *,
        command: Command = "rcpt",
    ) -> None:
        """Make the next ``n`` RCPT (or DATA) commands fail with ``code message``."""
        if not 400 <= code <= 599:
            raise ValueError(f"SMTP failure codes are 4xx or 5xx, got {code}")
        with self._cond:
            self._failures[command].extend([f"{code} {message}"] * n)

    def refuse(self, address: str, code: int = 550, message: str = "Mailbox unavailable") -> None:
        """Always refuse RCPT for ``address`` with ``code message``."""
        with self._cond:
            self._refused[address.lower()] = f"{code} {message}"

    def drop_connections(self, timeout: float = 2.0) -> int:
        """Close every open client connection from the server side; returns how many."""
        if self._controller is None:
            return 0
        return asyncio.run_coroutine_threadsafe(self._close_live(), self._controller.loop).result(
            timeout
        )

    # --- aiosmtpd handler hooks (server loop thread) -------------------------------------
    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, host: str
    ) -> str:
        self._count_connection(server)
        session.host_name = host
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, host: str, responses: list[str]
    ) -> list[str]:
        self._count_connection(server)
        session.host_name = host
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")  # before "250 HELP"
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self._take_failure("rcpt", address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self._take_failure("data", None)
        if refusal:
            return refusal
        raw = envelope.original_content or b""
        caught = CaughtMessage(envelope.mail_from or "", tuple(envelope.rcpt_tos), raw)
        with self._cond:
            self._messages.append(caught)
            self._cond.notify_all()
        return "250 Message accepted for delivery"

    # --- internals (server loop thread) --------------------------------------------------
    def _count_connection(self, server: SMTP) -> None:
        if isinstance(server, _TrackingSMTP) and not server.counted:
            server.counted = True
            with self._cond:
                self._connections += 1

    def _take_failure(self, command: Command, address: str | None) -> str | None:
        with self._cond:
            if address is not None and address.lower() in self._refused:
                return self._refused[address.lower()]
            queue = self._failures[command]
            return queue.popleft() if queue else None

    async def _close_live(self, abort: bool = False) -> int:
        live = [smtp for smtp in self._live if smtp.transport is not None]
        for smtp in live:
            transport = smtp.transport
            if transport is not None:
                # abort() also tears down the socket under a TLS session right away.
                transport.abort() if abort else transport.close()  # type: ignore[attr-defined]
        for _ in range(3):  # let connection_lost callbacks run
            await asyncio.sleep(0)
        return len(live)

    def _make_protocol(self, controller: Controller) -> _TrackingSMTP:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return _TrackingSMTP(self, controller.handler, **controller.SMTP_kwargs)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        )
        return AuthResult(success=ok, handled=False)

    def _make_tls_context(self) -> ssl.SSLContext:
        """A server context with a fresh self-signed certificate (EC P-256, valid one day)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
        try:
            names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(self.host))]
        except ValueError:
            names = [x509.DNSName(self.host)]
        now = dt.datetime.now(dt.UTC)
        builder = x509.CertificateBuilder(
            issuer_name=name,
            subject_name=name,
            public_key=key.public_key(),
            serial_number=x509.random_serial_number(),
            not_valid_before=now - dt.timedelta(minutes=5),
            not_valid_after=now + dt.timedelta(days=1),
        ).add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), *names]), False)
        pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        pem += key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._tempdir = tempfile.TemporaryDirectory(prefix="notiflow-smtp-tls-")
        bundle = Path(self._tempdir.name) / "server.pem"  # certificate + key in one file
        bundle.write_bytes(pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(bundle)
        return context
