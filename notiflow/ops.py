"""Per-process operations endpoint: ``/metrics`` (Prometheus) and ``/healthz`` (JSON)."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

logger = logging.getLogger(__name__)

_started_at = time.time()
_info: dict[str, object] = {}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            body, ctype, status = generate_latest(REGISTRY), CONTENT_TYPE_LATEST, 200
        elif self.path.startswith("/healthz"):
            info = {"status": "ok", "uptime_s": round(time.time() - _started_at, 1), **_info}
            body, ctype, status = orjson.dumps(info), "application/json", 200
        else:
            body, ctype, status = b"not found\n", "text/plain", 404
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet access log
        return


def serve_ops(host: str, port: int, **info: object) -> ThreadingHTTPServer | None:
    """Start the endpoint in a daemon thread; ``port`` 0 disables it. Returns the server."""
    if port == 0:
        return None
    _info.update(info)
    try:
        server = ThreadingHTTPServer((host, port), _Handler)
    except OSError as error:
        logger.error("ops endpoint not started", extra={"port": port, "error": str(error)})
        return None
    threading.Thread(target=server.serve_forever, name="ops-http", daemon=True).start()
    logger.info("ops endpoint listening", extra={"url": f"http://{host}:{port}/metrics"})
    return server


def read_metric(port: int, name: str, host: str = "127.0.0.1") -> float:
    """Value of an unlabelled metric from a process's ``/metrics`` (0 when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0
