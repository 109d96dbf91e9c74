"""Email over SMTP through a small pool of persistent connections.

``aiosmtplib`` opens each connection (TLS, EHLO, STARTTLS, AUTH); transactions then run on a
``Channel`` (``connectors.email.smtp_channel``), which pipelines MAIL/RCPT/DATA when the
server offers PIPELINING (RFC 2920): two round trips per message instead of four. Each send
borrows one connection and gives it back; there is no NOOP before use. A pooled connection
the server closed while idle is noticed before the message is sent (at MAIL, or as a
disconnect while the envelope is answered) and replaced once, transparently. SMTP replies
are classified by code: 4xx (and timeouts, resets) are retryable, 5xx are permanent.

Messages are written by ``connectors.email.mime`` (not the stdlib ``email`` package, ~15x
slower) and MAIL/RCPT go out as raw commands (aiosmtplib's helpers re-parse each address).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import hashlib
import logging
import re
import socket
import ssl
import time
from email.message import EmailMessage
from typing import TYPE_CHECKING, ClassVar, NamedTuple, cast

import aiosmtplib

from connectors.base import (
    Connector,
    ConnectorError,
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.email import mime
from connectors.email.smtp_channel import Channel

if TYPE_CHECKING:
    from notiflow.settings import Settings

__all__ = ["SmtpConnector"]

log = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Rendered(NamedTuple):
    """One delivery as wire bytes, ready for MAIL/RCPT/DATA."""

    raw: bytes
    message_id: str
    recipient: str
    utf8: bool  # non-ASCII envelope address: needs SMTPUTF8


class SmtpConnector(Connector):
    """Send each delivery as one MIME message to one recipient (``delivery.address``)."""

    channel: ClassVar[str] = "email"
    provider: ClassVar[str] = "smtp"

    DEFAULT_POOL_SIZE: ClassVar[int] = 8
    DEFAULT_TIMEOUT_S: ClassVar[float] = 15.0
    QUIT_TIMEOUT_S: ClassVar[float] = 2.0
    #: A reused connection whose MAIL gets one of these is replaced and the envelope retried.
    STALE_CODES: ClassVar[frozenset[int]] = frozenset({421})

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1025,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        use_tls: bool = False,
        validate_certs: bool = True,
        sender: str = "notiflow <noreply@notiflow.local>",
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout: float = DEFAULT_TIMEOUT_S,
        local_hostname: str | None = None,
    ) -> None:
        if starttls and use_tls:
            raise ValueError("starttls and use_tls are mutually exclusive")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if password is not None and username is None:
            raise ValueError("password given without username")
        sender_name, sender_address = email.utils.parseaddr(sender)
        if "@" not in sender_address:
            raise ValueError(f"sender must contain an email address, got {sender!r}")
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.use_tls, self.validate_certs = starttls, use_tls, validate_certs
        self.sender, self.sender_address = sender, sender_address
        self.domain = sender_address.rpartition("@")[2]
        self._sender_ascii = sender_address.isascii()
        self._sender_bytes = sender_address.encode()  # UTF-8 only goes out with SMTPUTF8
        self._from_header = mime.address_header(
            "From", mime.format_address(sender_name, sender_address)
        )
        self._date_second, self._date_value = -1, ""
        self.pool_size, self.timeout = pool_size, timeout
        self.local_hostname = local_hostname
        #: Connections opened over the connector's life (reconnects included).
        self.connections_opened = 0
        #: Pooled connections found closed by the server at MAIL and replaced.
        self.stale_reconnects = 0
        self._idle: list[Channel] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConnector:
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            use_tls=settings.smtp_use_tls,
            validate_certs=settings.smtp_validate_certs,
            sender=settings.smtp_from,
            pool_size=settings.smtp_pool_size,
            timeout=settings.smtp_timeout_seconds,
        )

    async def open(self) -> None:
        """Connections are opened on first use; this only resolves the EHLO name once."""
        self._closed = False
        if self.local_hostname is None:
            self.local_hostname = await asyncio.to_thread(socket.getfqdn)

    async def close(self) -> None:
        """QUIT idle connections; connections in use are closed when they are given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(channel.quit(self.QUIT_TIMEOUT_S) for channel in idle))

    async def send(self, delivery: Delivery) -> SendResult:
        raw, message_id, recipient, utf8 = self.render(delivery)
        async with self._slots:
            channel = self._idle.pop() if self._idle else None
            healthy = False
            try:
                channel = await self._envelope(channel, recipient, len(raw), utf8)
                try:
                    reply = await channel.content(raw)
                except aiosmtplib.SMTPResponseException as error:
                    raise _Refused(channel, error) from error
                healthy = True
            except _Refused as refused:
                channel = refused.channel
                # 421 means the server is closing the channel; otherwise RSET for reuse.
                healthy = refused.error.code != 421 and await channel.reset()
                raise self._translate(refused.error) from refused.error
            except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as error:
                raise self._translate(error) from error
            finally:
                if channel is not None:
                    if healthy and channel.is_open and not self._closed:
                        self._idle.append(channel)
                    else:
                        channel.close()
        return SendResult(provider_message_id=message_id, detail={"smtp_reply": reply})

    def render(self, delivery: Delivery) -> Rendered:
        """The wire bytes sent for ``delivery`` (built by ``connectors.email.mime``)."""
        try:
            name, recipient = mime.parse_address(delivery.address)
        except ValueError as error:
            raise InvalidRequest(f"invalid_address: {error}") from error
        utf8 = not (recipient.isascii() and self._sender_ascii)
        message_id = self._message_id(delivery, recipient)
        try:
            headers = [
                self._from_header,
                mime.address_header("To", mime.format_address(name, recipient)),
                mime.header("Subject", delivery.subject or mime.fallback_subject(delivery.body)),
                f"Message-ID: {message_id}\r\n",
                f"Date: {self._date()}\r\n",
                mime.header("X-Notiflow-Notification-Id", delivery.notification_id),
            ]
            if delivery.category != "transactional":
                url = delivery.metadata.get("unsubscribe_url")
                unsubscribe = mime.unsubscribe_headers(delivery.notification_id, url, self.domain)
                headers.extend(mime.header(k, v) for k, v in unsubscribe.items())
            raw = mime.build_message("".join(headers), delivery.body, delivery.html)
        except (ValueError, TypeError) as error:  # e.g. CR/LF in a header value
            raise InvalidRequest(f"invalid_message: {error}") from error
        return Rendered(raw, message_id, recipient, utf8)

    def build_message(self, delivery: Delivery) -> tuple[EmailMessage, str]:
        """The message ``send`` would transmit, parsed, and its Message-ID (stable across
        retries). For inspection and tests; ``send`` itself never parses."""
        rendered = self.render(delivery)
        parsed = email.message_from_bytes(rendered.raw, policy=email.policy.default)
        return cast(EmailMessage, parsed), rendered.message_id

    # --- internals -----------------------------------------------------------------------
    def _new_client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.starttls,  # False means never upgrade, even when offered
            validate_certs=self.validate_certs,
            timeout=self.timeout,
            local_hostname=self.local_hostname,
        )

    async def _connect(self) -> Channel:
        """A new connection, set up by aiosmtplib (TLS, EHLO, STARTTLS, AUTH)."""
        client = self._new_client()
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
        except BaseException:
            client.close()
            raise
        self.connections_opened += 1
        return Channel(client, self.timeout)

    async def _envelope(
        self, channel: Channel | None, recipient: str, size: int, utf8: bool
    ) -> Channel:
        """MAIL, RCPT, DATA on ``channel`` (or a new connection); returns the channel, now
        waiting for the message. A refusal comes back as ``_Refused`` with the channel."""
        reused = channel is not None and channel.is_open
        if channel is not None and not reused:
            channel.close()  # seen closed while idle: a fresh connection up front
        if channel is None or not reused:
            return await self._try_envelope(await self._connect(), recipient, size, utf8)
        try:
            await channel.envelope(self._sender_bytes, recipient, size, utf8)
            return channel
        except aiosmtplib.SMTPServerDisconnected:
            pass  # stale: closed by the server while pooled
        except aiosmtplib.SMTPResponseException as error:
            stale = isinstance(error, aiosmtplib.SMTPSenderRefused) and (
                error.code in self.STALE_CODES
            )
            if not stale:
                raise _Refused(channel, error) from error
        except BaseException:
            channel.close()
            raise
        log.debug("smtp: pooled connection to %s went stale, reconnecting", self.host)
        self.stale_reconnects += 1
        channel.close()
        return await self._try_envelope(await self._connect(), recipient, size, utf8)

    async def _try_envelope(
        self, channel: Channel, recipient: str, size: int, utf8: bool
    ) -> Channel:
        """The envelope on a new connection: a refusal comes back as ``_Refused``; any other
        failure closes the connection."""
        try:
            await channel.envelope(self._sender_bytes, recipient, size, utf8)
        except aiosmtplib.SMTPResponseException as error:
            raise _Refused(channel, error) from error
        except BaseException:
            channel.close()
            raise
        return channel

    @staticmethod
    def _translate(error: Exception) -> ConnectorError:
        """Errors → RetryableError (4xx, transport) or PermanentError (5xx, setup mismatch)."""
        if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
            error = error.recipients[0]
        if isinstance(error, ssl.SSLCertVerificationError) or isinstance(
            error.__cause__, ssl.SSLCertVerificationError
        ):  # checked first: it is also a ValueError
            return PermanentError(f"tls_verify_failed: {error}")
        if isinstance(error, aiosmtplib.SMTPTimeoutError | TimeoutError):
            return RetryableError(f"smtp_timeout: {error}")
        if isinstance(error, aiosmtplib.SMTPResponseException):
            stage = {
                aiosmtplib.SMTPRecipientRefused: "recipient_refused",
                aiosmtplib.SMTPSenderRefused: "sender_refused",
                aiosmtplib.SMTPDataError: "data_refused",
                aiosmtplib.SMTPAuthenticationError: "auth_failed",
            }.get(type(error), "smtp_error")
            reason = f"{stage}: {error.code} {error.message}".strip()
            if 500 <= error.code < 600:
                return PermanentError(reason, status=error.code)
            return RetryableError(reason, status=error.code if error.code > 0 else None)
        if isinstance(
            error, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError
        ):
            return RetryableError(f"smtp_connection: {type(error).__name__}: {error}")
        if isinstance(error, ValueError):
            return InvalidRequest(f"invalid_address: {error}")
        # SMTPNotSupported or a bare SMTPException: the server lacks STARTTLS/AUTH/SMTPUTF8.
        return PermanentError(f"smtp_unsupported: {error}")

    def _message_id(self, delivery: Delivery, recipient: str) -> str:
        digest = hashlib.sha256(f"{delivery.notification_id}\0{recipient}".encode()).hexdigest()
        nid = delivery.notification_id
        token = f"{nid}.{digest[:12]}" if _SAFE_ID.match(nid) else digest[:32]
        return f"<{token}@{self.domain}>"

    def _date(self) -> str:
        """RFC 5322 date of now (UTC), computed once per second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date_value = email.utils.formatdate(now, usegmt=True)
        return self._date_value

    def __repr__(self) -> str:
        return f"SmtpConnector({self.host}:{self.port}, pool_size={self.pool_size})"


class _Refused(Exception):
    """A refused MAIL, RCPT or DATA, with the connection it happened on (to be reset)."""

    def __init__(self, channel: Channel, error: aiosmtplib.SMTPResponseException) -> None:
        super().__init__(str(error))
        self.channel, self.error = channel, error
