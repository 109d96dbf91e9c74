"""Plain-client probes shared by the stand-in tests (no notiflow connector involved)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

__all__ = ["port_is_open", "post"]


def port_is_open(port: int) -> bool:
    """Whether something accepts TCP connections on ``127.0.0.1:port``."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def post(
    url: str,
    body: bytes | None = b"{}",
    headers: dict[str, str] | None = None,
    *,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; an HTTP error status is an answer, not raised."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
