"""Run the real analytics flow in-process (bytewax ``run_main``) over given Kafka records."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from clickhouse_connect.driver.client import Client

from flows.analytics import build_flow
from notiflow.kafka.source import Record
from notiflow.settings import Settings
from schemas.event import DeliveryEvent

LATENESS = timedelta(seconds=10)
T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
ROLLUP_COLUMNS = "events, latency_events, latency_sum_ms, latency_max_ms, cost_usd, late_events"


def event(n: int, seconds: float, **fields: Any) -> dict[str, Any]:
    """A wire event ``seconds`` after ``T``, latency ``n`` ms (acme, email, smtp, sent)."""
    moment = T + timedelta(seconds=seconds)
    values: dict[str, Any] = {
        "event_id": f"e{n}",
        "notification_id": f"n{n}",
        "tenant_id": "acme",
        "user_id": "u1",
        "status": "sent",
        "channel": "email",
        "provider": "smtp",
        "latency_ms": float(n),
        "requested_at": moment - timedelta(milliseconds=100),
        "occurred_at": moment,
    }
    values.update(fields)
    return DeliveryEvent(**values).model_dump(mode="json")


def records(items: Iterable[dict[str, Any] | bytes | Any]) -> list[Any]:
    """Kafka records of events (dicts), raw values (bytes), or markers passed through."""
    out: list[Any] = []
    for offset, item in enumerate(items):
        if isinstance(item, dict | bytes):
            value = orjson.dumps(item) if isinstance(item, dict) else item
            out.append(Record("events", 0, offset, None, value, 0, ()))
        else:
            out.append(item)  # TestingSource.ABORT / PAUSE
    return out


def run(
    settings: Settings,
    items: list[Any],
    batch_size: int = 1,
    recovery: Path | None = None,
    dlq: list[Any] | None = None,
    lateness: timedelta = LATENESS,
) -> None:
    """One execution of the flow until the input ends (windows close at EOF)."""
    config = None
    if recovery is not None:
        if not recovery.exists():
            recovery.mkdir(parents=True)
            init_db_dir(recovery, 1)
        config = RecoveryConfig(str(recovery))
    flow = build_flow(
        settings,
        source=TestingSource(items, batch_size),
        dlq=TestingSink(dlq if dlq is not None else []),
        allowed_lateness=lateness,
    )
    run_main(flow, epoch_interval=timedelta(0), recovery_config=config)


def rollups(client: Client, database: str) -> dict[tuple[str, ...], tuple[Any, ...]]:
    """``{(minute HH:MM, tenant, channel, provider, status): figures}`` read with FINAL."""
    result = client.query(
        f"SELECT formatDateTime(window_start, '%H:%i'), tenant_id, channel, provider, status, "
        f"{ROLLUP_COLUMNS} FROM {database}.delivery_rollup_1m FINAL"
    )
    return {tuple(row[:5]): tuple(row[5:]) for row in result.result_rows}


def raw_count(client: Client, database: str) -> int:
    return int(client.command(f"SELECT count() FROM {database}.delivery_events FINAL"))
