"""Stored audience segments: a Redis set per tenant and segment, read with ``SSCAN``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis

from operators.campaign import SegmentPageFetcher

SCAN_COUNT = 1000


def segment_key(tenant_id: str, segment: str) -> str:
    return f"notiflow:segments:{tenant_id}:{segment}"


class RedisSegments:
    """Create fetchers that page through a tenant's segment (cursor-based, no full load)."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, decode_responses=True)

    def add(self, tenant_id: str, segment: str, user_ids: Iterable[str]) -> int:
        """Add users to a segment; returns how many were new."""
        ids = list(user_ids)
        added = 0
        for start in range(0, len(ids), 10_000):
            added += int(
                self._client.sadd(segment_key(tenant_id, segment), *ids[start : start + 10_000])
            )
        return added

    def fetcher(self, tenant_id: str) -> SegmentPageFetcher:
        def fetch(segment: str, token: Any, count: int) -> tuple[Any, list[str]]:
            cursor, ids = self._client.sscan(
                segment_key(tenant_id, segment), token or 0, count=max(count, SCAN_COUNT)
            )
            return (cursor or None), ids

        return fetch


def segment_fetchers(redis_url: str | None) -> Callable[[str], SegmentPageFetcher | None]:
    """Tenant → fetcher (or ``None`` without Redis), created lazily in the worker."""
    segments: list[RedisSegments] = []

    def for_tenant(tenant_id: str) -> SegmentPageFetcher | None:
        if redis_url is None:
            return None
        if not segments:
            segments.append(RedisSegments(redis_url))
        return segments[0].fetcher(tenant_id)

    return for_tenant
