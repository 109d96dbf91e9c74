"""Analytics throughput: the ClickHouse sink path, and the analytics flow end to end.

    python benchmarks/analytics_bench.py                      # sink 1M events, flow 300k
    python benchmarks/analytics_bench.py --batch 10000 --skip-flow
    python benchmarks/analytics_bench.py --quick              # smoke mode (seconds)

sink: Arrow tables of events (as the flow's decode step builds them from Kafka values, one
per source batch) written by the flow's own writer (``AnalyticsWriter.write``: one insert
per ``--batch`` events) into embedded ClickHouse (chDB), all migrations applied (skip index,
failures view). Reported as the best of ``--repeat`` passes; the decode step's cost per
event (parse, check, pre-aggregate) is reported apart.

flow: ``--flow-events`` events pre-produced to a 4-partition topic on the embedded Tansu
broker; then ``python -m bytewax.run flows.analytics:build_flow()`` runs as in production
and the figure is rows/s from the first inserted row to the last (its /metrics counter),
with the start-up (migrations, broker connection) reported apart.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from notiflow import clickhouse
from notiflow.kafka.admin import ensure_topics
from notiflow.kafka.broker import EmbeddedBroker
from notiflow.kafka.clickhouse_sink import AnalyticsWriter
from notiflow.netutil import free_port
from notiflow.ops import read_metric
from notiflow.settings import Settings
from operators import event_table, rollup
from operators.events import iso_ms

POLL_S = 0.05
STATUSES = ("accepted", "sent", "sent", "delivered", "opened", "failed", "deduplicated")
CHANNELS = (("email", "smtp"), ("sms", "twilio"), ("push", "fcm"), ("webhook", "webhook"))


def wire_events(count: int, start: datetime) -> list[bytes]:
    """``count`` JSON-encoded delivery events, 2 ms apart, a realistic mix of fields."""
    rng = random.Random(7)
    out = []
    for n in range(count):
        occurred = start + timedelta(milliseconds=2 * n)
        channel, provider = rng.choice(CHANNELS)
        status = rng.choice(STATUSES)
        event: dict[str, Any] = {
            "schema_version": 1,
            "event_id": f"{n:08x}-bench",
            "notification_id": f"n-{n // 3}",
            "tenant_id": f"tenant-{n % 20}",
            "user_id": f"user-{rng.randrange(100_000)}",
            "status": status,
            "channel": None if status in ("accepted", "deduplicated") else channel,
            "provider": provider if status in ("sent", "delivered", "failed") else None,
            "category": rng.choice(("orders", "marketing", "security")),
            "priority": "normal",
            "reason": "550 mailbox unavailable" if status == "failed" else None,
            "attempt": 1,
            "latency_ms": round(rng.uniform(5, 900), 3) if status == "sent" else None,
            "cost_usd": 0.0075 if status == "sent" and channel == "sms" else None,
            "requested_at": iso_ms(occurred.timestamp() * 1000 - 40),
            "occurred_at": iso_ms(occurred.timestamp() * 1000),
        }
        out.append(orjson.dumps(event))
    return out


def bench_sink(events: int, batch: int, repeat: int, source_batch: int) -> dict[str, float]:
    """Best rows/s of the sink over ``repeat`` passes, and the decode step's cost per event.

    The sink gets what the flow hands it: per source batch of ``source_batch`` Kafka values,
    one Arrow table from the decode step (``event_table.parse``), collected ``batch`` events
    at a time and written by the flow's own writer (``AnalyticsWriter.write``: one insert).
    The decode step (parse and check each source batch, pre-aggregate it for the rollups)
    is timed apart, on one thread: it runs upstream of the sink, on the worker that read
    the records.

    Also rows per CPU-second of the sink (all threads, chDB's included): on a busy shared
    machine wall time includes waiting for a core, CPU time does not.
    """
    payloads = wire_events(events, datetime(2026, 11, 1, tzinfo=UTC))
    sources = [payloads[i : i + source_batch] for i in range(0, len(payloads), source_batch)]
    decode_s = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        tables = [event_table.parse(values) for values in sources]
        for table in tables:
            rollup.stage(table)
        decode_s = min(decode_s, time.perf_counter() - started)
    if any(table is None for table in tables):
        raise RuntimeError("benchmark events did not pass the columnar checks")
    per_write = max(1, batch // source_batch)
    writes = [tables[i : i + per_write] for i in range(0, len(tables), per_write)]
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(data_dir=Path(data), clickhouse_url=None)
        client = clickhouse.connect(settings)
        try:
            best, per_cpu_s = 0.0, 0.0
            for attempt in range(repeat):
                database = f"bench_{attempt}"
                clickhouse.migrate(client, database)
                writer = AnalyticsWriter(client, database)
                started, cpu_started = time.perf_counter(), time.process_time()
                for items in writes:
                    writer.write(items)
                elapsed = time.perf_counter() - started
                per_cpu_s = max(per_cpu_s, events / (time.process_time() - cpu_started))
                if clickhouse.event_count(client, database) != events:
                    raise RuntimeError("sink benchmark lost rows")
                best = max(best, events / elapsed)
                client.command(f"DROP DATABASE {database}")
        finally:
            client.close()
    return {
        "rows_per_s": best,
        "rows_per_cpu_s": per_cpu_s,
        "decode_us_per_event": decode_s / events * 1e6,
    }


def produce(bootstrap: str, topic: str, payloads: list[bytes], partitions: int = 4) -> float:
    """Produce every payload, round-robin over the partitions; returns messages/s."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000}
    )
    started = time.perf_counter()
    for index, payload in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, payload, partition=index % partitions)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("produce did not complete")
    return len(payloads) / (time.perf_counter() - started)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a (Linux) process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_flow(events: int, batch: int, timeout_s: float) -> dict[str, float]:
    """Analytics flow as a process over a pre-produced topic: rows/s and start-up seconds."""
    start = datetime.now(UTC) - timedelta(hours=1)
    payloads = wire_events(events, start)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as data:
        settings = Settings(topic_prefix="bench.", kafka_bootstrap_servers=broker.bootstrap)
        ensure_topics({"bootstrap.servers": broker.bootstrap}, [settings.events_topic], 4)
        ensure_topics({"bootstrap.servers": broker.bootstrap}, [settings.dlq_topic], 1)
        produced = produce(broker.bootstrap, settings.events_topic, payloads)
        port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "NOTIFLOW_TOPIC_PREFIX": "bench.",
            "NOTIFLOW_DATA_DIR": data,
            "NOTIFLOW_METRICS_PORT": str(port),
            "NOTIFLOW_ANALYTICS_BATCH_SIZE": str(batch),
            "NOTIFLOW_LOG_LEVEL": "WARNING",
        }
        env.pop("CLICKHOUSE_URL", None)
        launched = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "flows.analytics:build_flow()"], env=env
        )
        first, first_rows, rows, late = 0.0, 0.0, 0.0, 0.0
        try:
            deadline = launched + timeout_s
            while time.perf_counter() < deadline and rows < events:
                time.sleep(POLL_S)
                rows = read_metric(port, "notiflow_clickhouse_rows_total")
                late = read_metric(port, "notiflow_analytics_late_events_total")
                if rows and not first:
                    first, first_rows = time.perf_counter(), rows
            last = time.perf_counter()
            cpu = _cpu_seconds(process.pid)
        finally:
            process.terminate()
            process.wait(30)
    if rows < events:
        raise RuntimeError(f"flow inserted {rows:.0f} of {events} rows in {timeout_s} s")
    steady = (rows - first_rows) / (last - first) if last - first > 10 * POLL_S else float("nan")
    return {
        "rows_per_s": steady,  # after the first insert: start-up excluded
        "overall_per_s": events / (last - launched),
        "startup_s": first - launched,
        "produce_per_s": produced,
        "late": late,
        "rows_per_cpu_s": events / cpu,  # start-up included
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="sink benchmark events")
    parser.add_argument("--batch", type=int, default=Settings().analytics_batch_size)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flow-events", type=int, default=300_000)
    parser.add_argument("--skip-flow", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.flow_events, args.repeat = 20_000, 3_000, 1
    sink = bench_sink(args.events, args.batch, args.repeat, Settings().analytics_source_batch_size)
    print(
        f"sink  {args.events:>9,} events  batch {args.batch:>6,}  "
        f"{sink['rows_per_s']:>10,.0f} rows/s  ({sink['rows_per_cpu_s']:,.0f} per CPU-second; "
        f"decode step upstream {sink['decode_us_per_event']:.2f} µs/event)"
    )
    if not args.skip_flow:
        flow = bench_flow(args.flow_events, args.batch, timeout_s=600)
        print(
            f"flow  {args.flow_events:>9,} events  batch {args.batch:>6,}  "
            f"{flow['rows_per_s']:>10,.0f} rows/s  ({flow['rows_per_cpu_s']:,.0f} per CPU-second; "
            f"{flow['overall_per_s']:,.0f}/s with "
            f"{flow['startup_s']:.1f} s start-up; {flow['late']:,.0f} late; "
            f"produced at {flow['produce_per_s']:,.0f}/s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
