"""Where users' push tokens live, so dead ones can be removed when a provider says so.

A Redis set per user: ``notiflow:push_tokens:{tenant}:{user}`` holding ``platform:token``
addresses (the same strings as ``Delivery.address`` on the push channel).
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


#: Pub/sub channel on which changed profiles are announced (``notiflow.profiles`` listens).
PROFILE_INVALIDATIONS = "notiflow:profile-invalidations"


def profile_key(tenant_id: str, user_id: str) -> str:
    return f"notiflow:profile:{tenant_id}:{user_id}"


def tokens_key(tenant_id: str, user_id: str) -> str:
    return f"notiflow:push_tokens:{tenant_id}:{user_id}"


class TokenStore:
    """Add, list and remove a user's push addresses."""

    def __init__(self, url: str) -> None:
        self._client = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=2)

    async def add(self, tenant_id: str, user_id: str, *addresses: str) -> int:
        return int(await self._client.sadd(tokens_key(tenant_id, user_id), *addresses))

    async def list(self, tenant_id: str, user_id: str) -> set[str]:
        return set(await self._client.smembers(tokens_key(tenant_id, user_id)))

    async def remove(self, tenant_id: str, user_id: str, address: str) -> bool:
        """Remove a dead address; False (logged) if Redis is unavailable."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.srem(tokens_key(tenant_id, user_id), address)
                # cached profiles (notiflow.profiles) hold the tokens too: evict them everywhere
                pipe.publish(PROFILE_INVALIDATIONS, profile_key(tenant_id, user_id))
                removed, _ = await pipe.execute()
            return bool(removed)
        except RedisError as error:
            logger.warning("could not remove a dead push token", extra={"error": str(error)})
            return False

    async def close(self) -> None:
        await self._client.aclose()
