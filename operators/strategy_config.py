"""``StrategyConfig``: delivery-strategy settings, parsed from JSON (``docs/strategies.md``).

::

    {"default": "immediate",
     "tenants": {"acme": {"strategy": "sequential", "categories": {"marketing": "smart"}},
                 "globex": "cost"},
     "costs": {"sms": 0.0079, "voice": 0.013},
     "sequential": {"timeout_s": 300, "timeouts": {"email": 600},
                    "order": ["push", "email", "sms"], "success_on_sent": []},
     "smart": {"explore_fraction": 0.1, "max_delay_s": 21600, "min_observations": 5},
     "cost": {"min_rate": 0.02},
     "priority": {"low": "cheapest",
                  "digest": {"key": "low_priority", "window_s": 3600, "max_items": 50}},
     "limits": {"max_pending": 100, "max_delayed": 100},
     "engagement": {"track": false, "ttl_s": 7776000, "delivered_as_open": []}}

Every section and key is optional; unknown keys and bad values raise ``ValueError`` naming
them. ``costs`` are USD per message and merge over ``DEFAULT_COSTS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from operators.engagement import CHANNELS

STRATEGIES = ("immediate", "sequential", "priority", "cost", "smart")
IMMEDIATE, SEQUENTIAL, PRIORITY, COST, SMART = STRATEGIES
#: USD per message.
DEFAULT_COSTS = {
    "in_app": 0.0,
    "push": 0.0,
    "webhook": 0.0,
    "email": 0.0001,
    "sms": 0.0079,
    "voice": 0.013,
}
#: Cost ties: the channel likely to reach the user first wins.
SPEED_RANK = {"push": 0, "in_app": 1, "sms": 2, "voice": 3, "email": 4, "webhook": 5}
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MAX_DELAY_S = 6 * 3600.0
DEFAULT_LOW_DIGEST = {"key": "low_priority", "window_s": 3600, "max_items": 50}
LOW_ACTIONS = ("cheapest", "digest")
_SECTIONS = {
    "default": None,
    "tenants": None,
    "costs": None,
    "sequential": {"timeout_s", "timeouts", "order", "success_on_sent"},
    "smart": {"explore_fraction", "max_delay_s", "min_observations"},
    "cost": {"min_rate"},
    "priority": {"low", "digest"},
    "limits": {"max_pending", "max_delayed"},
    "engagement": {"track", "ttl_s", "delivered_as_open"},
}


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    default: str = IMMEDIATE
    tenants: dict[str, str] = field(default_factory=dict)
    categories: dict[tuple[str, str], str] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_COSTS))
    timeout_s: float = DEFAULT_TIMEOUT_S
    timeouts: dict[str, float] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # sequential order without a request order; () = cheapest first
    success_on_sent: frozenset[str] = frozenset()  # channels where `sent` counts as delivered
    explore_fraction: float = 0.1
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    min_observations: int = 5
    min_rate: float = 0.02
    low_action: str = "cheapest"
    low_digest: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_LOW_DIGEST))
    max_pending: int = 100
    max_delayed: int = 100
    track_engagement: bool = False
    engagement_ttl_s: float = 90 * 86400.0
    delivered_as_open: frozenset[str] = frozenset()  # channels without open receipts (sms)

    def timeout_for(self, channel: str) -> float:
        return self.timeouts.get(channel, self.timeout_s)

    def cost_rank(self, channel: str) -> tuple[float, int]:
        """Sort key: cheapest first, then fastest."""
        return (self.costs.get(channel, 0.0), SPEED_RANK.get(channel, len(SPEED_RANK)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> StrategyConfig:
        """Parse the JSON config (module docstring); raises ``ValueError`` naming the problem."""
        d = d or {}
        _keys(d, set(_SECTIONS), "strategies")
        for name, allowed in _SECTIONS.items():
            if allowed is not None and name in d:
                _keys(d[name], allowed, name)
        tenants, categories = _tenants(d.get("tenants") or {})
        seq, smart = d.get("sequential", {}), d.get("smart", {})
        priority, limits = d.get("priority", {}), d.get("limits", {})
        engagement = d.get("engagement", {})
        costs = dict(DEFAULT_COSTS)
        for channel, cost in _mapping(d.get("costs") or {}, "costs").items():
            costs[_channel(channel, "costs")] = _number(cost, f"costs.{channel}", 0, 1000)
        timeouts = {
            _channel(c, "sequential.timeouts"): _number(t, f"sequential.timeouts.{c}", 1, 86400)
            for c, t in _mapping(seq.get("timeouts") or {}, "sequential.timeouts").items()
        }
        low = priority.get("low", "cheapest")
        if low not in LOW_ACTIONS:
            raise ValueError(f"priority.low must be one of {LOW_ACTIONS}, got {low!r}")
        digest = {**DEFAULT_LOW_DIGEST, **_mapping(priority.get("digest") or {}, "priority.digest")}
        _keys(digest, set(DEFAULT_LOW_DIGEST), "priority.digest")
        if not isinstance(digest["key"], str) or not digest["key"]:
            raise ValueError("priority.digest.key must be a non-empty string")
        _number(digest["window_s"], "priority.digest.window_s", 1, 7 * 86400)
        max_items = digest["max_items"]
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(
                f"priority.digest.max_items: expected a positive integer, got {max_items!r}"
            )
        track = engagement.get("track", False)
        if not isinstance(track, bool):
            raise ValueError(f"engagement.track must be true or false, got {track!r}")
        return cls(
            default=_strategy(d.get("default", IMMEDIATE), "default"),
            tenants=tenants,
            categories=categories,
            costs=costs,
            timeout_s=_number(seq.get("timeout_s", DEFAULT_TIMEOUT_S), "timeout_s", 1, 86400),
            timeouts=timeouts,
            order=tuple(_channel(c, "sequential.order") for c in seq.get("order") or ()),
            success_on_sent=frozenset(
                _channel(c, "sequential.success_on_sent") for c in seq.get("success_on_sent") or ()
            ),
            explore_fraction=_number(
                smart.get("explore_fraction", 0.1), "smart.explore_fraction", 0, 1
            ),
            max_delay_s=_number(
                smart.get("max_delay_s", DEFAULT_MAX_DELAY_S), "smart.max_delay_s", 0, 86400
            ),
            min_observations=int(
                _number(smart.get("min_observations", 5), "smart.min_observations", 0, 10_000)
            ),
            min_rate=_number(d.get("cost", {}).get("min_rate", 0.02), "cost.min_rate", 0, 1),
            low_action=low,
            low_digest=digest,
            max_pending=int(_number(limits.get("max_pending", 100), "max_pending", 1, 1e6)),
            max_delayed=int(_number(limits.get("max_delayed", 100), "max_delayed", 1, 1e6)),
            track_engagement=track,
            engagement_ttl_s=_number(
                engagement.get("ttl_s", 90 * 86400.0), "engagement.ttl_s", 3600, 10 * 365 * 86400
            ),
            delivered_as_open=frozenset(
                _channel(c, "engagement.delivered_as_open")
                for c in engagement.get("delivered_as_open") or ()
            ),
        )


def _tenants(raw: Any) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    tenants: dict[str, str] = {}
    categories: dict[tuple[str, str], str] = {}
    for tenant, spec in _mapping(raw, "tenants").items():
        where = f"tenants.{tenant}"
        if isinstance(spec, str):
            tenants[tenant] = _strategy(spec, where)
            continue
        _keys(spec, {"strategy", "categories"}, where)
        if "strategy" in spec:
            tenants[tenant] = _strategy(spec["strategy"], f"{where}.strategy")
        for category, name in _mapping(spec.get("categories") or {}, where).items():
            categories[(tenant, category)] = _strategy(name, f"{where}.categories.{category}")
    return tenants, categories


def _keys(d: Any, allowed: set[str], where: str) -> None:
    unknown = set(_mapping(d, where)) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def _mapping(d: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    return d


def _strategy(name: Any, where: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(f"{where}: unknown strategy {name!r} (one of {', '.join(STRATEGIES)})")
    return name


def _channel(name: Any, where: str) -> str:
    if name not in CHANNELS:
        raise ValueError(f"{where}: unknown channel {name!r} (one of {', '.join(CHANNELS)})")
    return name


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{where}: expected a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)
