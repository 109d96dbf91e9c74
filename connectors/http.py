"""Shared by the aiohttp-based connectors: transport failures in one vocabulary."""

from __future__ import annotations

import aiohttp

from connectors.base import RetryableError

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
