"""``notiflow`` command line: run, send, stats, migrate, config, demo, users, templates."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from clickhouse_connect.driver.exceptions import ClickHouseError
from rich.console import Console
from rich.progress import Progress

from notiflow.settings import Settings
from notiflow.templates_cli import add_templates_commands
from notiflow.users_cli import add_users_commands

console = Console(stderr=False)


def _since(text: str | None) -> datetime | None:
    """``1h``, ``30m``, ``2d`` or an ISO-8601 time."""
    if not text:
        return None
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text[-1] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from notiflow.engine import Engine
    from notiflow.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format.value, flow="engine")
    if args.recovery_dir:
        settings.recovery_dir = args.recovery_dir
    engine = Engine(settings, processes=args.processes).start()
    console.print(
        f"notiflow running: broker {engine.bootstrap}, "
        f"{engine.processes} orchestration process(es). Ctrl-C stops."
    )
    return engine.wait()


def _request_from_args(args: argparse.Namespace) -> dict:
    recipient: dict = {"user_id": args.user}
    if args.email:
        recipient["email"] = args.email
    if args.webhook:
        recipient["webhook_url"] = args.webhook
    request: dict = {"tenant_id": args.tenant, "recipient": recipient, "category": args.category}
    if args.template:
        request["template"], request["data"] = args.template, orjson.loads(args.data)
    else:
        request["content"] = {
            "email": {"subject": args.subject, "body": args.body},
            "webhook": {"body": args.body},
        }
    if args.id:
        request["id"] = args.id
    return request


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    from notiflow.engine import resolve_bootstrap
    from notiflow.producer import produce_all

    bootstrap = resolve_bootstrap(settings)
    if not bootstrap:
        console.print("[red]no broker: set KAFKA_BOOTSTRAP_SERVERS or start `notiflow run`[/]")
        return 2
    if args.file:
        lines = [line for line in Path(args.file).read_bytes().splitlines() if line.strip()]
        records = [(None, line) for line in lines]
    elif args.user:
        records = [(None, orjson.dumps(_request_from_args(args)))]
    else:
        console.print("[red]give --file FILE.jsonl or --user (see --help)[/]")
        return 2
    config = {**settings.kafka_config(), "bootstrap.servers": bootstrap}
    with Progress(console=console) as progress:
        task = progress.add_task("producing", total=len(records))
        sent = produce_all(
            config, settings.requests_topic, records, lambda n: progress.advance(task, n)
        )
    console.print(f"sent {sent} request(s) to {settings.requests_topic}")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from notiflow import clickhouse, stats

    client = clickhouse.connect(settings)
    try:
        filters = {"since": _since(args.since), "tenant": args.tenant, "channel": args.channel}
        summary = stats.summary(client, settings.clickhouse_database, **filters)
        stats.render_summary(summary, console)
        if summary.total:
            stats.render_details(client, settings.clickhouse_database, console, **filters)
        if args.report:
            from notiflow.report import write_report

            page = write_report(client, settings.clickhouse_database, args.report, **filters)
            console.print(f"report written: {page}")
    finally:
        client.close()
    return 0


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from notiflow import clickhouse

    client = clickhouse.connect(settings)
    try:
        applied = clickhouse.migrate(
            client,
            settings.clickhouse_database,
            events_ttl_days=settings.analytics_retention_days,
            rollups_ttl_days=settings.analytics_rollup_retention_days,
        )
    finally:
        client.close()
    console.print(f"applied: {', '.join(applied) or 'nothing (up to date)'}")
    return 0


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    from notiflow.config_doc import render_markdown

    if args.markdown:
        sys.stdout.write(render_markdown())
    else:
        sys.stdout.write(settings.model_dump_json(indent=2) + "\n")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from notiflow.demo import run_demo

    return run_demo(settings, console, requests=args.requests, processes=args.processes)


def cmd_bench(argv: list[str]) -> int:
    from benchmarks.__main__ import main as bench_main

    return bench_main(["run", *argv])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notiflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the engine (both flows)")
    run.add_argument("--processes", type=int, default=None, help="orchestration processes")
    run.add_argument("--recovery-dir", type=Path, default=None, help="enable crash recovery")
    run.set_defaults(func=cmd_run)

    send = sub.add_parser("send", help="produce requests from a JSONL file or arguments")
    send.add_argument("--file", help="JSONL file, one NotificationRequest per line")
    send.add_argument("--user", help="recipient user id")
    send.add_argument("--tenant", default="default")
    send.add_argument("--email")
    send.add_argument("--webhook", help="recipient webhook URL")
    send.add_argument("--category", default="default")
    send.add_argument("--subject", default="Hello from notiflow")
    send.add_argument("--body", default="This is a test notification.")
    send.add_argument("--template")
    send.add_argument("--data", default="{}", help="template data as JSON")
    send.add_argument("--id", help="idempotency key")
    send.set_defaults(func=cmd_send)

    stats = sub.add_parser("stats", help="delivery summary from ClickHouse")
    stats.add_argument("--since", help="e.g. 1h, 30m, 2d or an ISO time")
    stats.add_argument("--tenant")
    stats.add_argument("--channel")
    stats.add_argument(
        "--report", type=Path, metavar="DIR", help="also write PNG charts and index.html into DIR"
    )
    stats.set_defaults(func=cmd_stats)

    sub.add_parser("migrate", help="apply ClickHouse migrations").set_defaults(func=cmd_migrate)

    config = sub.add_parser("config", help="print the effective configuration")
    config.add_argument("--markdown", action="store_true", help="the reference as Markdown")
    config.set_defaults(func=cmd_config)

    demo = sub.add_parser("demo", help="the whole system on embedded services (make run)")
    demo.add_argument("--requests", type=int, default=1000)
    demo.add_argument("--processes", type=int, default=1)
    demo.set_defaults(func=cmd_demo)
    add_users_commands(sub)
    add_templates_commands(sub)

    sub.add_parser(
        "bench",
        help="benchmarks; takes the options of `python -m benchmarks run` (--quick, --help, ...)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        return cmd_bench(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, Settings())
    except ClickHouseError as error:  # unreachable server, wrong password, locked chDB, ...
        print(f"notiflow {args.command}: ClickHouse: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
