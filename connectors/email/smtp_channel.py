"""One SMTP connection after set-up, with its transactions pipelined when the server allows.

``aiosmtplib`` opens the connection (TLS, EHLO, STARTTLS, AUTH); the ``Channel`` then takes
over its transport. Every reply is parsed in the order it arrives, however many come in one
read, so when the server offers PIPELINING (RFC 2920) MAIL, RCPT and DATA go out in one write
and the message in a second: two round trips and two wake-ups per message instead of four.
Without PIPELINING each command waits for its reply, as before. Errors are ``aiosmtplib``'s
exception types, so the connector classifies both paths the same way.
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.response import SMTPResponse

__all__ = ["Channel"]

MAX_LINE = 8192  # bytes in one reply line (RFC 5321 says 512; be lenient)
_CRLF = (b"\r", b"\n")


class Channel(asyncio.Protocol):
    """A connected, greeted and authenticated SMTP connection, taken over from ``client``."""

    def __init__(self, client: aiosmtplib.SMTP, timeout: float) -> None:
        if client.transport is None:
            raise aiosmtplib.SMTPServerDisconnected("not connected")
        self.pipelining = client.supports_extension("pipelining")
        self.size = client.supports_extension("size")
        self.smtputf8 = client.supports_extension("smtputf8")
        self.timeout = timeout
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # the lines of a multi-line reply so far
        self._replies: deque[SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: Exception | None = None
        self.transport: asyncio.Transport = client.transport  # type: ignore[assignment]
        self.transport.set_protocol(self)

    # --- transactions ----------------------------------------------------------------------
    async def envelope(self, sender: bytes, recipient: str, size: int, utf8: bool) -> None:
        """MAIL, RCPT and DATA (354 expected); raises the refusal of the first that failed."""
        options = b" SIZE=%d" % size if self.size else b""
        if utf8:
            if not self.smtputf8:
                raise aiosmtplib.SMTPNotSupported("non-ASCII address but no SMTPUTF8 support")
            options += b" SMTPUTF8"
        address = recipient.encode()
        if any(c in address for c in _CRLF) or any(c in sender for c in _CRLF):
            raise ValueError("address contains a line break")
        commands = (b"MAIL FROM:<%s>%s\r\n" % (sender, options), b"RCPT TO:<%s>\r\n" % address)
        if self.pipelining:
            self.write(b"".join(commands) + b"DATA\r\n")
            mail, rcpt, data = await self.reply(), await self.reply(), await self.reply()
            if data.code == 354 and (mail.code != 250 or rcpt.code not in (250, 251)):
                # The server would take a message it has no envelope for: never send one.
                self.close()
            _check_mail(mail, sender)
            _check_rcpt(rcpt, recipient)
        else:
            self.write(commands[0])
            _check_mail(await self.reply(), sender)
            self.write(commands[1])
            _check_rcpt(await self.reply(), recipient)
            self.write(b"DATA\r\n")
            data = await self.reply()
        if data.code != 354:
            raise aiosmtplib.SMTPDataError(data.code, data.message)

    async def content(self, raw: bytes) -> str:
        """The message after a 354 (dot-stuffed, CRLF line ends); returns the 250 reply."""
        self.write(PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw)) + b".\r\n")
        reply = await self.reply()
        if reply.code != 250:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply.message

    async def reset(self) -> bool:
        """RSET after a refusal so the connection can be reused; False if it can't."""
        if not self.is_open:
            return False
        try:
            self.write(b"RSET\r\n")
            return (await self.reply()).code == 250
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            return False

    async def quit(self, timeout: float) -> None:
        try:
            if self.is_open:
                self.write(b"QUIT\r\n")
                async with asyncio.timeout(timeout):
                    await self.reply()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            self.close()

    @property
    def is_open(self) -> bool:
        return self._lost is None and not self.transport.is_closing()

    def close(self) -> None:
        if self._lost is None:
            self._lost = aiosmtplib.SMTPServerDisconnected("connection closed")
        self.transport.close()

    # --- I/O -------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.is_open:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.transport.write(data)

    async def reply(self) -> SMTPResponse:
        """The next reply in arrival order (``timeout`` for it to arrive)."""
        while not self._replies:
            if self._lost is not None:
                raise self._lost
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._waiter
            except TimeoutError:
                self.close()  # a late reply would be taken for the next command's
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from None
            finally:
                self._waiter = None
        return self._replies.popleft()

    # --- asyncio.Protocol --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start : end + 1])
            start = end + 1
            self._lines.append(line)
            if line[3:4] != b"-":  # the last line of a reply
                lines, self._lines = self._lines, []
                try:
                    self._replies.append(_parse(lines))
                except aiosmtplib.SMTPResponseException as error:
                    self._lost = error
                    self.transport.close()
                    break
        del buffer[:start]
        if len(buffer) > MAX_LINE:
            self._lost = aiosmtplib.SMTPResponseException(-1, "Response too long")
            self.transport.close()
        self._wake()

    def eof_received(self) -> bool:
        self._lost = self._lost or aiosmtplib.SMTPServerDisconnected("Unexpected EOF received")
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is None:
            reason = f": {exc}" if exc else ""
            self._lost = aiosmtplib.SMTPServerDisconnected(f"Connection lost{reason}")
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _parse(lines: list[bytes]) -> SMTPResponse:
    try:
        code = int(lines[0][:3])
    except ValueError:
        text = lines[0].decode("utf-8", "replace").strip()
        raise aiosmtplib.SMTPResponseException(-1, f"Malformed SMTP response: {text}") from None
    message = b"\n".join(line[4:].strip(b" \t\r\n") for line in lines)
    return SMTPResponse(code, message.decode("utf-8", "surrogateescape"))


def _check_mail(reply: SMTPResponse, sender: bytes) -> None:
    if reply.code != 250:
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender.decode())


def _check_rcpt(reply: SMTPResponse, recipient: str) -> None:
    if reply.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
