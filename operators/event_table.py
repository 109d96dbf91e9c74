"""Delivery events as Arrow tables: the analytics flow's columnar representation.

The analytics flow reads JSON events from Kafka and must store hundreds of thousands per
second. Decoding each into a dict, checking it and then converting the dicts to columns
costs ~6 µs per event in Python; :func:`parse` instead hands a whole source batch to Arrow's
JSON reader (C++) with the wire schema and checks the columns at once (~2 µs per event).
When that fails (a malformed record, a wrong type, an empty value), the caller falls back to
per-record decoding, which names the bad records; :func:`from_dicts` converts the good ones.

Tables hold the columns of ``delivery_events`` with times as ``timestamp[ms, UTC]``. Absent
values stay null; the insert turns them into column defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from io import BytesIO
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from operators.event_shape import OPTIONAL_TEXT, REQUIRED_TEXT

TEXT_FIELDS = (*REQUIRED_TEXT, *OPTIONAL_TEXT)
TIME_FIELDS = ("requested_at", "occurred_at")
STORED_TIME = pa.timestamp("ms", tz="UTC")
#: Wire shape of a DeliveryEvent (schemas/event.py) as Arrow reads it: times still text.
WIRE_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int64()),
        *((name, pa.string()) for name in TEXT_FIELDS),
        ("attempt", pa.int64()),
        ("latency_ms", pa.float64()),
        ("cost_usd", pa.float64()),
        ("segments", pa.int64()),
        *((name, pa.string()) for name in TIME_FIELDS),
    ]
)
_AWARE_WIRE = pa.struct(
    [
        pa.field(field.name, pa.timestamp("us", tz="UTC")) if field.name in TIME_FIELDS else field
        for field in WIRE_SCHEMA
    ]
)
_READ = pa_json.ReadOptions(use_threads=True, block_size=1 << 20)
_PARSE = pa_json.ParseOptions(explicit_schema=WIRE_SCHEMA, unexpected_field_behavior="ignore")


def _stored(columns: dict[str, pa.ChunkedArray | pa.Array]) -> pa.Table:
    """Times (text with a zone, or aware) as ``timestamp[ms, UTC]``; raises when one does
    not parse or has no zone (Arrow insists on an offset for a zoned type)."""
    for name in TIME_FIELDS:
        micros = pc.cast(columns[name], pa.timestamp("us", tz="UTC"))
        columns[name] = pc.cast(micros, STORED_TIME, safe=False)
    return pa.table(columns)


def from_dicts(events: Sequence[dict[str, Any]]) -> pa.Table:
    """Events as dicts (times ISO-8601 text or aware datetimes) → a table.

    Raises ``pyarrow.ArrowInvalid``/``ArrowTypeError`` on a value of the wrong type."""
    first_time = events[0].get("requested_at") if events else None
    struct = _AWARE_WIRE if isinstance(first_time, datetime) else pa.struct(WIRE_SCHEMA)
    batch = pa.RecordBatch.from_struct_array(pa.array(events, type=struct))
    return _stored(dict(zip(batch.schema.names, batch.columns, strict=True)))


def parse(values: Sequence[bytes]) -> pa.Table | None:
    """A batch of JSON events → a table, or ``None`` when any one of them would not pass
    :func:`operators.event_shape.event_problem` (or Arrow cannot tell): decode that batch
    record by record instead."""
    if not values:
        return None
    try:
        table = pa_json.read_json(BytesIO(b"\n".join(values)), _READ, _PARSE)
        if table.num_rows != len(values):  # an empty value or a raw newline in one
            return None
        table = _stored({name: table.column(name) for name in table.column_names})
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return table if _all_valid(table) else None


def _all_valid(table: pa.Table) -> bool:
    """The checks of ``event_problem`` that the schema and time parsing leave open: required
    texts and times present, texts not empty, attempts not negative."""
    for name in (*REQUIRED_TEXT, *TIME_FIELDS):
        if table.column(name).null_count:
            return False
    for name in REQUIRED_TEXT:
        if pc.min(pc.binary_length(table.column(name))).as_py() == 0:
            return False
    lowest_attempt = pc.min(table.column("attempt")).as_py()  # nulls skipped: absent is 0
    return lowest_attempt is None or lowest_attempt >= 0


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """One table of several (zero copy)."""
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)
