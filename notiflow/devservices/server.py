"""The base of the HTTP provider stand-ins: a server on its own event loop in a daemon thread.

``LoopbackServer`` binds a loopback port (0: the OS picks a free one), starts and stops in
bounded time, is a context manager, records each request (``received``, ``count``,
``wait_for``, ``clear``) and keeps a queue of scripted faults for the request handler to take
from. It is protocol-neutral: the APNs stand-in serves HTTP/2 + TLS on it.

``AiohttpServer`` adds what every HTTP/1.1 stand-in shares: an ``aiohttp.web`` app routing
every path to ``_handle``, ``Reply`` as the scripted answer, ``drop_next`` and ``respond``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import ClassVar, Generic, NoReturn, Self, TypeVar

from aiohttp import web

__all__ = [
    "AiohttpServer",
    "LoopbackServer",
    "Reply",
    "Shutdown",
    "abort",
    "basic_auth",
    "retry_after_value",
]

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
FaultT = TypeVar("FaultT")
#: What ``_listen`` returns: closes the listener, on the server's loop.
Shutdown = Callable[[], Awaitable[None]]


def retry_after_value(retry_after: str | float) -> str:
    """A ``Retry-After`` header value: text as given, seconds without trailing zeros."""
    return retry_after if isinstance(retry_after, str) else f"{retry_after:g}"


def basic_auth(header: str) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic ...`` header, or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None
    return (user, password) if sep else None


class LoopbackServer(Generic[RequestT, FaultT]):
    """Serves in a background thread; records ``RequestT`` entries, scripts ``FaultT`` faults.

    Subclasses implement ``_listen`` (bind, set ``self.port``, return the shutdown coroutine)
    and call ``_next_fault`` and ``_store`` from their handler, on the server thread.
    """

    START_TIMEOUT_S: ClassVar[float] = 5.0
    STOP_TIMEOUT_S: ClassVar[float] = 5.0
    NAME: ClassVar[str] = "loopback-server"
    SCHEME: ClassVar[str] = "http"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, delay_seconds: float = 0.0
    ) -> None:
        self.host, self.port, self.delay_seconds = host, port, delay_seconds
        self._cond = threading.Condition()
        self._received: list[RequestT] = []
        self._accepted = 0
        self._script: deque[FaultT] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> Self:
        """Serve in a background thread; returns once listening (bounded by START_TIMEOUT_S)."""
        if self._thread is not None:
            return self
        try:
            self._prepare()
            self._loop, ready = asyncio.new_event_loop(), Future[None]()
            self._thread = threading.Thread(
                target=self._run, args=(self._loop, ready), name=self.NAME, daemon=True
            )
            self._thread.start()
            ready.result(self.START_TIMEOUT_S)
        except TimeoutError as error:
            self.stop()
            raise TimeoutError(f"{self.NAME} did not start in {self.START_TIMEOUT_S}s") from error
        except BaseException:
            self.stop()
            raise
        log.info("%s listening on %s", self.NAME, self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (bounded by STOP_TIMEOUT_S)."""
        thread, loop, self._thread = self._thread, self._loop, None
        if thread is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop may have closed already
                loop.call_soon_threadsafe(loop.stop)
            thread.join(self.STOP_TIMEOUT_S)
            if thread.is_alive():
                log.warning("%s on port %s did not stop in time", self.NAME, self.port)
        self._release()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"{self.SCHEME}://{self.host}:{self.port}"

    def url(self, path: str = "") -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # --- what was received ---------------------------------------------------------------
    @property
    def received(self) -> list[RequestT]:
        with self._cond:
            return list(self._received)

    @property
    def count(self) -> int:
        """Requests accepted (what "accepted" means is the subclass's: see its docstring)."""
        with self._cond:
            return self._accepted

    def wait_for(self, n: int, timeout: float) -> bool:
        """Block until ``count >= n``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._accepted >= n, timeout)

    def clear(self) -> None:
        """Forget recorded requests and scripted faults."""
        with self._cond:
            self._received.clear()
            self._accepted = 0
            self._script.clear()

    # --- for subclasses ------------------------------------------------------------------
    def _push(self, fault: FaultT, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests."""
        with self._cond:
            self._script.extend([fault] * times)

    def _next_fault(self) -> FaultT | None:
        with self._cond:
            return self._script.popleft() if self._script else None

    def _store(self, entry: RequestT, accepted: bool) -> None:
        """Record one request and wake ``wait_for``."""
        with self._cond:
            self._received.append(entry)
            self._accepted += accepted
            self._cond.notify_all()

    def _prepare(self) -> None:
        """Hook, before the thread starts (e.g. make a TLS certificate)."""

    def _release(self) -> None:
        """Hook, after the thread stopped (or failed to start): free what ``_prepare`` made."""

    async def _listen(self) -> Shutdown:
        """Bind ``host:port`` on the running loop, set ``self.port``; return the shutdown."""
        raise NotImplementedError

    # --- server (background thread) ------------------------------------------------------
    def _run(self, loop: asyncio.AbstractEventLoop, ready: Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            shutdown = loop.run_until_complete(self._listen())
        except BaseException as error:
            ready.set_exception(error)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
            loop.run_until_complete(shutdown())
            pending = asyncio.all_tasks(loop)  # handlers still sleeping (scripted latency)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()


@dataclass(frozen=True, slots=True)
class Reply:
    """What an HTTP stand-in answers to one request.

    ``drop``: close the connection instead; ``normal``: answer as the API would (possibly
    ``delay`` seconds late); ``accepted``: the request created something (a message, a call).
    """

    status: int = 200
    body: bytes = b"{}"
    headers: Mapping[str, str] = field(default_factory=dict)
    accepted: bool = False
    drop: bool = False
    delay: float = 0.0
    normal: bool = False


def abort(request: web.Request) -> NoReturn:
    """Close the client's connection without an answer."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError  # aiohttp: no response on an aborted connection


class AiohttpServer(LoopbackServer[RequestT, Reply]):
    """An ``aiohttp.web`` app that sends every request to ``_handle``."""

    SHUTDOWN_GRACE_S: ClassVar[float] = 1.0
    #: Largest request body accepted (aiohttp's default).
    CLIENT_MAX_SIZE: ClassVar[int] = 1024**2
    DROP: ClassVar[Reply] = Reply(0, b"", drop=True)

    def drop_next(self, times: int = 1) -> None:
        """Close the connection without answering the next ``times`` requests."""
        self._push(self.DROP, times)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    @staticmethod
    def respond(reply: Reply, content_type: str | None = "application/json") -> web.Response:
        """``reply`` as a response; ``content_type`` unless ``reply.headers`` set one."""
        headers = {"Content-Type": content_type, **reply.headers} if content_type else reply.headers
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    async def _listen(self) -> Shutdown:
        app = web.Application(client_max_size=self.CLIENT_MAX_SIZE)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.SHUTDOWN_GRACE_S, handle_signals=False
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        return runner.cleanup
