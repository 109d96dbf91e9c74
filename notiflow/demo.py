"""``notiflow demo`` (what ``make run`` runs): the whole system on embedded services.

Starts a local SMTP catcher and webhook receiver standing in for providers, the engine on the
embedded broker and ClickHouse, feeds a sample workload with duplicates and malformed
requests, follows progress from the events topic, and ends with the summary from ClickHouse.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter

import orjson
from rich.console import Console
from rich.progress import Progress

from notiflow import clickhouse, stats
from notiflow.devservices.smtp_catcher import SmtpCatcher
from notiflow.devservices.webhook_receiver import WebhookReceiver
from notiflow.engine import Engine
from notiflow.kafka.reader import TopicReader
from notiflow.netutil import free_port_block
from notiflow.ops import read_metric
from notiflow.producer import produce_all
from notiflow.settings import Settings
from notiflow.workload import build_workload

FINAL_STATUSES = {"sent", "failed", "dead_lettered", "deduplicated", "rejected"}
TIMEOUT_S = 180.0


def run_demo(base: Settings, console: Console, requests: int = 1000, processes: int = 1) -> int:
    data_dir = (base.data_dir / "demo").resolve()
    shutil.rmtree(data_dir, ignore_errors=True)
    metrics_port = free_port_block(processes + 1)
    with SmtpCatcher() as smtp, WebhookReceiver(secret=base.webhook_secret) as hooks:
        os.environ.update(
            {
                "NOTIFLOW_DATA_DIR": str(data_dir),
                "NOTIFLOW_SMTP_HOST": smtp.host,
                "NOTIFLOW_SMTP_PORT": str(smtp.port),
                "NOTIFLOW_METRICS_PORT": str(metrics_port),
                "NOTIFLOW_LOG_LEVEL": os.environ.get("NOTIFLOW_LOG_LEVEL", "WARNING"),
            }
        )
        os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        os.environ.pop("CLICKHOUSE_URL", None)
        settings = Settings()
        work = build_workload(
            requests,
            malformed=requests // 50,
            duplicates=requests // 50,
            webhook_url=hooks.url("/hook"),
            oversized_bytes=70_000,
        )
        expected_final = work.emails + work.webhooks + work.duplicates + work.malformed
        console.rule("[bold]notiflow demo")
        console.print(f"SMTP catcher {smtp.host}:{smtp.port} · webhook receiver {hooks.url()}")
        with Engine(settings, processes=processes) as engine:
            kafka = {**settings.kafka_config(), "bootstrap.servers": engine.bootstrap}
            console.print(
                f"engine: broker {engine.bootstrap}, {processes} orchestration "
                f"process(es), ClickHouse {settings.clickhouse_dsn}"
            )
            events = TopicReader(kafka, settings.events_topic)
            dlq = TopicReader(kafka, settings.dlq_topic)
            finals: Counter[str] = Counter()
            with Progress(console=console) as progress:
                produce_task = progress.add_task("produce requests", total=len(work.records))
                produce_all(
                    kafka,
                    settings.requests_topic,
                    work.records,
                    lambda n: progress.advance(produce_task, n),
                )
                outcome_task = progress.add_task("final outcomes", total=expected_final)
                deadline = time.monotonic() + TIMEOUT_S
                seen = 0
                while sum(finals.values()) < expected_final and time.monotonic() < deadline:
                    events.poll(0.2)
                    for message in events.messages[seen:]:
                        status = orjson.loads(message.value())["status"]
                        if status in FINAL_STATUSES:
                            finals[status] += 1
                            progress.advance(outcome_task)
                    seen = len(events.messages)
                    if engine.poll():
                        console.print(f"[red]engine process exited: {engine.poll()}")
                        return 1
                events.drain(quiet_s=1.0)
                dlq.drain(quiet_s=0.5)
                total_events = len(events.messages)
                store_task = progress.add_task("events into ClickHouse", total=total_events)
                while time.monotonic() < deadline:
                    rows = read_metric(metrics_port + processes, "notiflow_clickhouse_rows_total")
                    progress.update(store_task, completed=rows)
                    if rows >= total_events:
                        break
                    time.sleep(0.2)
            dlq_count = len(dlq.messages)
            events.close()
            dlq.close()
        console.print(
            f"SMTP inbox: {smtp.count} emails · webhook receipts: {hooks.count} · "
            f"DLQ: {dlq_count} messages · events: {total_events}"
        )
        client = clickhouse.connect(settings)
        try:
            stats.render_summary(stats.summary(client, settings.clickhouse_database), console)
        finally:
            client.close()
    ok = (
        smtp.count == work.emails
        and hooks.count == work.webhooks
        and finals["deduplicated"] == work.duplicates
        and finals["rejected"] == work.malformed
    )
    console.print(
        "[green]demo complete: every request accounted for"
        if ok
        else f"[red]demo finished with unexpected counts: {dict(finals)}"
    )
    return 0 if ok else 1
