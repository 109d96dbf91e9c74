"""What ClickHouse does with an HTTP request, for the stand-in (``clickhouse_http``), on chDB.

Decodes a request's parameters into a statement, settings and bound parameters; runs it on a
chDB connection (one per session, else one per request; a request's settings are applied with
``SET`` and, in a session, restored afterwards); turns ``INSERT ... FORMAT f`` + data into an
``INSERT ... FROM INFILE`` of the spooled data; renders chDB's errors as a server does, with
ClickHouse's HTTP status per error. Runs in the stand-in's child process; ``clickhouse_http``
says what is and is not implemented.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ClickHouseError", "Engine", "Outcome", "Request"]

DEFAULT_SESSION_TIMEOUT_S = 60.0
#: Request parameters the HTTP layer consumes; never applied as settings.
_TRANSPORT = frozenset(
    (
        *("query", "database", "default_format", "user", "password", "quota_key", "role"),
        *("query_id", "session_id", "session_timeout", "session_check", "compress"),
        *("decompress", "buffer_size", "wait_end_of_query", "client_protocol_version"),
        *("send_progress_in_http_headers", "http_headers_progress_interval_ms"),
        "enable_http_compression",
    )
)
#: HTTP status by error name, from ClickHouse's src/Server/HTTP/exceptionCodeToHTTPStatus.cpp.
_STATUS_TABLE = """
401 REQUIRED_PASSWORD
403 UNKNOWN_USER WRONG_PASSWORD AUTHENTICATION_FAILED SET_NON_GRANTED_ROLE ACCESS_DENIED
400 BAD_ARGUMENTS CANNOT_COMPILE_REGEXP CANNOT_PARSE_TEXT CANNOT_PARSE_ESCAPE_SEQUENCE
400 CANNOT_PARSE_QUOTED_STRING CANNOT_PARSE_DATE CANNOT_PARSE_DATETIME CANNOT_PARSE_NUMBER
400 CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING CANNOT_PARSE_IPV4 CANNOT_PARSE_IPV6 CANNOT_PARSE_UUID
400 CANNOT_PARSE_INPUT_ASSERTION_FAILED DUPLICATE_COLUMN ILLEGAL_COLUMN UNKNOWN_ELEMENT_IN_AST
400 UNKNOWN_TYPE_OF_AST_NODE THERE_IS_NO_COLUMN TOO_DEEP_AST TOO_BIG_AST UNEXPECTED_AST_STRUCTURE
400 SYNTAX_ERROR INCORRECT_DATA TYPE_MISMATCH VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
404 UNKNOWN_TABLE UNKNOWN_FUNCTION UNKNOWN_IDENTIFIER UNKNOWN_TYPE UNKNOWN_STORAGE
404 UNKNOWN_DATABASE UNKNOWN_SETTING UNKNOWN_DIRECTION_OF_SORTING UNKNOWN_AGGREGATE_FUNCTION
404 UNKNOWN_FORMAT UNKNOWN_DATABASE_ENGINE UNKNOWN_TYPE_OF_QUERY UNKNOWN_ROLE
413 QUERY_IS_TOO_LARGE
501 NOT_IMPLEMENTED
503 SOCKET_TIMEOUT CANNOT_OPEN_FILE CANNOT_SCHEDULE_TASK
411 HTTP_LENGTH_REQUIRED
408 TIMEOUT_EXCEEDED
415 UNSUPPORTED_MEDIA_TYPE
"""
_STATUS = {
    name: int(line.split()[0])
    for line in _STATUS_TABLE.strip().splitlines()
    for name in line.split()[1:]
}
_ERROR = re.compile(r"Code: (\d+)\. (.*?)\s*$", re.DOTALL)
_ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?: \(version [^)]*\))?\s*$")
_LEADING_COMMENTS = rb"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*"
_INSERT_DATA = re.compile(
    _LEADING_COMMENTS + rb"INSERT\s+INTO\s+(?P<target>(?:(?!\b(?:VALUES|SELECT|FORMAT)\b).)+?)"
    rb"\s+FORMAT\s+(?P<format>\w+)[ \t]*(?:\r?\n)?",
    re.IGNORECASE | re.DOTALL,
)
_RESULT_SET = re.compile(
    _LEADING_COMMENTS + rb"\(*\s*(?:SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN|CHECK)\b",
    re.IGNORECASE | re.DOTALL,
)
_TRAILING_FORMAT = re.compile(rb"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClickHouseError(Exception):
    """A failed request: ClickHouse's error code, name and message."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name, self.message = code, name, message

    @classmethod
    def from_engine(cls, error: Exception) -> ClickHouseError:
        text = str(error)
        match = _ERROR.search(text)
        if not match:
            return cls(1001, "STD_EXCEPTION", f"DB::Exception: {text}")
        name = _ERROR_NAME.search(text)
        return cls(int(match[1]), name[1] if name else "", match[2])

    @property
    def http_status(self) -> int:
        return _STATUS.get(self.name, 500)

    def text(self, version: str) -> str:
        """The error as a server's response body (``Code: N. DB::Exception: ... (NAME)``)."""
        name = f" ({self.name})" if self.name and f"({self.name})" not in self.message else ""
        text = f"Code: {self.code}. {self.message}{name}"
        return text + ("" if "(version " in text else f" (version {version})") + "\n"


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _setting(name: str) -> str:
    if not _SETTING_NAME.match(name):
        raise ClickHouseError(115, "UNKNOWN_SETTING", f"DB::Exception: Unknown setting {name!r}.")
    return name


@dataclass
class Request:
    """One statement to run, as decoded from the HTTP request."""

    sql: bytes
    database: str | None
    default_format: str
    params: dict[str, str]
    settings: dict[str, str]
    session_id: str | None
    session_timeout: float
    session_check: bool

    @classmethod
    def from_params(cls, params: dict[str, str], body: bytes, default_format: str) -> Request:
        """The statement of an HTTP request: ``query`` parameter, a newline, then the body."""
        for flag in ("compress", "decompress"):
            if params.get(flag) == "1":
                message = (
                    f"DB::Exception: {flag}=1 (ClickHouse's block compression) is unsupported."
                )
                raise ClickHouseError(48, "NOT_IMPLEMENTED", message)
        query = params.get("query", "").encode()
        return cls(
            sql=query + b"\n" + body if query and body else query or body,
            database=params.get("database") or None,
            default_format=params.get("default_format") or default_format,
            params={k[6:]: v for k, v in params.items() if k.startswith("param_")},
            settings={
                k: v
                for k, v in params.items()
                if k not in _TRANSPORT and not k.startswith("param_")
            },
            session_id=params.get("session_id") or None,
            session_timeout=float(params.get("session_timeout") or DEFAULT_SESSION_TIMEOUT_S),
            session_check=params.get("session_check") == "1",
        )


@dataclass
class Outcome:
    """What a statement produced: the body, its format (``None``: no result set), a summary."""

    body: bytes
    format: str | None
    summary: dict[str, str]


class _Session:
    def __init__(self, conn: Any, timeout: float) -> None:
        self.conn, self.timeout = conn, timeout
        self.lock = threading.Lock()
        self.expires = time.monotonic() + timeout


class Engine:
    """chDB behind the HTTP layer: connections, sessions, settings and inserts with data."""

    def __init__(self, path: str, spool: str) -> None:
        import chdb

        self._connect = lambda: chdb.connect(path)
        self._root = self._connect()  # keeps the engine open between requests
        row = self._root.query("SELECT version(), timezone()", "TabSeparated").bytes()
        self.version, self.timezone = row.decode().rstrip("\n").split("\t")
        self._spool = spool
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.conn.close()
        self._root.close()

    def execute(self, request: Request) -> Outcome:
        """Run one request on its session's connection, or on a fresh one without a session."""
        if request.session_id is None:
            conn = self._connect()
            try:
                self._apply(conn, request)
                return self._run(conn, request)
            finally:
                conn.close()
        session = self._session(request)
        if not session.lock.acquire(blocking=False):
            message = f"Session {request.session_id} is locked by a concurrent client."
            raise ClickHouseError(373, "SESSION_IS_LOCKED", f"DB::Exception: {message}")
        try:
            saved = self._snapshot(session.conn, request)
            try:
                self._apply(session.conn, request)
                return self._run(session.conn, request)
            finally:
                self._restore(session.conn, saved)
        finally:
            session.expires = time.monotonic() + session.timeout
            session.lock.release()

    def _session(self, request: Request) -> _Session:
        now = time.monotonic()
        with self._lock:
            for key, old in list(self._sessions.items()):
                if old.expires < now and not old.lock.locked():
                    del self._sessions[key]
                    old.conn.close()
            session = self._sessions.get(request.session_id or "")
            if session is None:
                if request.session_check:
                    message = f"Session {request.session_id} not found"
                    raise ClickHouseError(372, "SESSION_NOT_FOUND", f"DB::Exception: {message}")
                session = _Session(self._connect(), request.session_timeout)
                self._sessions[request.session_id or ""] = session
            session.timeout = request.session_timeout
            return session

    @staticmethod
    def _query(conn: Any, sql: str | bytes, fmt: str = "TabSeparated", **kwargs: Any) -> Any:
        try:
            return conn.query(sql, fmt, **kwargs)
        except Exception as error:
            raise ClickHouseError.from_engine(error) from error

    def _apply(self, conn: Any, request: Request) -> None:
        for name, value in request.settings.items():
            self._query(conn, f"SET {_setting(name)} = {_literal(value)}")
        if request.database:
            self._query(conn, f"USE `{request.database.replace('`', '``')}`")

    def _snapshot(self, conn: Any, request: Request) -> dict[str, Any]:
        """A session's settings and database as they are, so one request's do not stick."""
        saved: dict[str, Any] = {}
        if request.settings:
            names = ", ".join(_literal(_setting(name)) for name in request.settings)
            rows = self._query(
                conn,
                f"SELECT name, value, changed FROM system.settings WHERE name IN ({names})",
                "JSONEachRow",
            )
            saved["settings"] = [json.loads(line) for line in rows.bytes().splitlines()]
        if request.database:
            saved["database"] = self._query(conn, "SELECT currentDatabase()").bytes().strip()
        return saved

    def _restore(self, conn: Any, saved: dict[str, Any]) -> None:
        for row in saved.get("settings", []):
            value = _literal(row["value"]) if row["changed"] else "DEFAULT"
            self._query(conn, f"SET {row['name']} = {value}")
        if "database" in saved:
            self._query(conn, f"USE `{saved['database'].decode().replace('`', '``')}`")

    def _run(self, conn: Any, request: Request) -> Outcome:
        insert = _INSERT_DATA.match(request.sql)
        if insert:
            return self._insert(conn, insert, request.sql[insert.end() :])
        trailing = _TRAILING_FORMAT.search(request.sql)
        fmt = trailing[1].decode() if trailing else request.default_format
        result = self._query(conn, request.sql, fmt, params=request.params)
        is_result = bool(trailing) or bool(_RESULT_SET.match(request.sql))
        summary = {"read_rows": result.rows_read(), "read_bytes": result.bytes_read()}
        return Outcome(result.bytes() or b"", fmt if is_result else None, _summary(result, summary))

    def _insert(self, conn: Any, insert: re.Match[bytes], data: bytes) -> Outcome:
        """``INSERT ... FORMAT f`` + data: the data is spooled to a file read ``FROM INFILE``."""
        target, settings = insert["target"], b""
        parts = re.split(rb"\bSETTINGS\b", target, maxsplit=1, flags=re.IGNORECASE)
        if len(parts) == 2:
            target, settings = parts
        with tempfile.NamedTemporaryFile(dir=self._spool, suffix=".insert") as spool:
            spool.write(data)
            spool.flush()
            sql = (
                f"INSERT INTO {target.decode()} FROM INFILE {_literal(spool.name)}"
                f"{' SETTINGS ' + settings.decode() if settings else ''}"
                f" FORMAT {insert['format'].decode()}"
            )
            result = self._query(conn, sql)
        written = {"written_rows": result.rows_read(), "written_bytes": result.bytes_read()}
        return Outcome(b"", None, _summary(result, written))


def _summary(result: Any, figures: dict[str, int]) -> dict[str, str]:
    summary = dict.fromkeys(
        ("read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read"), "0"
    )
    summary.update({key: str(value) for key, value in figures.items()})
    summary["elapsed_ns"] = str(int(result.elapsed() * 1e9))
    return summary
