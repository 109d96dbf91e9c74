"""Choose channels and addresses for a notification and render its content per channel.

Channels: the request's explicit list, else every default channel with an address.
Content: ``content[channel]``, else the template ``<template>.<channel>.txt`` (or
``<template>.txt``), else the first content given for any channel. ``$name`` placeholders are
filled from ``data`` plus ``user_id``/``tenant_id``/``notification_id`` (``string.Template``:
no attribute or index access, so templates cannot reach into Python objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any, NamedTuple

from connectors.base import Delivery

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "notiflow" / "templates"
#: Channels used when a request names none; in-app and voice must be asked for explicitly.
DEFAULT_CHANNELS = ("email", "sms", "push", "webhook")


class Undeliverable(NamedTuple):
    """A channel that cannot be attempted, with why."""

    channel: str
    reason: str


class TemplateNotFound(LookupError):
    pass


class TemplateStore:
    """Templates from a directory, cached. Email templates may start with ``Subject: ...``."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or BUILTIN_TEMPLATES
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def get(self, name: str, channel: str) -> dict[str, str]:
        key = (name, channel)
        if key not in self._cache:
            self._cache[key] = self._load(name, channel)
        found = self._cache[key]
        if found is None:
            raise TemplateNotFound(f"template {name!r} has no file for channel {channel!r}")
        return found

    def _load(self, name: str, channel: str) -> dict[str, str] | None:
        for candidate in (f"{name}.{channel}.txt", f"{name}.txt"):
            path = self.directory / candidate
            if path.is_file():
                return _split_subject(path.read_text(encoding="utf-8"))
        return None


def _split_subject(text: str) -> dict[str, str]:
    if text.startswith("Subject:"):
        first, _, rest = text.partition("\n")
        return {"subject": first[len("Subject:") :].strip(), "body": rest.lstrip("\n")}
    return {"body": text}


def addresses_for(channel: str, recipient: dict[str, Any]) -> list[str]:
    """Addresses of ``recipient`` usable on ``channel`` (several push tokens → several)."""
    if channel == "email":
        return [recipient["email"]] if recipient.get("email") else []
    if channel in ("sms", "voice"):
        return [recipient["phone"]] if recipient.get("phone") else []
    if channel == "push":
        return [f"{t['platform']}:{t['token']}" for t in recipient.get("push_tokens", [])]
    if channel == "webhook":
        return [recipient["webhook_url"]] if recipient.get("webhook_url") else []
    if channel == "in_app":
        return [recipient["user_id"]]
    return []


def choose_channels(note: dict[str, Any]) -> list[str]:
    """The explicit channel list, else every default channel the recipient has an address for."""
    if note["channels"]:
        return list(dict.fromkeys(note["channels"]))
    recipient = note["recipient"]
    return [c for c in DEFAULT_CHANNELS if addresses_for(c, recipient)]


def render(note: dict[str, Any], channel: str, templates: TemplateStore) -> dict[str, Any]:
    """Rendered ``{subject?, body, html?, data}`` for ``channel``. Raises ``TemplateNotFound``."""
    content = note["content"] or {}
    source = content.get(channel)
    if source is None and note["template"]:
        source = templates.get(note["template"], channel)
    if source is None and content:
        source = next(iter(content.values()))
    if source is None:
        raise TemplateNotFound(f"no content for channel {channel!r}")
    values = {
        **{k: v for k, v in note["data"].items() if isinstance(v, str | int | float)},
        "user_id": note["user_id"],
        "tenant_id": note["tenant_id"],
        "notification_id": note["id"],
    }
    rendered: dict[str, Any] = {"data": source.get("data") or note["data"]}
    for part in ("subject", "body", "html"):
        if source.get(part) is not None:
            rendered[part] = Template(source[part]).safe_substitute(values)
    rendered.setdefault("body", "")
    return rendered


def plan_deliveries(
    note: dict[str, Any], templates: TemplateStore, channels: Sequence[str] | None = None
) -> tuple[list[Delivery], list[Undeliverable]]:
    """Every delivery to attempt for ``note`` (on ``channels``, default: chosen from the note),
    and every channel that cannot be attempted."""
    deliveries: list[Delivery] = []
    undeliverable: list[Undeliverable] = []
    if channels is None:
        channels = choose_channels(note)
    if not channels:
        return [], [Undeliverable("", "no channel: no explicit channels and no addresses")]
    for channel in channels:
        addresses = addresses_for(channel, note["recipient"])
        if not addresses:
            undeliverable.append(Undeliverable(channel, f"no {channel} address for recipient"))
            continue
        try:
            content = render(note, channel, templates)
        except TemplateNotFound as error:
            undeliverable.append(Undeliverable(channel, str(error)))
            continue
        for address in addresses:
            deliveries.append(
                Delivery(
                    notification_id=note["id"],
                    tenant_id=note["tenant_id"],
                    user_id=note["user_id"],
                    channel=channel,
                    address=address,
                    body=content["body"],
                    subject=content.get("subject"),
                    html=content.get("html"),
                    data=content["data"],
                    category=note["category"],
                    priority=note["priority"],
                    metadata=note["metadata"],
                    requested_at_ms=note["requested_at_ms"],
                )
            )
    return deliveries, undeliverable
