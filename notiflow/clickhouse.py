"""ClickHouse access: connect (embedded chDB or a server), migrate, retention, insert, count.

One code path for both backends: ``clickhouse_connect.get_client(dsn=...)`` returns the same
client API for ``chdb:///abs/path`` and ``http://user:pass@host:8123/db``. Every statement names
its tables fully qualified with the database passed in, so nothing depends on the DSN's
default database.

An embedded chDB data directory can be open in one process at a time (ClickHouse's
``status`` file lock), and one process can host one chDB path at a time; :func:`connect`
turns the first case into :class:`ClickHouseLocked`.
"""

from __future__ import annotations

import fcntl
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError

from notiflow.settings import Settings
from operators import event_table

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
EVENTS_TABLE = "delivery_events"
ROLLUP_TABLE = "delivery_rollup_1m"
LATE_TABLE = "delivery_late_events"
FAILURES_TABLE = "delivery_failures"
MIGRATIONS_TABLE = "schema_migrations"
#: table -> (which retention applies, its time column). Raw-level tables follow the events
#: retention; the per-minute rollups (small) usually keep longer.
RETENTION_COLUMNS = {
    EVENTS_TABLE: ("events", "requested_at"),
    LATE_TABLE: ("events", "window_start"),
    FAILURES_TABLE: ("events", "day"),
    ROLLUP_TABLE: ("rollups", "window_start"),
}

_MIGRATION_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
_COMMENT = re.compile(r"--[^\n]*")

LOCKED_HINT = (
    "the analytics process holds the embedded ClickHouse; stop `notiflow run` or set CLICKHOUSE_URL"
)

# null_as_default: a null (absent) field takes the column default ('' for strings).
# optimize_on_insert=0: skip deduplicating inside each block (~30% faster); FINAL does it.
INSERT_SETTINGS: dict[str, Any] = {"input_format_null_as_default": 1, "optimize_on_insert": 0}


class ClickHouseLocked(RuntimeError):
    """The embedded chDB data directory is open in another process."""

    def __init__(self, path: str) -> None:
        super().__init__(f"ClickHouse data directory {path} is locked: {LOCKED_HINT}")
        self.path = path


def _chdb_path(dsn: str) -> str | None:
    """The data directory of a ``chdb:///abs/path`` DSN, else ``None``."""
    parsed = urlparse(dsn)
    if parsed.scheme != "chdb" or parsed.netloc:
        return None
    return parsed.path or None


def _without_database(dsn: str) -> str:
    """An ``http(s)`` DSN without its path: a server checks that database on every request,
    the client's first included, so a database not created yet would fail the connect."""
    parsed = urlparse(dsn)
    return urlunparse(parsed._replace(path="")) if parsed.scheme in ("http", "https") else dsn


def _status_file_locked(path: str) -> bool:
    """Whether another open engine holds the ``flock`` on ``<path>/status``."""
    try:
        with open(Path(path) / "status", "rb") as status:
            try:
                fcntl.flock(status, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(status, fcntl.LOCK_UN)
    except FileNotFoundError:
        return False
    return False


def connect(settings: Settings) -> Client:
    """Open a client on ``settings.clickhouse_dsn`` and create ``clickhouse_database``.

    Raises :class:`ClickHouseLocked` when the embedded data directory is held by another
    process. The client's default database is set to ``clickhouse_database`` too.
    """
    dsn = settings.clickhouse_dsn
    path = _chdb_path(dsn)
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
    try:
        client = clickhouse_connect.get_client(dsn=dsn if path else _without_database(dsn))
    except ProgrammingError as exc:
        if path and _status_file_locked(path):
            raise ClickHouseLocked(path) from exc
        raise
    database = settings.clickhouse_database
    try:
        # use_database=False: the client gets its database once it exists.
        client.command(
            f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}", use_database=False
        )
        client.database = database
    except Exception:
        client.close()  # an open chDB handle would keep the engine (and its lock) alive
        raise
    logger.info("clickhouse connected", extra={"backend": "chdb" if path else "server"})
    return client


def _split_statements(sql: str) -> list[str]:
    """Statements of a migration file: separated by ``;`` at line end; comment-only skipped."""
    parts = (part.strip() for part in _STATEMENT_END.split(sql))
    return [part for part in parts if _COMMENT.sub("", part).strip()]


def migration_files(sql_dir: Path = SQL_DIR) -> list[tuple[int, Path]]:
    """``(version, path)`` of every ``NNNN_name.sql`` in ``sql_dir``, in version order."""
    found: dict[int, Path] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"duplicate migration version {version}: {found[version]}, {path}")
        found[version] = path
    return sorted(found.items())


def migrate(
    client: Client,
    database: str,
    sql_dir: Path = SQL_DIR,
    *,
    events_ttl_days: int | None = None,
    rollups_ttl_days: int | None = None,
) -> list[str]:
    """Apply pending migrations in order; return the file names applied (``[]`` if none).

    Statements end with ``;`` at the end of a line; ``{database}`` in the SQL becomes the
    quoted database name (the only substitution). A migration is recorded after all its
    statements ran; write them re-runnable (``IF NOT EXISTS``) so that a crash mid-file is
    recovered by running again. Then retention is applied (:func:`apply_retention`) when
    ``sql_dir`` is the project's own.
    """
    db = quote_identifier(database)
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}", use_database=False)
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE} "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    applied = {
        row[0] for row in client.query(f"SELECT version FROM {db}.{MIGRATIONS_TABLE}").result_rows
    }
    done: list[str] = []
    for version, path in migration_files(sql_dir):
        if version in applied:
            continue
        for statement in _split_statements(path.read_text().replace("{database}", db)):
            client.command(statement)
        client.insert(
            MIGRATIONS_TABLE,
            [[version], [path.name]],
            column_names=["version", "name"],
            database=database,
            column_oriented=True,
        )
        logger.info("migration applied", extra={"migration": path.name})
        done.append(path.name)
    if sql_dir == SQL_DIR:
        apply_retention(client, database, events_ttl_days, rollups_ttl_days)
    return done


def apply_retention(
    client: Client, database: str, events_days: int | None, rollups_days: int | None
) -> list[str]:
    """Make each table's TTL match the settings; return the tables altered.

    ``None`` leaves a table's TTL as it is, ``0`` removes it, ``N`` keeps N days (by
    ``requested_at`` for events, ``window_start`` for rollups). A TTL already equal is not
    touched: ``MODIFY TTL`` rewrites existing parts, so it must not run at every start-up.
    Tables are partitioned by day with ``ttl_only_drop_parts``, so expiry drops partitions.
    """
    wanted = {"events": events_days, "rollups": rollups_days}
    db = quote_identifier(database)
    engines = dict(
        client.query(
            "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
    )
    altered: list[str] = []
    for table, (kind, column) in RETENTION_COLUMNS.items():
        days = wanted[kind]
        engine = engines.get(table, "")
        if days is None or not engine:
            continue
        days = int(days)  # formatted into DDL, which takes no bound parameters
        if days < 0:
            raise ValueError(f"retention days must be >= 0, got {days}")
        expression = f"toDateTime({column}) + toIntervalDay({days})"
        if days == 0 and " TTL " in engine:
            client.command(f"ALTER TABLE {db}.{table} REMOVE TTL")
        elif days > 0 and f" TTL {expression}" not in engine:
            client.command(f"ALTER TABLE {db}.{table} MODIFY TTL {expression}")
        else:
            continue
        logger.info("retention applied", extra={"table": table, "days": days})
        altered.append(table)
    return altered


def events_to_arrow(events: Sequence[dict[str, Any]]) -> pa.Table:
    """Column-oriented Arrow table of wire DeliveryEvent dicts (see ``operators.event_table``)."""
    return event_table.from_dicts(events)


def insert_events(
    client: Client, database: str, events: Sequence[dict[str, Any]] | pa.Table
) -> int:
    """Insert DeliveryEvents (wire dicts, or a table of ``operators.event_table``) in one
    column-oriented (Arrow) insert; return the count.

    Blocks until ClickHouse has written the batch; nothing is retried here. A malformed
    event raises ``pyarrow.ArrowInvalid``/``ArrowTypeError`` before anything is written. A
    replayed event (same ``event_id``) is stored again but counted once by readers (``FINAL``).
    """
    table = events if isinstance(events, pa.Table) else events_to_arrow(events)
    if not table.num_rows:
        return 0
    client.insert_arrow(EVENTS_TABLE, table, database=database, settings=INSERT_SETTINGS)
    return table.num_rows


def count_by_status(client: Client, database: str) -> dict[str, int]:
    """Exact, deduplicated number of events per status."""
    result = client.query(
        f"SELECT status, count() FROM {quote_identifier(database)}.{EVENTS_TABLE} FINAL "
        "GROUP BY status ORDER BY status"
    )
    return {status: int(count) for status, count in result.result_rows}


def event_count(client: Client, database: str) -> int:
    """Exact, deduplicated number of events."""
    return int(
        client.command(f"SELECT count() FROM {quote_identifier(database)}.{EVENTS_TABLE} FINAL")
    )
