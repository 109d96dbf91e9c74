"""ClickHouse's HTTP interface in front of embedded chDB: a stand-in server for tests only.

Not a ClickHouse server and nothing to deploy: it lets the ``CLICKHOUSE_URL`` path
(clickhouse-connect's HTTP client) be tested on machines that have no ClickHouse server
binary. Every statement runs in a real ClickHouse engine (chDB, the library behind the
embedded backend), so SQL, types, formats and error codes are ClickHouse's own; only the HTTP
layer is written here, after ClickHouse's HTTP interface:

- ``GET /ping`` and ``GET /`` answer ``Ok.``. The statement comes from the ``query``
  parameter, the body, or both (parameter, newline, body), or multipart form fields.
- One user, checked (Basic auth, ``X-ClickHouse-User``/``-Key`` or ``user``/``password``);
  a mismatch is 403 with code 516 (AUTHENTICATION_FAILED), as from a server.
- ``database``, ``default_format`` (or the ``X-ClickHouse-Format`` header), ``param_<name>``
  bound parameters, ``query_id``; every other parameter is a ClickHouse setting for that
  request only (an unknown one fails with UNKNOWN_SETTING, as on a server).
- ``session_id`` (``session_timeout``, ``session_check``): one chDB connection per session, so
  ``SET`` and ``USE`` persist; concurrent use is 373 SESSION_IS_LOCKED. Without a session each
  request has a fresh connection.
- ``INSERT ... FORMAT <fmt>`` then data in any input format (e.g. Native, Arrow), the body
  fixed-length or chunked, plain or ``Content-Encoding`` gzip, deflate, zstd, lz4 (br with
  brotli installed).
- Responses compressed when ``enable_http_compression=1`` and ``Accept-Encoding`` allow;
  headers ``X-ClickHouse-Query-Id``, ``-Format`` (on result sets), ``-Timezone``,
  ``-Summary``; errors with the status ClickHouse's ``exceptionCodeToHTTPStatus`` gives,
  ``X-ClickHouse-Exception-Code`` and a ``Code: N. DB::Exception: ...`` body.

Not implemented: ClickHouse's compressed block format (``compress``/``decompress=1``,
rejected with NOT_IMPLEMENTED), external tables (multipart files, rejected), block info in
Native output for ``client_protocol_version`` (so clients use protocol 0), progress headers and
streamed results (each result is buffered whole), read-only GET, ``KILL QUERY``, TLS, roles,
quotas, more than one user, and the server-only system tables and cluster features chDB lacks.

It runs as a child process (``python -m notiflow.devservices.clickhouse_http``): one process
hosts one chDB engine, so a test process can keep its own embedded chDB beside it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import email.policy
import gzip
import hmac
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from notiflow.devservices.child import ChildProcessServer
from notiflow.devservices.clickhouse_http_engine import ClickHouseError, Engine, Request

__all__ = ["ClickHouseHttpServer"]

log = logging.getLogger(__name__)

PASSWORD_ENV = "NOTIFLOW_CH_HTTP_PASSWORD"
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
}
_BINARY_FORMATS = frozenset(("Native", "RowBinary", "Arrow", "ArrowStream", "Parquet", "ORC"))


def _codecs() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    """``{content-encoding: (compress, decompress)}`` for what is importable here."""
    codecs = {"gzip": (gzip.compress, gzip.decompress), "deflate": (zlib.compress, zlib.decompress)}
    with contextlib.suppress(ImportError):
        from backports import zstd  # clickhouse-connect's own dependency, as is lz4

        codecs["zstd"] = (zstd.compress, zstd.decompress)
    with contextlib.suppress(ImportError):
        import lz4.frame

        codecs["lz4"] = (lz4.frame.compress, lz4.frame.decompress)
    with contextlib.suppress(ImportError):
        import brotli

        codecs["br"] = (brotli.compress, brotli.decompress)
    return codecs


CODECS = _codecs()
#: Response encodings in the order ClickHouse prefers them.
_RESPONSE_ENCODINGS = ("gzip", "deflate", "zstd", "br", "lz4")


class _Handler(BaseHTTPRequestHandler):
    """The HTTP side: parse a ClickHouse HTTP request, run it, answer as ClickHouse does."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path == "/ping" or (url.path == "/" and self.command == "GET" and not params):
            self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            body = self._body()  # read first: the connection is kept alive
            if url.path != "/":
                message = f"DB::Exception: There is no handle {url.path}."
                raise ClickHouseError(48, "NOT_IMPLEMENTED", message)
            params.update(self._form(body))
            if "multipart/form-data" in self.headers.get("Content-Type", ""):
                body = b""
            self._authenticate(params)
            default_format = self.headers.get("X-ClickHouse-Format", "TabSeparated")
            request = Request.from_params(params, body, default_format)
            outcome = self.server.engine.execute(request)
        except ClickHouseError as error:
            self._error(error, query_id)
            return
        except Exception as error:  # a bug here: answer like a server would, and log it
            log.exception("clickhouse_http: request failed")
            self._error(ClickHouseError(1001, "STD_EXCEPTION", str(error)), query_id)
            return
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Summary": json.dumps(outcome.summary),
            "Content-Type": "text/plain; charset=UTF-8",
        }
        if outcome.format is not None:
            headers["X-ClickHouse-Format"] = outcome.format
            headers["Content-Type"] = _CONTENT_TYPES.get(outcome.format) or (
                "application/octet-stream"
                if outcome.format in _BINARY_FORMATS
                else "text/plain; charset=UTF-8"
            )
        body = outcome.body
        accepted = self.headers.get("Accept-Encoding", "")
        if params.get("enable_http_compression") == "1" and accepted:
            encoding = next((e for e in _RESPONSE_ENCODINGS if e in accepted and e in CODECS), None)
            if encoding:
                body, headers["Content-Encoding"] = CODECS[encoding][0](body), encoding
        self._send(200, body, headers)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers, up to the blank line
                pass
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "identity").lower()
        if encoding == "identity" or not body:
            return body
        if encoding not in CODECS:
            message = f"DB::Exception: Unknown Content-Encoding {encoding}."
            raise ClickHouseError(48, "NOT_IMPLEMENTED", message)
        return CODECS[encoding][1](body)

    def _form(self, body: bytes) -> dict[str, str]:
        """Fields of a multipart/form-data body (the query and bound parameters)."""
        content_type = self.headers.get("Content-Type", "")
        if "multipart/form-data" not in content_type:
            return {}
        parser = email.parser.BytesParser(policy=email.policy.HTTP)
        message = parser.parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields = {}
        for part in message.iter_parts():
            if part.get_filename():
                message = "DB::Exception: external tables are not supported."
                raise ClickHouseError(48, "NOT_IMPLEMENTED", message)
            payload = part.get_payload(decode=True)
            fields[part.get_param("name", header="content-disposition")] = payload.decode()
        return fields

    def _authenticate(self, params: dict[str, str]) -> None:
        user = self.headers.get("X-ClickHouse-User") or params.get("user") or "default"
        password = self.headers.get("X-ClickHouse-Key") or params.get("password") or ""
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
        expected = f"{self.server.user}:{self.server.password}".encode()
        if not hmac.compare_digest(f"{user}:{password}".encode(), expected):
            message = (
                f"DB::Exception: {user}: Authentication failed: password is incorrect, "
                "or there is no user with such name."
            )
            raise ClickHouseError(516, "AUTHENTICATION_FAILED", message)

    def _error(self, error: ClickHouseError, query_id: str) -> None:
        headers = {
            "X-ClickHouse-Exception-Code": str(error.code),
            "X-ClickHouse-Query-Id": query_id,
            "Content-Type": "text/plain; charset=UTF-8",
        }
        body = error.text(self.server.engine.version).encode()
        self._send(error.http_status, body, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("X-ClickHouse-Server-Display-Name", "notiflow-clickhouse-http")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Keep-Alive", "timeout=10")
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: Engine, user: str, password: str) -> None:
        super().__init__(address, _Handler)
        self.engine, self.user, self.password = engine, user, password


def serve(host: str, port: int, data_dir: Path, user: str, password: str) -> None:
    """Serve until SIGTERM/SIGINT (the child process's main loop)."""
    (data_dir / "spool").mkdir(parents=True, exist_ok=True)
    engine = Engine(str(data_dir / "clickhouse"), str(data_dir / "spool"))
    try:
        server = _Server((host, port), engine, user, password)
    except OSError:
        engine.close()
        raise
    stop = lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        engine.close()


class ClickHouseHttpServer(ChildProcessServer):
    """The stand-in as a child process on a free loopback port; ``url`` is its DSN.

    ``data_dir`` keeps the data (e.g. across a restart); default: a temporary directory
    removed on stop.
    """

    NAME = "clickhouse-http"
    LOG_FILE = "server.log"
    START_TIMEOUT_S = 30.0
    STOP_TIMEOUT_S = 10.0
    POLL_S = 0.05

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        user: str = "notiflow",
        password: str = "notiflow",
        data_dir: Path | None = None,
    ) -> None:
        super().__init__(host, port, data_dir)
        self.user, self.password = user, password

    @property
    def url(self) -> str:
        """``http://user:password@host:port`` (for ``CLICKHOUSE_URL``)."""
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"http://{credentials}@{self.host}:{self.port}"

    def ping(self, timeout: float = 1.0) -> bool:
        """``GET /ping`` answers ``Ok.`` (directly: no proxy from the environment)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().read() == b"Ok.\n"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _spawn(self, data_dir: Path) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", __name__, "--host", self.host, "--port", str(self.port)]
        args += ["--data-dir", str(data_dir), "--user", self.user]
        with open(data_dir / "server.log", "ab") as output:  # a file: no pipe to fill up
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env={**os.environ, PASSWORD_ENV: self.password},
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--user", default="default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    serve(args.host, args.port, args.data_dir, args.user, os.environ.get(PASSWORD_ENV, ""))


if __name__ == "__main__":
    main()
