"""Choose channels and addresses for a notification and produce its content per channel.

Channels: the request's explicit list, else every default channel with an address.
Content, per channel: inline ``content[channel]``; else the request's ``template`` from the
``TemplateStore`` (``operators.templates``: Jinja2, sandboxed, locale fallback); else a
template named after the ``category`` if there is one; else the first inline content given.
Inline content keeps ``$name`` placeholders filled from ``data`` plus
``user_id``/``tenant_id``/``notification_id`` (``string.Template``: no attribute or index
access; values are HTML-escaped in the ``html`` part; an email without a subject gets its
first line). Every channel's content is checked by ``operators.templates.validate``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from string import Template
from typing import Any, NamedTuple

from connectors.base import Delivery
from connectors.email.mime import fallback_subject
from operators.templates import (
    BUILTIN_TEMPLATES,
    ContentInvalid,
    RenderedContent,
    TemplateError,
    TemplateMissing,
    TemplateStore,
    validate,
)

__all__ = [
    "BUILTIN_TEMPLATES",
    "DEFAULT_CHANNELS",
    "KIND_CONTENT_INVALID",
    "KIND_TEMPLATE_ERROR",
    "KIND_UNDELIVERABLE",
    "TemplateStore",
    "Undeliverable",
    "addresses_for",
    "choose_channels",
    "content_for",
    "plan_deliveries",
]

#: Channels used when a request names none; in-app and voice must be asked for explicitly.
DEFAULT_CHANNELS = ("email", "sms", "push", "webhook")
#: ``Undeliverable.kind`` values (also the DLQ record kind).
KIND_UNDELIVERABLE = "undeliverable"  # no channel, or no address on the channel
KIND_TEMPLATE_ERROR = "template_error"  # missing template, render error, sandbox violation
KIND_CONTENT_INVALID = "content_invalid"  # rendered or inline content fails channel checks


class Undeliverable(NamedTuple):
    """A channel that cannot be attempted, why, and which ``KIND_*`` of reason."""

    channel: str
    reason: str
    kind: str = KIND_UNDELIVERABLE


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


def inline_content(
    note: Mapping[str, Any], channel: str, source: Mapping[str, Any]
) -> RenderedContent:
    """Producer-supplied content with ``$placeholders`` filled (unknown ones left as they are)."""
    values = {
        **{k: v for k, v in note["data"].items() if isinstance(v, str | int | float)},
        "user_id": note["user_id"],
        "tenant_id": note["tenant_id"],
        "notification_id": note["id"],
    }
    escaped = {k: html.escape(str(v)) for k, v in values.items()}

    def fill(part: str, mapping: Mapping[str, Any]) -> str | None:
        text = source.get(part)
        return None if text is None else Template(text).safe_substitute(mapping)

    text = fill("body", values) or ""
    subject = fill("subject", values)
    if channel == "email" and not subject:
        subject = fallback_subject(text)
    return RenderedContent(
        text=text,
        subject=subject,
        html=fill("html", escaped),
        title=subject if channel in ("push", "in_app") else None,
        data=dict(source.get("data") or note["data"]),
    )


def content_for(note: Mapping[str, Any], channel: str, templates: TemplateStore) -> RenderedContent:
    """Validated content for ``channel`` (see the module docstring). Raises ``TemplateError``."""
    content = note["content"] or {}
    if channel in content:
        return validate(channel, inline_content(note, channel, content[channel]), templates.limits)
    try:
        return templates.render(note, channel)  # the template, else one named after the category
    except TemplateMissing:
        if note["template"] or not content:
            raise
        first = next(iter(content.values()))
        return validate(channel, inline_content(note, channel, first), templates.limits)


def plan_deliveries(
    note: dict[str, Any], templates: TemplateStore, channels: Sequence[str] | None = None
) -> tuple[list[Delivery], list[Undeliverable]]:
    """Every delivery to attempt for ``note`` (on ``channels``, default: chosen from the note),
    and every channel that cannot be attempted. Content is produced whole per channel: a
    channel whose template fails or whose content is invalid gets no delivery at all."""
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
            content = content_for(note, channel, templates)
        except ContentInvalid as error:
            undeliverable.append(Undeliverable(channel, str(error), KIND_CONTENT_INVALID))
            continue
        except TemplateError as error:
            undeliverable.append(Undeliverable(channel, str(error), KIND_TEMPLATE_ERROR))
            continue
        for address in addresses:
            deliveries.append(
                Delivery(
                    notification_id=note["id"],
                    tenant_id=note["tenant_id"],
                    user_id=note["user_id"],
                    channel=channel,
                    address=address,
                    body=content.text,
                    subject=content.subject or content.title,
                    html=content.html,
                    data=content.data,
                    category=note["category"],
                    priority=note["priority"],
                    metadata=note["metadata"],
                    requested_at_ms=note["requested_at_ms"],
                )
            )
    return deliveries, undeliverable
