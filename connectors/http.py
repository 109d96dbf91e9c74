"""Shared by the aiohttp-based connectors: one pooled session each, transport failures in one
vocabulary, and ``Retry-After``.

``HttpSession`` owns a connector's aiohttp session (connection limit, total timeout, default
headers). The session is created on the worker's event loop by ``open()`` (or the first
request) and reused until ``close()``; an ``HttpConnector`` opens and closes its ``_http``.
``post`` makes one attempt: a transport failure (timeout, refused connection, reset, malformed
response) is raised as ``RetryableError``; every HTTP status is returned for the connector to
classify by its provider's rules.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Mapping
from typing import NamedTuple

import aiohttp
from yarl import URL

from connectors.base import Connector, RetryableError

__all__ = [
    "TRANSPORT_ERRORS",
    "HttpConnector",
    "HttpResponse",
    "HttpSession",
    "excerpt",
    "parse_retry_after",
    "transport_error",
]

#: Everything an aiohttp request can raise before a response is classified.
TRANSPORT_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)


def transport_error(error: BaseException, timeout: float) -> RetryableError:
    """A timeout, refused connection, reset or malformed response: always retryable."""
    if isinstance(error, TimeoutError | aiohttp.ServerTimeoutError):
        return RetryableError(f"timeout after {timeout}s")
    if isinstance(error, aiohttp.ClientConnectorError):
        return RetryableError(f"connect_error: {error.os_error or error}")
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return RetryableError("server_disconnected")
    if isinstance(error, aiohttp.ClientResponseError):  # malformed status line / headers
        return RetryableError(f"invalid_response: {error.message}", status=error.status)
    return RetryableError(f"transport_error: {type(error).__name__}: {error}")


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def excerpt(raw: bytes, limit: int) -> str:
    """The start of a response body for an error reason: whitespace folded, ``limit`` chars."""
    return " ".join(raw[: limit * 4].decode("utf-8", errors="replace").split())[:limit]


class HttpResponse(NamedTuple):
    """A response, read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpSession:
    """One connector's pooled aiohttp session. Safe to share across tasks on one event loop.

    ``max_connections`` caps open sockets, ``timeout`` bounds each request end to end, and
    ``headers`` go with every request (per-request headers are added to them).
    """

    def __init__(
        self,
        *,
        timeout: float,
        max_connections: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.timeout = timeout
        self.max_connections = max_connections
        self.headers = dict(headers) if headers else None
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> aiohttp.ClientSession:
        """The session; created on the running loop when there is none or it was closed."""
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self.headers,
                raise_for_status=False,
            )
        return session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post(
        self,
        url: str | URL,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        allow_redirects: bool = True,
    ) -> HttpResponse:
        """One POST, read in full; a transport failure raises ``RetryableError``."""
        session = await self.open()
        try:
            async with session.post(
                url, data=body, headers=headers, allow_redirects=allow_redirects
            ) as response:
                return HttpResponse(response.status, response.headers, await response.read())
        except TRANSPORT_ERRORS as error:
            raise transport_error(error, self.timeout) from error


class HttpConnector(Connector):
    """A connector whose network client is one ``HttpSession``, set as ``self._http`` in
    ``__init__``; ``open`` and ``close`` open and close it."""

    _http: HttpSession

    async def open(self) -> None:
        await self._http.open()

    async def close(self) -> None:
        await self._http.close()
