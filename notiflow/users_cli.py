"""``notiflow users``: import, show, set and erase user profiles in Redis.

Registered on the main parser by ``add_users_commands(sub)``; each command has the
``cmd_*(args, settings) -> int`` shape of ``notiflow.cli``. Also runnable on its own:
``python -m notiflow.users_cli import users.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from notiflow.profiles import ProfileStore
from notiflow.settings import Settings
from operators.parse import describe_validation_error

__all__ = ["add_users_commands", "main", "parse_assignments"]

console = Console(stderr=False)
#: Invalid import lines listed after an import (all are counted).
SHOWN_ERRORS = 20


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """``["email=a@b.test", "opt_outs={\"channels\": [\"sms\"]}", "phone=null"]`` → a dict.

    A value that parses as JSON is taken as JSON (``null`` clears the field), any other as a
    string. ValueError for a pair without ``=``.
    """
    fields: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"expected field=value, got {pair!r}")
        try:
            fields[name] = orjson.loads(text)
        except orjson.JSONDecodeError:
            fields[name] = text
    return fields


def _store(settings: Settings) -> ProfileStore | None:
    if not settings.redis_url:
        console.print("[red]no Redis: set REDIS_URL (profiles are stored in Redis)[/]")
        return None
    return ProfileStore(settings.redis_url, ttl_s=0)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def cmd_users_import(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when every line was imported, 1 when some were invalid."""
    store = _store(settings)
    if store is None:
        return 2
    with open(args.file, "rb") as lines:
        total = sum(1 for _ in lines)
    columns = (
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with store, Progress(*columns, console=console) as progress:
        task = progress.add_task("importing", total=total)
        result = store.import_jsonl(
            args.file, lambda n: progress.advance(task, n), chunk_size=args.chunk_size
        )
    console.print(f"imported {result.imported} profile(s); {result.invalid} invalid line(s)")
    for number, reason in result.errors[:SHOWN_ERRORS]:
        console.print(f"  line {number}: {reason}", markup=False)
    if result.invalid > SHOWN_ERRORS:
        console.print(f"  ... and {result.invalid - SHOWN_ERRORS} more")
    return 1 if result.invalid else 0


def cmd_users_show(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    if store is None:
        return 2
    with store:
        profile = store.get(args.tenant, args.user)
    if profile is None:
        console.print(f"no profile for user {args.user!r} of tenant {args.tenant!r}")
        return 1
    _print_json(profile)
    return 0


def cmd_users_set(args: argparse.Namespace, settings: Settings) -> int:
    """Merge the given top-level fields (``consents`` are appended) and print the result."""
    try:
        fields = orjson.loads(args.json) if args.json else {}
        if not isinstance(fields, dict):
            raise ValueError("--json must be a JSON object")
        fields |= parse_assignments(args.fields)
    except (ValueError, orjson.JSONDecodeError) as error:
        console.print(str(error), style="red", markup=False)
        return 2
    if not fields:
        console.print("[red]nothing to set: give field=value pairs or --json[/]")
        return 2
    store = _store(settings)
    if store is None:
        return 2
    update = {
        "tenant_id": args.tenant,
        "user_id": args.user,
        "op": "merge",
        "profile": fields,
        "at": datetime.now(UTC),
    }
    with store:
        try:
            store.apply(update)
        except ValidationError as error:
            console.print(f"invalid: {describe_validation_error(error)}", markup=False)
            return 2
        _print_json(store.get(args.tenant, args.user))
    return 0


def cmd_users_erase(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    if store is None:
        return 2
    with store:
        existed = store.erase(args.tenant, args.user)
    what = "erased" if existed else "nothing stored for"
    console.print(f"{what} user {args.user!r} of tenant {args.tenant!r}")
    return 0


def add_users_commands(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``users import|show|set|erase`` to the main parser's subcommands."""
    users = sub.add_parser("users", help="user profiles and preferences (Redis)")
    commands = users.add_subparsers(dest="users_command", required=True)

    load = commands.add_parser("import", help="upsert profiles from a JSONL file")
    load.add_argument("file", help="one UserProfile JSON per line")
    load.add_argument("--chunk-size", type=int, default=1000, help="profiles per transaction")
    load.set_defaults(func=cmd_users_import)

    show = commands.add_parser("show", help="print a profile as JSON")
    show.add_argument("tenant")
    show.add_argument("user")
    show.set_defaults(func=cmd_users_show)

    update = commands.add_parser(
        "set", help="merge fields into a profile: field=value (JSON or text) or --json"
    )
    update.add_argument("tenant")
    update.add_argument("user")
    update.add_argument("fields", nargs="*", metavar="field=value")
    update.add_argument("--json", help="fields as one JSON object")
    update.set_defaults(func=cmd_users_set)

    erase = commands.add_parser("erase", help="delete a profile and its push tokens (GDPR)")
    erase.add_argument("tenant")
    erase.add_argument("user")
    erase.set_defaults(func=cmd_users_erase)
    return users


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    """``notiflow users ...`` without the rest of the CLI (``argv`` excludes ``users``)."""
    parser = argparse.ArgumentParser(prog="notiflow")
    add_users_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["users", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args, settings or Settings())


if __name__ == "__main__":
    sys.exit(main())
