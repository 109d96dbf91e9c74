"""A small, hand-countable set of delivery events that exercises every query.

acme, requested 2026-11-20 10:00 UTC onwards (offsets in seconds):
  n1 u1 orders c1/A  accepted 0, email smtp sent 1 (1000 ms, $0.001), delivered 5,
                     opened 60, clicked 120
  n2 u2 orders c1/B  accepted 10, email smtp retrying 11 (421), sent 13 (3000 ms, $0.001),
                     delivered 20
  n3 u3 marketing c1/A accepted 20, sms twilio failed_over 22 (30003), sms vonage sent 23
                     ($0.0068, 2 segments), delivered 40
  n4 u4 orders c1/B  accepted 30, email smtp failed 35 (550)
  n5 u1 orders       accepted 40, email dead_lettered 40.5 (no email address)
  n6 u5              rejected 50
  n7 u1 marketing    accepted 60, sms deferred 60.5 (sms cap)
  n8 u2              deduplicated 70
  n9 u3 marketing    accepted 80, push held_quiet_hours 80.5, expired 1800
  n10 u4 orders      accepted 90, push fcm token_invalidated 91, failed 91.1 (UNREGISTERED)
globex, a day later:
  g1 u9 alerts       accepted 0, webhook sent 0.2 (200 ms, $0)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.event import DeliveryEvent

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)

#: notification -> (tenant, user, category, campaign, variant, requested at)
REQUESTS: dict[str, tuple[str, str, str | None, str | None, str | None, datetime]] = {
    "n1": ("acme", "u1", "orders", "c1", "A", T0),
    "n2": ("acme", "u2", "orders", "c1", "B", T0 + timedelta(seconds=10)),
    "n3": ("acme", "u3", "marketing", "c1", "A", T0 + timedelta(seconds=20)),
    "n4": ("acme", "u4", "orders", "c1", "B", T0 + timedelta(seconds=30)),
    "n5": ("acme", "u1", "orders", None, None, T0 + timedelta(seconds=40)),
    "n6": ("acme", "u5", None, None, None, T0 + timedelta(seconds=50)),
    "n7": ("acme", "u1", "marketing", None, None, T0 + timedelta(seconds=60)),
    "n8": ("acme", "u2", None, None, None, T0 + timedelta(seconds=70)),
    "n9": ("acme", "u3", "marketing", None, None, T0 + timedelta(seconds=80)),
    "n10": ("acme", "u4", "orders", None, None, T0 + timedelta(seconds=90)),
    "g1": ("globex", "u9", "alerts", None, None, T0 + DAY),
}
EMAIL = {"channel": "email", "provider": "smtp"}
#: (notification, status, seconds after the request, extra fields)
EVENTS: list[tuple[str, str, float, dict[str, Any]]] = [
    ("n1", "accepted", 0, {}),
    ("n1", "sent", 1, {**EMAIL, "latency_ms": 1000.0, "cost_usd": 0.001}),
    ("n1", "delivered", 5, EMAIL),
    ("n1", "opened", 60, EMAIL),
    ("n1", "clicked", 120, EMAIL),
    ("n2", "accepted", 0, {}),
    ("n2", "retrying", 1, {**EMAIL, "attempt": 1, "reason": "421 try later"}),
    ("n2", "sent", 3, {**EMAIL, "attempt": 2, "latency_ms": 3000.0, "cost_usd": 0.001}),
    ("n2", "delivered", 10, EMAIL),
    ("n3", "accepted", 0, {}),
    (
        "n3",
        "failed_over",
        2,
        {"channel": "sms", "provider": "twilio", "reason": "30003 unreachable"},
    ),
    ("n3", "sent", 3, {"channel": "sms", "provider": "vonage", "cost_usd": 0.0068, "segments": 2}),
    ("n3", "delivered", 20, {"channel": "sms", "provider": "vonage"}),
    ("n4", "accepted", 0, {}),
    ("n4", "failed", 5, {**EMAIL, "attempt": 3, "reason": "550 mailbox unavailable"}),
    ("n5", "accepted", 0, {}),
    ("n5", "dead_lettered", 0.5, {"channel": "email", "reason": "no email address"}),
    ("n6", "rejected", 0, {"reason": "recipient.user_id: required"}),
    ("n7", "accepted", 0, {}),
    ("n7", "deferred", 0.5, {"channel": "sms", "reason": "sms cap 3/h"}),
    ("n8", "deduplicated", 0, {"reason": "duplicate id"}),
    ("n9", "accepted", 0, {}),
    ("n9", "held_quiet_hours", 0.5, {"channel": "push", "reason": "22:00-07:00"}),
    ("n9", "expired", 1720, {"channel": "push", "reason": "ttl 1h"}),
    ("n10", "accepted", 0, {}),
    (
        "n10",
        "token_invalidated",
        1,
        {"channel": "push", "provider": "fcm", "reason": "UNREGISTERED"},
    ),
    ("n10", "failed", 1.1, {"channel": "push", "provider": "fcm", "reason": "UNREGISTERED"}),
    ("g1", "accepted", 0, {}),
    (
        "g1",
        "sent",
        0.2,
        {"channel": "webhook", "provider": "webhook", "latency_ms": 200.0, "cost_usd": 0.0},
    ),
]


def seed_events() -> list[dict[str, Any]]:
    """The events above as wire dicts (``DeliveryEvent.model_dump(mode="json")``)."""
    events = []
    for notification, status, after_s, extra in EVENTS:
        tenant, user, category, campaign, variant, requested = REQUESTS[notification]
        fields: dict[str, Any] = {
            "event_id": f"{notification}-{status}-{extra.get('attempt', 0)}",
            "notification_id": notification,
            "tenant_id": tenant,
            "user_id": user,
            "status": status,
            "category": category,
            "campaign_id": campaign,
            "variant": variant,
            "requested_at": requested,
            "occurred_at": requested + timedelta(seconds=after_s),
            **extra,
        }
        events.append(DeliveryEvent(**fields).model_dump(mode="json"))
    return events


# A second, separate set for the experiment and strategy queries (ab_variants,
# strategy_comparison), inserted into its own database so the counts above stay as they are.
# Events after acceptance carry variant and strategy, as the flow's enrich and strategy
# steps set them; `accepted` carries neither.
#
# acme, experiment "welcome", requested 2026-11-22 10:00 UTC onwards:
#   control (strategy immediate)
#     a1  email sent, delivered, opened
#     a2  email sent, delivered; push sent (two messages)
#     a3  email sent, bounced                                   -> failed
#     a4  email suppressed (preferences), no strategy            -> suppressed
#   v2 (strategy sequential)
#     b1  email sent, delivered, opened, clicked
#     b2  email sent, delivered, opened
#     b3  email failed_over, sms sent, delivered
#     b4  email sent, delivered, opened
#     b5  push token_invalidated, failed (no channel left)       -> failed
# globex, experiment "subject" (strategy smart), 50 notifications per variant, each
# email sent and delivered:
#   long   l0..l49: l0..l9 opened
#   short  s0..s49: s0..s19 opened, s0..s4 clicked
AB_T0 = T0 + 2 * DAY
SMS = {"channel": "sms", "provider": "vonage"}
PUSH = {"channel": "push", "provider": "fcm"}
#: notification -> (tenant, "<experiment>:<variant>", strategy, events after acceptance)
AB_NOTIFICATIONS: dict[str, tuple[str, str, str | None, list[tuple[str, dict[str, Any]]]]] = {
    "a1": ("acme", "welcome:control", "immediate",
           [("sent", EMAIL), ("delivered", EMAIL), ("opened", EMAIL)]),
    "a2": ("acme", "welcome:control", "immediate",
           [("sent", EMAIL), ("delivered", EMAIL), ("sent", PUSH)]),
    "a3": ("acme", "welcome:control", "immediate", [("sent", EMAIL), ("bounced", EMAIL)]),
    "a4": ("acme", "welcome:control", None,
           [("suppressed", {"channel": "email", "reason": "opted out of email"})]),
    "b1": ("acme", "welcome:v2", "sequential",
           [("sent", EMAIL), ("delivered", EMAIL), ("opened", EMAIL), ("clicked", EMAIL)]),
    "b2": ("acme", "welcome:v2", "sequential",
           [("sent", EMAIL), ("delivered", EMAIL), ("opened", EMAIL)]),
    "b3": ("acme", "welcome:v2", "sequential",
           [("failed_over", {**EMAIL, "reason": "no receipt"}), ("sent", SMS), ("delivered", SMS)]),
    "b4": ("acme", "welcome:v2", "sequential",
           [("sent", EMAIL), ("delivered", EMAIL), ("opened", EMAIL)]),
    "b5": ("acme", "welcome:v2", "sequential",
           [("token_invalidated", PUSH), ("failed", {"reason": "no channel left"})]),
}  # fmt: skip
for _i in range(50):
    AB_NOTIFICATIONS[f"l{_i}"] = (
        "globex", "subject:long", "smart",
        [("sent", EMAIL), ("delivered", EMAIL)] + ([("opened", EMAIL)] if _i < 10 else []),
    )  # fmt: skip
    AB_NOTIFICATIONS[f"s{_i}"] = (
        "globex", "subject:short", "smart",
        [("sent", EMAIL), ("delivered", EMAIL)]
        + ([("opened", EMAIL)] if _i < 20 else [])
        + ([("clicked", EMAIL)] if _i < 5 else []),
    )  # fmt: skip
#: what each sent message costs
AB_COST_USD = {"email": 0.001, "sms": 0.0079, "push": 0.0}


def ab_events() -> list[dict[str, Any]]:
    """The experiment set above as wire dicts; event ``k`` of a notification at ``k`` s."""
    events = []
    for i, (notification, (tenant, variant, strategy, after)) in enumerate(
        AB_NOTIFICATIONS.items()
    ):
        requested = AB_T0 + timedelta(seconds=i)
        common = {
            "notification_id": notification,
            "tenant_id": tenant,
            "user_id": f"user-{notification}",
            "category": "onboarding",
            "requested_at": requested,
        }
        events.append(
            DeliveryEvent(
                event_id=f"{notification}-accepted", status="accepted", occurred_at=requested,
                **common,
            ).model_dump(mode="json")
        )  # fmt: skip
        for k, (status, extra) in enumerate(after, start=1):
            cost = AB_COST_USD[extra["channel"]] if status == "sent" else None
            event = DeliveryEvent(
                event_id=f"{notification}-{status}-{extra.get('channel', '')}",
                status=status,
                variant=variant,
                strategy=strategy,
                cost_usd=cost,
                occurred_at=requested + timedelta(seconds=k),
                **common,
                **extra,
            )
            events.append(event.model_dump(mode="json"))
    return events
