"""A real HTTP server that records webhook calls: the local stand-in for a customer endpoint.

An ``aiohttp.web`` app on its own event loop in a background thread, on a loopback port the
OS picks. It checks Standard Webhooks signatures when given the secret, and can be scripted
to fail (status codes, ``Retry-After``, dropped connections, latency) for tests and demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from connectors.webhook.standard import verify

__all__ = ["ReceivedRequest", "WebhookReceiver"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived, and what the receiver answered (0: connection dropped).

    ``json`` and ``signature_valid`` are computed on first access, keeping receiving cheap.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    peer: str = ""  # client "host:port": one value per connection
    secret: str | None = field(default=None, repr=False)
    tolerance_s: float = 300
    received_at: float = field(default_factory=time.time)

    @functools.cached_property
    def json(self) -> Any:
        """The parsed body; None when it is not JSON."""
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None

    @functools.cached_property
    def signature_valid(self) -> bool | None:
        """Standard Webhooks check at receipt time; None when the receiver has no secret."""
        if self.secret is None:
            return None
        return verify(self.secret, self.headers, self.body, self.tolerance_s, now=self.received_at)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False


def _encode_body(body: bytes | str | Mapping[str, Any] | None, status: int) -> bytes:
    if body is None:
        return b'{"ok":true}' if 200 <= status < 300 else orjson.dumps({"error": status})
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return orjson.dumps(body)


class WebhookReceiver:
    """Records every request; answers 200 ``{"ok": true}`` unless scripted otherwise.

    Precedence for each request: ``status_for_path`` rules, then the scripted queue, then 200.
    """

    START_TIMEOUT_S = 5.0
    STOP_TIMEOUT_S = 5.0
    SHUTDOWN_GRACE_S = 1.0

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secret: str | None = None,
        delay_seconds: float = 0.0,
        tolerance_s: float = 300,
    ) -> None:
        self.host = host
        self.port = port
        self.secret = secret
        self.delay_seconds = delay_seconds
        self.tolerance_s = tolerance_s
        self._cond = threading.Condition()
        self._received: list[ReceivedRequest] = []
        self._accepted = 0
        self._script: deque[_Reply] = deque()
        self._path_status: dict[str, _Reply] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._startup_error: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> WebhookReceiver:
        """Serve in a background thread; returns once listening (bounded by START_TIMEOUT_S)."""
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._run, args=(self._loop, ready), name="webhook-receiver", daemon=True
        )
        self._thread.start()
        if not ready.wait(self.START_TIMEOUT_S):
            self.stop()
            raise TimeoutError(f"webhook receiver did not start in {self.START_TIMEOUT_S}s")
        if self._startup_error is not None:
            error = self._startup_error
            self.stop()
            raise error
        log.info("webhook receiver listening on http://%s:%s", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (bounded by STOP_TIMEOUT_S)."""
        thread, loop = self._thread, self._loop
        self._thread = None
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may have closed already
            loop.call_soon_threadsafe(loop.stop)
        thread.join(self.STOP_TIMEOUT_S)
        if thread.is_alive():
            log.warning("webhook receiver on port %s did not stop in time", self.port)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    # --- what was received ---------------------------------------------------------------
    @property
    def received(self) -> list[ReceivedRequest]:
        with self._cond:
            return list(self._received)

    @property
    def count(self) -> int:
        """Requests answered with a 2xx status."""
        with self._cond:
            return self._accepted

    def wait_for(self, n: int, timeout: float) -> bool:
        """Block until ``count >= n``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._accepted >= n, timeout)

    def clear(self) -> None:
        """Forget recorded requests, scripts and path rules."""
        with self._cond:
            self._received.clear()
            self._accepted = 0
            self._script.clear()
            self._path_status.clear()

    # --- fault injection -----------------------------------------------------------------
    def script(self, statuses: Iterable[int]) -> None:
        """Answer the next requests with these statuses, in order (e.g. ``[500, 500, 200]``)."""
        with self._cond:
            self._script.extend(_Reply(status, _encode_body(None, status)) for status in statuses)

    def respond_with(
        self,
        status: int,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with this response."""
        reply = _Reply(status, _encode_body(body, status), dict(headers or {}))
        with self._cond:
            self._script.extend([reply] * times)

    def throttle(self, retry_after: str | float = 1, *, times: int = 1) -> None:
        """Answer the next ``times`` requests with 429 and a ``Retry-After`` header."""
        value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        self.respond_with(429, {"error": "rate_limited"}, {"Retry-After": value}, times=times)

    def drop_next(self, times: int = 1) -> None:
        """Close the connection without answering the next ``times`` requests."""
        with self._cond:
            self._script.extend([_Reply(0, b"", drop=True)] * times)

    def status_for_path(
        self, path: str, status: int, body: bytes | str | Mapping[str, Any] | None = None
    ) -> None:
        """Always answer ``status`` on ``path`` (e.g. ``"/gone"`` → 410)."""
        with self._cond:
            self._path_status["/" + path.lstrip("/")] = _Reply(status, _encode_body(body, status))

    # --- server (background thread) ------------------------------------------------------
    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        runner: web.AppRunner | None = None
        try:
            runner = loop.run_until_complete(self._serve())
        except BaseException as error:
            self._startup_error = error
        ready.set()
        try:
            if runner is not None:
                loop.run_forever()
                loop.run_until_complete(runner.cleanup())
        finally:
            loop.close()

    async def _serve(self) -> web.AppRunner:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.SHUTDOWN_GRACE_S, handle_signals=False
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        return runner

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self._next_reply(request.path)
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
        self._record(request, body, reply.status)
        if reply.drop:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp: no response on an aborted connection
        return web.Response(
            status=reply.status,
            body=reply.body,
            headers={"Content-Type": "application/json", **reply.headers},
        )

    def _next_reply(self, path: str) -> _Reply:
        with self._cond:
            if path in self._path_status:
                return self._path_status[path]
            return self._script.popleft() if self._script else _Reply()

    def _record(self, request: web.Request, body: bytes, status: int) -> None:
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer = f"{peername[0]}:{peername[1]}" if peername else ""
        headers = dict(request.headers)
        entry = ReceivedRequest(
            request.method, request.path, headers, body, status, peer, self.secret, self.tolerance_s
        )
        with self._cond:
            self._received.append(entry)
            if 200 <= status < 300:
                self._accepted += 1
            self._cond.notify_all()
