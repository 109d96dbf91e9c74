"""Split a campaign request into per-user notes, a chunk at a time.

A campaign names its audience either explicitly (``{"user_ids": [...]}``, ids or recipient
dicts, up to ``MAX_AUDIENCE``) or as a segment (``{"segment": name}``) read page by page through
an injected ``fetch_segment_page`` (a Redis ``SSCAN`` wrapper in the flow). The state is a
``CampaignCursor``; for a list it holds only the entries not yet emitted (so it shrinks as it
goes), for a segment only the scan token and any overflow of the last page. ``next_chunk``
returns ``None`` as the cursor when the audience is exhausted: discard the state.

Per-user ids are ``stable_id(tenant_id, campaign_id, user_id)``, so a restart from a snapshot of the
cursor re-emits the same notes with the same ids. A segment scan (like ``SSCAN``) may return a
user twice; duplicates within a chunk are dropped here, across chunks the idempotency window
(same id) catches them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from operators.events import stable_id
from operators.parse import user_key

DEFAULT_CHUNK_SIZE = 1000
MAX_AUDIENCE = 100_000
MAX_PAGES_PER_CHUNK = 100  # bound one call even if the scan keeps returning empty pages
PRIORITIES = ("critical", "high", "normal", "low")


class SegmentPageFetcher(Protocol):
    """``(segment, token, count) -> (next_token, user_ids)``; may block on the network.

    The first call gets ``token=None``; returning ``next_token=None`` ends the scan. ``count``
    is a hint (a page may hold more or fewer ids, even none).
    """

    def __call__(
        self, segment: str, token: Any, count: int
    ) -> tuple[Any, Iterable[str | bytes]]: ...


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """A segment scan in progress: the token for the next page and ids fetched but not emitted."""

    name: str
    token: Any = None
    pending: tuple[str, ...] = ()


Entry = str | dict[str, Any]


@dataclass(frozen=True, slots=True)
class CampaignCursor:
    """Campaign splitting state (immutable: each step returns a new cursor).

    ``campaign`` is the per-user note body without the audience; ``audience_source`` is the
    tuple of entries not yet emitted, or a ``SegmentScan``; ``position`` counts emitted users;
    ``total`` is the audience size (``None`` for a segment).
    """

    campaign: dict[str, Any]
    audience_source: tuple[Entry, ...] | SegmentScan
    position: int = 0
    total: int | None = None


def _entries(user_ids: Any) -> tuple[Entry, ...]:
    """Validated audience entries, first occurrence of each user id kept."""
    if not isinstance(user_ids, list | tuple):
        raise ValueError("audience.user_ids must be a list")
    if len(user_ids) > MAX_AUDIENCE:
        raise ValueError(f"audience has {len(user_ids)} users; the limit is {MAX_AUDIENCE}")
    seen: dict[str, Entry] = {}
    for index, entry in enumerate(user_ids):
        uid = entry.get("user_id") if isinstance(entry, dict) else entry
        if not isinstance(uid, str) or not uid:
            raise ValueError(f"audience.user_ids[{index}] has no user id")
        seen.setdefault(uid, dict(entry) if isinstance(entry, dict) else uid)
    return tuple(seen.values())


class CampaignSplitter:
    """Emit a campaign's per-user notes ``chunk_size`` at a time. State: ``CampaignCursor``."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size

    def start(self, campaign: dict[str, Any], now: float) -> CampaignCursor:
        """A cursor at the first user. Raises ``ValueError`` for an unusable campaign.

        ``requested_at_ms`` defaults to ``now`` (fixed here, so every chunk shares it).
        """
        campaign_id, tenant_id = campaign.get("campaign_id"), campaign.get("tenant_id")
        if not isinstance(campaign_id, str) or not campaign_id:
            raise ValueError("campaign_id is required")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ValueError("tenant_id is required")
        if not campaign.get("content") and not campaign.get("template"):
            raise ValueError("either 'content' or 'template' is required")
        priority = campaign.get("priority") or "normal"
        if priority not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}")
        body = {
            "campaign_id": campaign_id,
            "tenant_id": tenant_id,
            "category": campaign.get("category") or "default",
            "priority": priority,
            "channels": list(campaign["channels"]) if campaign.get("channels") else None,
            "content": campaign.get("content") or None,
            "template": campaign.get("template"),
            "data": dict(campaign.get("data") or {}),
            "dedup_key": campaign.get("dedup_key"),
            "send_at_ms": campaign.get("send_at_ms"),
            "expires_at_ms": campaign.get("expires_at_ms"),
            "metadata": {**(campaign.get("metadata") or {}), "campaign_id": campaign_id},
            "requested_at_ms": campaign.get("requested_at_ms") or now * 1000,
        }
        audience = campaign.get("audience")
        if not isinstance(audience, dict) or ("user_ids" in audience) == ("segment" in audience):
            raise ValueError("audience must have exactly one of 'user_ids' or 'segment'")
        if "segment" in audience:
            if not isinstance(audience["segment"], str) or not audience["segment"]:
                raise ValueError("audience.segment must be a non-empty string")
            return CampaignCursor(body, SegmentScan(audience["segment"]))
        entries = _entries(audience["user_ids"])
        return CampaignCursor(body, entries, 0, len(entries))

    def next_chunk(
        self,
        cursor: CampaignCursor,
        now: float,
        fetch_segment_page: SegmentPageFetcher | None = None,
    ) -> tuple[CampaignCursor | None, list[dict[str, Any]]]:
        """Up to ``chunk_size`` notes and the advanced cursor (``None`` when done: discard).

        For a segment this calls ``fetch_segment_page`` (so it may block); ``now`` is accepted
        for the operator contract and not otherwise used.
        """
        source = cursor.audience_source
        if isinstance(source, SegmentScan):
            if fetch_segment_page is None:
                raise ValueError("a segment audience needs fetch_segment_page")
            chunk, source = self._scan(source, fetch_segment_page)
        else:
            chunk, source = source[: self.chunk_size], source[self.chunk_size :]
        notes = [
            _note(cursor.campaign, entry, cursor.position + offset)
            for offset, entry in enumerate(chunk)
        ]
        if not source:
            return None, notes
        return replace(cursor, audience_source=source, position=cursor.position + len(chunk)), notes

    def _scan(
        self, scan: SegmentScan, fetch: SegmentPageFetcher
    ) -> tuple[tuple[str, ...], tuple[str, ...] | SegmentScan]:
        """Fetch pages until a chunk is full or the scan ends; the rest stays pending."""
        ids = dict.fromkeys(scan.pending)
        token, done = scan.token, False
        for _ in range(MAX_PAGES_PER_CHUNK):
            if len(ids) >= self.chunk_size:
                break
            token, page = fetch(scan.name, token, self.chunk_size - len(ids))
            for uid in page:
                uid = uid.decode() if isinstance(uid, bytes) else uid
                if isinstance(uid, str) and uid:
                    ids[uid] = None
            if token is None:
                done = True
                break
        found = tuple(ids)
        chunk, rest = found[: self.chunk_size], found[self.chunk_size :]
        return chunk, rest if done else SegmentScan(scan.name, token, rest)


def _note(body: dict[str, Any], entry: Entry, index: int) -> dict[str, Any]:
    """The ``operators.parse``-shaped note for one audience entry."""
    recipient = dict(entry) if isinstance(entry, dict) else {"user_id": entry}
    user_id, campaign_id, tenant_id = recipient["user_id"], body["campaign_id"], body["tenant_id"]
    return {
        "id": stable_id(tenant_id, campaign_id, user_id),
        "id_generated": True,
        "tenant_id": tenant_id,
        "user_id": user_id,
        "key": user_key(tenant_id, user_id),
        "category": body["category"],
        "priority": body["priority"],
        "channels": body["channels"],
        "content": body["content"],
        "template": body["template"],
        "data": body["data"],
        "recipient": recipient,
        "dedup_key": body["dedup_key"],
        "send_at_ms": body["send_at_ms"],
        "expires_at_ms": body["expires_at_ms"],
        "digest": None,
        "strategy": body.get("strategy"),
        "metadata": dict(body["metadata"]),
        "requested_at_ms": body["requested_at_ms"],
        "source": f"campaign:{campaign_id}:{index}",
    }
