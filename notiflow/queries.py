"""The analysts' SQL library, ``sql/queries/<name>.sql``: list, describe and run by name.

Each file starts with a comment block saying which question it answers. Its parameters are
ClickHouse placeholders ``{name:Type}`` bound by the server (chDB or HTTP alike), never
formatted into the text; ``database`` (an ``Identifier``) is always supplied. Parameters
typed ``Nullable(...)`` are optional filters (omitted = ``NULL`` = no filter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from clickhouse_connect.driver.client import Client

from notiflow.clickhouse import SQL_DIR

QUERIES_DIR = SQL_DIR / "queries"
_PLACEHOLDER = re.compile(r"\{(\w+):([^{}]+)\}")
_NAME = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Rows of a named query with their column names."""

    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        """Rows as ``{column: value}``."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def names() -> list[str]:
    """Every query name, sorted."""
    return sorted(path.stem for path in QUERIES_DIR.glob("*.sql"))


@cache
def sql(name: str) -> str:
    """The text of query ``name``; ``KeyError`` for an unknown name."""
    if not _NAME.match(name) or not (QUERIES_DIR / f"{name}.sql").is_file():
        raise KeyError(f"no query {name!r}; known: {', '.join(names())}")
    return (QUERIES_DIR / f"{name}.sql").read_text()


def description(name: str) -> str:
    """The header comment of query ``name`` (what it answers), without ``--`` markers."""
    lines = []
    for line in sql(name).splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return "\n".join(lines).strip()


def parameters(name: str) -> dict[str, str]:
    """``{parameter: ClickHouse type}`` of query ``name``, without ``database``."""
    found = {param: kind for param, kind in _PLACEHOLDER.findall(sql(name))}
    found.pop("database", None)
    return found


def _bound(value: Any) -> Any:
    """Naive datetimes are UTC (like ``stats.summary``)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def run(client: Client, database: str, name: str, **params: Any) -> QueryResult:
    """Run query ``name`` with bound ``params``; unknown or missing required ones raise."""
    declared = parameters(name)
    unknown = set(params) - set(declared)
    if unknown:
        raise ValueError(f"{name}: unknown parameters {sorted(unknown)}; takes {sorted(declared)}")
    missing = [
        param
        for param, kind in declared.items()
        if params.get(param) is None and not kind.startswith("Nullable(")
    ]
    if missing:
        raise ValueError(f"{name}: missing required parameters {missing}")
    values = {param: _bound(params.get(param)) for param in declared}
    values["database"] = database
    result = client.query(sql(name), parameters=values)
    return QueryResult(name, tuple(result.column_names), list(result.result_rows))


def run_filtered(client: Client, database: str, name: str, **filters: Any) -> QueryResult:
    """Like :func:`run`, passing only the ``filters`` the query declares (shared filters)."""
    declared = parameters(name)
    return run(client, database, name, **{k: v for k, v in filters.items() if k in declared})
