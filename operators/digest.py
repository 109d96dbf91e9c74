"""Per-user digests: collect notes under a digest key and send them later as one note.

A note carrying ``"digest": {"key", "window_s", "max_items"}`` is absorbed into the bucket for
that key (per user key). A bucket opens with its first item and is flushed when ``window_s``
has passed since then (``flush_due``) or as soon as it holds ``max_items`` items (``add``).
Buckets keep compact item summaries, never whole notes. The flushed digest is one new note in
``operators.parse`` shape (category ``"digest"``), so it goes through routing like any other.

State per user key is ``DigestBuffer({digest_key: Bucket})``; it is discarded (``None``) when
its last bucket is flushed. ``next_due`` says when ``flush_due`` next has work to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from string import Template
from typing import Any, NamedTuple

from operators.events import stable_id

CATEGORY = "digest"
QUIET_HOURS_KEY = "quiet_hours"
PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "critical": 3}
MAX_ITEMS = 1000  # hard cap on any bucket, whatever the request asks
TITLE_CHARS = 200
DATA_KEYS = 8
DATA_VALUE_CHARS = 200
BODY_LINES = 50
SHORT_BODY_CHARS = 160
DIGEST_OF_CHARS = 1000
_ROUTE_FIELDS = ("tenant_id", "user_id", "key", "recipient", "channels", "priority")


class Digest(NamedTuple):
    """A flushed digest: the new note and the ids of the notes it absorbed (for events)."""

    note: dict[str, Any]
    item_ids: list[str]


@dataclass(slots=True)
class Bucket:
    """Items waiting under one digest key, plus what is needed to send them."""

    opened_at: float
    due_at: float
    items: list[dict[str, Any]]
    route: dict[str, Any]  # tenant_id, user_id, key, recipient, channels, priority, metadata


@dataclass(slots=True)
class DigestBuffer:
    """Per-user digest state: digest key → open bucket."""

    buckets: dict[str, Bucket] = field(default_factory=dict)


def _title(note: dict[str, Any]) -> str:
    """Subject, else first line of a body, else the template name; placeholders filled."""
    content = note.get("content") or {}
    parts = [p for p in (content.get("email"), *content.values()) if isinstance(p, dict)]
    text = next((p["subject"] for p in parts if p.get("subject")), None)
    if text is None:
        body = next((p["body"] for p in parts if str(p.get("body") or "").strip()), None)
        text = str(body).strip().split("\n", 1)[0] if body else None
    if text is None:
        return str(note.get("template") or note.get("category") or "update")[:TITLE_CHARS]
    values = {
        **{k: v for k, v in (note.get("data") or {}).items() if isinstance(v, str | int | float)},
        "user_id": note["user_id"],
        "tenant_id": note["tenant_id"],
        "notification_id": note["id"],
    }
    return Template(text).safe_substitute(values).strip()[:TITLE_CHARS]


def summarise(note: dict[str, Any]) -> dict[str, Any]:
    """The compact item kept in state: id, category, title, scalar data subset, requested_at."""
    data = {}
    for name, value in (note.get("data") or {}).items():
        if len(data) == DATA_KEYS:
            break
        if isinstance(value, str):
            data[name] = value[:DATA_VALUE_CHARS]
        elif value is None or isinstance(value, bool | int | float):
            data[name] = value
    return {
        "id": note["id"],
        "category": note["category"],
        "title": _title(note),
        "data": data,
        "requested_at_ms": note["requested_at_ms"],
    }


def _open(note: dict[str, Any], opened_at: float, due_at: float) -> Bucket:
    route = {name: note[name] for name in _ROUTE_FIELDS}
    route["recipient"] = dict(note["recipient"])
    route["channels"] = list(note["channels"]) if note["channels"] else None
    route["metadata"] = {
        k: v for k, v in (note.get("metadata") or {}).items() if k in ("campaign_id", "variant")
    }
    return Bucket(opened_at, due_at, [], route)


def _absorb(bucket: Bucket, note: dict[str, Any], item: dict[str, Any]) -> None:
    """Add ``item``; the route takes the highest priority, every explicit channel, any address."""
    bucket.items.append(item)
    route = bucket.route
    if PRIORITY_RANK.get(note["priority"], 1) > PRIORITY_RANK.get(route["priority"], 1):
        route["priority"] = note["priority"]
    if note["channels"]:
        route["channels"] = list(dict.fromkeys([*(route["channels"] or []), *note["channels"]]))
    for name, value in note["recipient"].items():
        route["recipient"].setdefault(name, value)


def _digest_of(ids: list[str]) -> str:
    """Comma-joined ids, cut at a whole id with a ``+N more`` tail to fit ``DIGEST_OF_CHARS``."""
    joined = ",".join(ids)
    if len(joined) <= DIGEST_OF_CHARS:
        return joined
    kept = joined[: DIGEST_OF_CHARS - 16].rsplit(",", 1)[0]
    return f"{kept},+{len(ids) - kept.count(',') - 1} more"


def build_note(bucket: Bucket, digest_key: str) -> dict[str, Any]:
    """The digest note for ``bucket`` (``operators.parse`` shape)."""
    route, items = bucket.route, bucket.items
    ids = (route["tenant_id"], route["user_id"])
    titles = [item["title"].replace("$", "$$") for item in items]  # routing fills $names
    subject = f"You have {len(items)} update" + ("" if len(items) == 1 else "s")
    lines = [f"- {title}" for title in titles[:BODY_LINES]]
    if len(titles) > BODY_LINES:
        lines.append(f"- … and {len(titles) - BODY_LINES} more")
    body = subject + ":\n\n" + "\n".join(lines) + "\n"
    short = (subject + ": " + "; ".join(titles))[:SHORT_BODY_CHARS]
    content = {
        "email": {"subject": subject, "body": body},
        "in_app": {"subject": subject, "body": body},
        "push": {"subject": subject, "body": short},
        **{channel: {"body": short} for channel in ("sms", "voice", "webhook")},
    }
    metadata = {**route["metadata"], "digest_key": digest_key}
    metadata["digest_of"] = _digest_of([item["id"] for item in items])
    return {
        "id": stable_id(CATEGORY, *ids, digest_key, bucket.opened_at, items[0]["id"]),
        "id_generated": True,
        "tenant_id": route["tenant_id"],
        "user_id": route["user_id"],
        "key": route["key"],
        "category": CATEGORY,
        "priority": route["priority"],
        "channels": route["channels"],
        "content": content,
        "template": None,
        "data": {"items": list(items), "count": len(items), "digest_key": digest_key},
        "recipient": route["recipient"],
        "dedup_key": None,
        "send_at_ms": None,
        "expires_at_ms": None,
        "digest": None,
        "strategy": route.get("strategy"),
        "metadata": metadata,
        "requested_at_ms": min(item["requested_at_ms"] for item in items),
        "source": f"digest:{digest_key}",
    }


def _flush(bucket: Bucket, digest_key: str) -> Digest:
    return Digest(build_note(bucket, digest_key), [item["id"] for item in bucket.items])


class DigestCollector:
    """Collect notes into per-key buckets; flush by window or size. State: ``DigestBuffer``."""

    def add(
        self,
        state: DigestBuffer | None,
        note: dict[str, Any],
        digest_cfg: Mapping[str, Any],
        now: float,
    ) -> tuple[DigestBuffer | None, list[Digest]]:
        """Absorb ``note`` under ``digest_cfg["key"]``; a bucket reaching ``max_items`` flushes.

        The window runs from the bucket's first item; ``max_items`` is capped at ``MAX_ITEMS``.
        Returns ``None`` as state when that flush left no bucket open. Raises ``ValueError``
        for an unusable ``digest_cfg``.
        """
        key, window_s, max_items = _check(digest_cfg)
        state = state or DigestBuffer()
        bucket = state.buckets.get(key)
        if bucket is None:
            bucket = state.buckets[key] = _open(note, now, now + window_s)
        _absorb(bucket, note, summarise(note))
        if len(bucket.items) < max_items:
            return state, []
        del state.buckets[key]
        return (state if state.buckets else None), [_flush(bucket, key)]

    def flush_due(
        self, state: DigestBuffer | None, now: float
    ) -> tuple[DigestBuffer | None, list[Digest]]:
        """Flush every bucket with ``due_at <= now`` (earliest first); ``None`` state if empty."""
        if state is None:
            return None, []
        due = sorted((b.due_at, k) for k, b in state.buckets.items() if b.due_at <= now)
        ready = [_flush(state.buckets.pop(key), key) for _, key in due]
        return (state if state.buckets else None), ready

    def flush_all(
        self, state: DigestBuffer | None, key: str | None = None
    ) -> tuple[DigestBuffer | None, list[Digest]]:
        """Flush every bucket now (or only ``key``'s), due or not; ``None`` state if empty."""
        if state is None:
            return None, []
        keys = [key] if key is not None and key in state.buckets else []
        if key is None:
            keys = sorted(state.buckets, key=lambda k: state.buckets[k].due_at)
        ready = [_flush(state.buckets.pop(k), k) for k in keys]
        return (state if state.buckets else None), ready

    @staticmethod
    def next_due(state: DigestBuffer | None) -> float | None:
        """When ``flush_due`` next has work to do (epoch seconds), or ``None``."""
        if not state or not state.buckets:
            return None
        return min(bucket.due_at for bucket in state.buckets.values())


def _check(cfg: Mapping[str, Any]) -> tuple[str, float, int]:
    key, window_s, max_items = cfg.get("key"), cfg.get("window_s"), cfg.get("max_items")
    if not isinstance(key, str) or not key:
        raise ValueError("digest key must be a non-empty string")
    if isinstance(window_s, bool) or not isinstance(window_s, int | float) or window_s <= 0:
        raise ValueError("digest window_s must be a positive number")
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise ValueError("digest max_items must be a positive integer")
    return key, float(window_s), min(max_items, MAX_ITEMS)


def merge_held(notes: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """One digest note (key ``"quiet_hours"``) for the notes held by quiet hours.

    A held digest contributes its items rather than itself. All notes must share one user key.
    """
    if not notes:
        raise ValueError("merge_held needs at least one note")
    if len({note["key"] for note in notes}) != 1:
        raise ValueError("merge_held notes must all belong to one user key")
    bucket = _open(notes[0], now, now)
    for note in notes:
        items = note["data"].get("items") if note["category"] == CATEGORY else None
        if isinstance(items, list) and items:
            for item in items:
                _absorb(bucket, note, item)
        else:
            _absorb(bucket, note, summarise(note))
    return build_note(bucket, QUIET_HOURS_KEY)
