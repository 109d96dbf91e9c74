"""Push connectors, and the address conventions they share.

A push address is ``<platform>:<token>``: ``fcm:<registration token>``, ``apns:<hex device
token>`` or ``webpush:<subscription JSON>``. ``router.PushRouter`` sends each delivery to the
connector of its platform: ``fcm.FcmConnector`` (FCM HTTP v1), ``apns.ApnsConnector`` (APNs
over HTTP/2) or ``webpush.WebPushConnector`` (RFC 8030 + RFC 8291 + RFC 8292).

Delivery hints read from ``Delivery.metadata`` by every push connector: ``ttl_s`` (seconds the
push service keeps an undelivered message), ``collapse_key`` (newer replaces older) and
``push_type`` (``background``: a silent data push, where the platform has one).

This module imports none of the connectors, so each can import these helpers.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from connectors.base import Delivery, InvalidRequest

__all__ = [
    "PLATFORMS",
    "collapse_key",
    "is_background",
    "is_urgent",
    "platform_token",
    "split_address",
    "string_data",
    "ttl_seconds",
]

PLATFORMS: Final = ("fcm", "apns", "webpush")
#: Priorities that ask the platform to wake the device now.
URGENT_PRIORITIES: Final = frozenset({"critical", "high"})


def split_address(address: str) -> tuple[str, str]:
    """``"fcm:abc"`` → ``("fcm", "abc")``; InvalidRequest for an unknown or missing platform."""
    platform, sep, token = address.partition(":")
    if not sep or platform not in PLATFORMS:
        raise InvalidRequest(
            f"unknown push platform in address {address[:40]!r} (need one of {PLATFORMS})"
        )
    if not token.strip():
        raise InvalidRequest(f"empty {platform} token")
    return platform, token


def platform_token(address: str, platform: str) -> str:
    """The token in ``address``, with or without this platform's ``platform:`` prefix.

    Only the connector's own prefix is stripped: FCM tokens themselves contain a colon.
    """
    token = address.removeprefix(f"{platform}:").strip()
    if not token:
        raise InvalidRequest(f"empty {platform} token")
    return token


def is_urgent(delivery: Delivery) -> bool:
    return delivery.priority in URGENT_PRIORITIES


def is_background(delivery: Delivery) -> bool:
    """A silent data push (``metadata["push_type"] == "background"``)."""
    return delivery.metadata.get("push_type") == "background"


def ttl_seconds(delivery: Delivery, default: int) -> int:
    """``metadata["ttl_s"]`` when it is a non-negative number, else ``default``."""
    raw = delivery.metadata.get("ttl_s")
    if raw is None:
        return default
    try:
        value = int(float(raw))
    except (TypeError, ValueError) as error:
        raise InvalidRequest(f"invalid ttl_s {raw!r}") from error
    if value < 0:
        raise InvalidRequest(f"invalid ttl_s {raw!r}")
    return value


def collapse_key(delivery: Delivery) -> str | None:
    return delivery.metadata.get("collapse_key") or None


def string_data(data: dict[str, Any]) -> dict[str, str]:
    """Data as string → string (FCM's rule): strings kept, anything else JSON-encoded."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, str):
            out[str(key)] = value
            continue
        try:
            out[str(key)] = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError as error:  # orjson.JSONEncodeError subclasses TypeError
            raise InvalidRequest(f"unserializable data value for {key!r}: {error}") from error
    return out
