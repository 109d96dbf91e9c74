"""Content deduplication: the same content for the same user within a window is a duplicate.

``content_key`` names what a note says (its ``dedup_key`` if the producer set one, else a hash
of category + content); ``ContentWindow`` remembers keys per user key for ``window_s`` seconds
from the first acceptance, with the id of the notification that carried them first.

State per user key is an insertion-ordered ``{key: (expires_at, original_id)}``; as in
``operators.dedup``, entries are added with ``now + window`` so the first expires first. State
is discarded (``None``) when its last key expires.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_INT64 = 2**63


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy for what orjson refuses (ints beyond 64 bits, exotic keys)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < 2 * _INT64 else str(value)
    return str(value)


def canonical_json(value: Any) -> bytes:
    """``value`` as JSON with sorted keys at every level; non-serialisable values → ``str``."""
    try:
        return orjson.dumps(value, option=_CANONICAL, default=str)
    except TypeError:  # orjson.JSONEncodeError: big ints, non-str keys it cannot coerce
        return orjson.dumps(_jsonable(value), option=_CANONICAL, default=str)


def content_key(note: dict[str, Any]) -> str:
    """The note's ``dedup_key``, else a 32-hex-char blake2b of category + content.

    The hash covers ``content``, ``template`` and ``data`` (data fills ``$placeholders`` in
    content too, so it changes what is sent). Dict ordering does not matter; tenant and user
    are not part of the key (the state holding keys is already per tenant × user).
    """
    if note.get("dedup_key"):
        return note["dedup_key"]
    payload = canonical_json(
        [note.get("category"), note.get("content"), note.get("template"), note.get("data")]
    )
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


@dataclass(slots=True)
class SeenContent:
    """Per-user content-dedup state: key → (expiry in epoch seconds, first notification id)."""

    entries: dict[str, tuple[float, str]] = field(default_factory=dict)

    def copy(self) -> SeenContent:
        return SeenContent(dict(self.entries))

    def __reduce__(self) -> tuple:  # pickled in every snapshot: 4× faster than the default
        return SeenContent, (self.entries,)


class ContentWindow:
    """Remember content keys for ``window_s`` seconds (measured from first acceptance)."""

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s

    def observe(
        self, state: SeenContent | None, key: str, notification_id: str, now: float
    ) -> tuple[SeenContent, str | None]:
        """Record ``key``; return the new state and the original notification id if duplicate."""
        if state is None:
            state = SeenContent()
        entry = state.entries.get(key)
        if entry is not None and entry[0] > now:
            return state, entry[1]
        if entry is not None:  # expired but not yet swept: renew in order
            del state.entries[key]
        state.entries[key] = (now + self.window_s, notification_id)
        return state, None

    def expire(self, state: SeenContent | None, now: float) -> SeenContent | None:
        """Drop expired keys; ``None`` when nothing is left (discard the state)."""
        if state is None:
            return None
        entries = state.entries
        while entries:
            first = next(iter(entries))
            if entries[first][0] > now:
                break
            del entries[first]
        return state if entries else None

    @staticmethod
    def next_expiry(state: SeenContent | None) -> float | None:
        """When ``expire`` next has work to do (epoch seconds), or ``None``."""
        if not state or not state.entries:
            return None
        return next(iter(state.entries.values()))[0]
