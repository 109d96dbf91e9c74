"""``notiflow templates``: load a directory into Redis, list templates, preview a rendering."""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import orjson
from rich.console import Console

from notiflow.settings import Settings
from operators.templates import (
    DEFAULT_LOCALE,
    REDIS_KEY,
    RedisTemplates,
    TemplateError,
    TemplateStore,
    load_directory_into_redis,
)

console = Console(stderr=False)


def _store(args: argparse.Namespace, settings: Settings) -> TemplateStore:
    redis = RedisTemplates(settings.redis_url) if args.tenant and settings.redis_url else None
    directory = args.dir or settings.templates_dir
    return TemplateStore(directory, redis=redis, default_locale=args.default_locale)


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    """Copy DIR into the tenant's Redis hash (replacing it unless --merge)."""
    if not settings.redis_url:
        console.print("[red]no Redis: set REDIS_URL to load templates[/]")
        return 2
    if not Path(args.directory).is_dir():
        console.print(f"[red]not a directory: {args.directory}[/]")
        return 2
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        count = load_directory_into_redis(
            client, args.tenant, Path(args.directory), replace=not args.merge
        )
    except TemplateError as error:
        console.print(f"[red]{error}[/]")
        return 1
    finally:
        client.close()
    console.print(f"loaded {count} template file(s) into {REDIS_KEY.format(tenant=args.tenant)}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Each template with its channels and locales (``-`` is locale-less)."""
    store = _store(args, settings)
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for name, channel, locale, _part in store.index(args.tenant or ""):
        found[name][channel].add(locale or "-")
    for name in sorted(found):
        channels = "; ".join(
            f"{ch} [{', '.join(sorted(locales))}]" for ch, locales in sorted(found[name].items())
        )
        console.print(f"{name}: {channels}", highlight=False)
    if not found:
        console.print("no templates")
    return 0


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    """Preview ``NAME`` on a channel for a locale and data, as the engine would send it."""
    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError as error:
        console.print(f"[red]--data is not JSON: {error}[/]")
        return 2
    note = {
        "id": "preview",
        "tenant_id": args.tenant or "default",
        "category": args.name,
        "priority": "normal",
        "template": args.name,
        "data": data if isinstance(data, dict) else {},
        "recipient": {"user_id": "preview", "locale": args.locale},
    }
    try:
        content = _store(args, settings).render(note, args.channel)
    except TemplateError as error:
        console.print(f"[red]{type(error).__name__}: {error}[/]")
        return 1
    for part in ("subject", "title", "text", "html"):
        value = getattr(content, part)
        if value is not None:
            console.rule(part)
            console.print(value, markup=False, highlight=False)
    return 0


def add_templates_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``templates {load,list,render}`` on the ``notiflow`` subcommands."""
    templates = sub.add_parser("templates", help="load, list and preview notification templates")
    tsub = templates.add_subparsers(dest="templates_command", required=True)

    load = tsub.add_parser("load", help="copy a templates directory into Redis for a tenant")
    load.add_argument("directory", metavar="DIR")
    load.add_argument("--tenant", required=True)
    load.add_argument("--merge", action="store_true", help="keep files not in DIR")
    load.set_defaults(func=cmd_load)

    listing = tsub.add_parser("list", help="list templates with their channels and locales")
    _source_options(listing)
    listing.set_defaults(func=cmd_list)

    render = tsub.add_parser("render", help="preview a template rendering")
    render.add_argument("name", metavar="NAME")
    render.add_argument("--channel", default="email")
    render.add_argument("--locale", default=None)
    render.add_argument("--data", default="{}", help="template data as JSON")
    _source_options(render)
    render.set_defaults(func=cmd_render)


def _source_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--tenant", help="include the tenant's Redis templates (REDIS_URL)")
    cmd.add_argument("--dir", type=Path, help="templates directory (default: configured)")
    cmd.add_argument("--default-locale", default=DEFAULT_LOCALE)
