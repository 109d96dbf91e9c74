"""One connector for the push channel that hands each delivery to its platform's connector.

The address prefix picks the platform (``fcm:``, ``apns:``, ``webpush:``); an unknown prefix
is an ``InvalidRequest``, a known platform without credentials a ``PermanentError``. Results
name the platform that handled them — ``SendResult.detail["provider"]``, and for errors a
``"fcm: "``-style prefix on ``reason`` plus a ``provider`` attribute — so events can report the
real provider although the dispatcher only knows this router (provider ``"push"``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from connectors.base import (
    Connector,
    ConnectorError,
    Delivery,
    Outcome,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.push import PLATFORMS, split_address
from connectors.push.apns import ApnsConnector
from connectors.push.fcm import FcmConnector
from connectors.push.webpush import WebPushConnector

if TYPE_CHECKING:
    from notiflow.settings import Settings

__all__ = ["PushRouter"]

log = logging.getLogger(__name__)


def _tagged(error: ConnectorError, platform: str) -> ConnectorError:
    """The same error, its reason prefixed with the platform that raised it."""
    if not error.reason.startswith(f"{platform}: "):
        error.reason = f"{platform}: {error.reason}"
        error.args = (error.reason,)
    error.provider = platform  # type: ignore[attr-defined]
    return error


class PushRouter(Connector):
    """Route push deliveries by address prefix to FCM, APNs or Web Push connectors."""

    channel: ClassVar[str] = "push"
    provider: ClassVar[str] = "push"

    def __init__(self, connectors: Mapping[str, Connector]) -> None:
        unknown = set(connectors) - set(PLATFORMS)
        if unknown:
            raise ValueError(f"unknown push platforms {sorted(unknown)}; known: {PLATFORMS}")
        self.connectors = dict(connectors)

    @classmethod
    def from_settings(cls, settings: Settings) -> PushRouter:
        """A connector for every platform whose credentials are set (possibly none)."""
        connectors: dict[str, Connector] = {}
        if settings.fcm_credentials_file:
            connectors["fcm"] = FcmConnector.from_settings(settings)
        if settings.apns_key_file:
            connectors["apns"] = ApnsConnector.from_settings(settings)
        if settings.webpush_vapid_private_key:
            connectors["webpush"] = WebPushConnector.from_settings(settings)
        log.info("push platforms configured: %s", sorted(connectors) or "none")
        return cls(connectors)

    async def open(self) -> None:
        await asyncio.gather(*(c.open() for c in self.connectors.values()))

    async def close(self) -> None:
        results = await asyncio.gather(
            *(c.close() for c in self.connectors.values()), return_exceptions=True
        )
        for error in results:
            if isinstance(error, Exception):
                log.warning("closing a push connector failed: %s", error)

    def connector_for(self, delivery: Delivery) -> tuple[str, Connector]:
        """The platform and its connector; InvalidRequest/PermanentError when there is none."""
        platform, _ = split_address(delivery.address)
        connector = self.connectors.get(platform)
        if connector is None:
            raise PermanentError(f"{platform}: no connector configured for this platform")
        return platform, connector

    async def send(self, delivery: Delivery) -> SendResult:
        platform, connector = self.connector_for(delivery)
        try:
            result = await connector.send(delivery)
        except ConnectorError as error:
            raise _tagged(error, platform) from error.__cause__
        return self._stamped(result, platform)

    async def send_batch(self, deliveries: Sequence[Delivery], concurrency: int) -> list[Outcome]:
        """Group by platform; each group goes through its connector's ``send_batch`` at
        ``concurrency`` (platforms are separate services, so they run side by side)."""
        outcomes: list[Outcome | None] = [None] * len(deliveries)
        groups: dict[str, list[int]] = {}
        for index, delivery in enumerate(deliveries):
            try:
                platform, _ = self.connector_for(delivery)
            except ConnectorError as error:
                outcomes[index] = error
                continue
            groups.setdefault(platform, []).append(index)

        async def run(platform: str, indexes: list[int]) -> None:
            batch = [deliveries[i] for i in indexes]
            results = await self.connectors[platform].send_batch(batch, concurrency)
            for index, outcome in zip(indexes, results, strict=True):
                if isinstance(outcome, SendResult):
                    outcomes[index] = self._stamped(outcome, platform)
                else:
                    outcomes[index] = _tagged(outcome, platform)

        await asyncio.gather(*(run(p, idx) for p, idx in groups.items()))
        return [o if o is not None else RetryableError("push: no outcome") for o in outcomes]

    @staticmethod
    def _stamped(result: SendResult, platform: str) -> SendResult:
        result.detail = {**result.detail, "provider": platform}
        return result

    def __repr__(self) -> str:
        return f"PushRouter(platforms={sorted(self.connectors)})"
