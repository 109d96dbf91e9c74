"""Load generator: a realistic, repeatable mix of requests for the ingest topic.

Users are drawn Zipf-like (a continuous power law over ranks 1..N, exponent ``zipf_s``) from a
population (default 1M); each user belongs to one tenant. The mix has explicit channels (one,
sometimes two), templates and inline content, priorities, ~4 % id duplicates and ~1 % content
duplicates, ~1 % malformed records, scheduled requests (``send_at`` 1–24 h ahead), recipients in
their quiet hours, digest pairs and small campaigns. Records are generated in self-contained
blocks (a duplicate's original is in its block), so any whole number of blocks is a valid
workload and its ``Expectation`` is the sum of its blocks'.

No ``created_at`` is set: the engine takes the request time from the Kafka message timestamp,
which ``produce`` sets (open loop: the *intended* send time, so a late producer cannot hide
latency), making produce → ``sent`` latency measurable from the events.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from notiflow.workload import MALFORMED_SAMPLES

#: Statuses that end one expected unit (a request, or one channel of a request) within a run.
TERMINAL = frozenset(
    {
        "sent",
        "failed",
        "dead_lettered",
        "rate_limited",
        "deferred",
        "held_quiet_hours",
        "token_invalidated",
        "expired",
        "rejected",
        "deduplicated",
        "scheduled",
        "digested",
    }
)
TENANTS = ("acme",) * 6 + ("globex",) * 3 + ("initech",)  # by user rank % 10
CATEGORIES = ("orders", "account", "security", "marketing")
PRIORITIES = ("normal",) * 40 + ("high",) * 5 + ("low",) * 4 + ("critical",)


@dataclass(frozen=True)
class Mix:
    """What the generated traffic looks like. Fractions are per record."""

    users: int = 1_000_000
    zipf_s: float = 1.0
    channels: tuple[tuple[str, float], ...] = (("email", 0.7), ("webhook", 0.3))
    multi_channel: float = 0.15
    duplicate: float = 0.04
    content_duplicate: float = 0.01
    malformed: float = 0.01
    scheduled: float = 0.01
    quiet_hours: float = 0.005
    digest: float = 0.01
    campaign: float = 0.0005
    campaign_size: int = 50
    inline_content: float = 0.2
    block: int = 1000
    seed: int = 42


@dataclass
class Expectation:
    """What a correct engine reports for a set of records (sums over blocks)."""

    records: int = 0
    malformed: int = 0
    id_duplicates: int = 0
    content_duplicates: int = 0
    scheduled: int = 0
    quiet: int = 0
    digest_items: int = 0
    campaigns: int = 0
    campaign_notes: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)

    @property
    def units(self) -> int:
        """Terminal events expected: one per request outcome or per channel delivery."""
        return (
            self.malformed
            + self.id_duplicates
            + self.content_duplicates
            + self.scheduled
            + self.quiet
            + self.digest_items
            + sum(self.deliveries.values())
        )

    def add(self, other: Expectation) -> None:
        for name in self.__dataclass_fields__:
            if name != "deliveries":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.deliveries.update(other.deliveries)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {n: getattr(self, n) for n in self.__dataclass_fields__}
        out["deliveries"] = dict(self.deliveries)
        out["units"] = self.units
        return out


Record = tuple[bytes | None, bytes]


@dataclass
class Block:
    records: list[Record]
    expect: Expectation


@dataclass
class Workload:
    blocks: list[Block]

    def take(self, start: int, count: int) -> tuple[list[Record], Expectation]:
        """Records and expectation of ``count`` blocks from block ``start``."""
        records: list[Record] = []
        expect = Expectation()
        for block in self.blocks[start : start + count]:
            records += block.records
            expect.add(block.expect)
        return records, expect


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _quiet_window(now: float) -> str:
    """A daily UTC window from an hour before ``now`` to three hours after it."""
    start = datetime.fromtimestamp(now - 3600, UTC)
    end = datetime.fromtimestamp(now + 3 * 3600, UTC)
    return f"{start:%H:%M}-{end:%H:%M}"


class _BlockGen:
    """Generate one block; ``rng`` is seeded per block so blocks are independent."""

    def __init__(self, mix: Mix, index: int, prefix: str, webhook_url: str, now: float) -> None:
        self.mix, self.index, self.prefix = mix, index, prefix
        self.webhook_url, self.now = webhook_url, now
        self.rng = random.Random(mix.seed * 1_000_003 + index)
        self.names = [c for c, _ in mix.channels]
        self.weights = [w for _, w in mix.channels]
        self.records: list[Record] = []
        self.expect = Expectation()
        self.originals: list[tuple[bytes, dict]] = []
        self.serial = 0

    def rank(self) -> int:
        n, s, u = self.mix.users, self.mix.zipf_s, self.rng.random()
        if abs(s - 1.0) < 1e-9:
            x = (n + 1) ** u
        else:
            x = (1 + u * ((n + 1) ** (1 - s) - 1)) ** (1 / (1 - s))
        return min(n, max(1, int(x)))

    def recipient(self, rank: int, tenant: str, channels: Sequence[str]) -> dict:
        uid = f"u{rank:07d}"
        out: dict = {"user_id": uid, "email": f"{uid}@{tenant}.example.test"}
        if "webhook" in channels:
            out["webhook_url"] = f"{self.webhook_url}/{tenant}"
        if "sms" in channels or "voice" in channels:
            out["phone"] = f"+1555{rank:07d}"
        if "push" in channels:
            out["push_tokens"] = [{"platform": "fcm", "token": f"tok-{rank}"}]
        return out

    def channels(self) -> list[str]:
        first = self.rng.choices(self.names, self.weights)[0]
        if len(self.names) > 1 and self.rng.random() < self.mix.multi_channel:
            second = self.rng.choices(self.names, self.weights)[0]
            if second != first:
                return [first, second]
        return [first]

    def request(self, *, critical_ok: bool = True) -> tuple[bytes, dict]:
        rng, rank = self.rng, self.rank()
        tenant, channels = TENANTS[rank % 10], self.channels()
        self.serial += 1
        order = f"{self.index}-{self.serial}"
        priority = rng.choice(PRIORITIES)
        if priority == "critical" and not critical_ok:
            priority = "normal"
        body: dict = {
            "id": f"{self.prefix}-{order}",
            "tenant_id": tenant,
            "recipient": self.recipient(rank, tenant, channels),
            "category": rng.choice(CATEGORIES),
            "priority": priority,
            "channels": channels,
            "data": {"name": f"User {rank}", "order_id": order},
        }
        if rng.random() < self.mix.inline_content:
            body["content"] = {
                "email": {"subject": "Code $order_id", "body": "Hi $name, code $order_id."},
                "webhook": {"body": "code $order_id", "data": {"order": order}},
            }
        else:
            body["template"] = rng.choice(("order_shipped", "welcome"))
        return f"{tenant}/{body['recipient']['user_id']}".encode(), body

    def emit(self, key: bytes | None, body: dict | bytes) -> None:
        value = body if isinstance(body, bytes) else orjson.dumps(body)
        self.records.append((key, value))

    def deliveries(self, channels: Iterable[str], times: int = 1) -> None:
        for channel in channels:
            self.expect.deliveries[channel] += times

    def one(self) -> None:
        mix, rng, e = self.mix, self.rng, self.expect
        r = rng.random()
        kind = "regular"
        for name, p in (
            ("malformed", mix.malformed),
            ("duplicate", mix.duplicate),
            ("content_duplicate", mix.content_duplicate),
            ("scheduled", mix.scheduled),
            ("quiet", mix.quiet_hours),
            ("digest", mix.digest / 2),  # a pair: two records
            ("campaign", mix.campaign),
        ):
            if r < p:
                kind = name
                break
            r -= p
        if kind == "malformed":
            e.malformed += 1
            return self.emit(None, rng.choice(MALFORMED_SAMPLES))
        if kind in ("duplicate", "content_duplicate") and self.originals:
            key, original = rng.choice(self.originals[-200:])
            if kind == "duplicate":
                e.id_duplicates += 1
                return self.emit(key, original)
            e.content_duplicates += 1
            self.serial += 1
            return self.emit(key, {**original, "id": f"{self.prefix}-{self.index}-{self.serial}c"})
        if kind == "campaign":
            return self.campaign()
        key, body = self.request(critical_ok=kind != "quiet")
        if kind == "scheduled":
            e.scheduled += 1
            body["send_at"] = _iso(self.now + rng.uniform(3600, 86400))
        elif kind == "quiet":
            e.quiet += 1
            body["recipient"].update(quiet_hours=_quiet_window(self.now), timezone="UTC")
        elif kind == "digest":
            spec = {"key": f"dg-{self.index}-{self.serial}", "window_s": 3600, "max_items": 2}
            data = {**body["data"], "order_id": body["data"]["order_id"] + "b"}
            second = {**body, "id": body["id"] + "b", "data": data}
            e.digest_items += 2
            self.deliveries(body["channels"])
            self.emit(key, {**body, "digest": spec})
            return self.emit(key, {**second, "digest": spec})
        else:
            self.deliveries(body["channels"])
            if body["priority"] != "critical":
                self.originals.append((key, body))
        self.emit(key, body)
        return None

    def campaign(self) -> None:
        rank = self.rank()
        tenant, channels = TENANTS[rank % 10], self.channels()
        self.serial += 1
        cid = f"{self.prefix}-c{self.index}-{self.serial}"
        ranks = list(dict.fromkeys(self.rank() for _ in range(self.mix.campaign_size)))
        body = {
            "campaign_id": cid,
            "tenant_id": tenant,
            "audience": {"user_ids": [self.recipient(r, tenant, channels) for r in ranks]},
            "category": "marketing",
            "priority": "low",
            "channels": channels,
            "template": "welcome",
            "data": {"name": "there", "campaign": cid},
        }
        self.expect.campaigns += 1
        self.expect.campaign_notes += len(ranks)
        self.deliveries(channels, len(ranks))
        self.emit(f"{tenant}/{cid}".encode(), body)

    def build(self) -> Block:
        while len(self.records) < self.mix.block:
            self.one()
        self.expect.records = len(self.records)
        return Block(self.records, self.expect)


def generate(
    mix: Mix, blocks: int, webhook_url: str, *, prefix: str = "b", now: float | None = None
) -> Workload:
    """``blocks`` blocks of about ``mix.block`` records each (deterministic for a seed)."""
    moment = time.time() if now is None else now
    return Workload([_BlockGen(mix, i, prefix, webhook_url, moment).build() for i in range(blocks)])


def parse_channels(text: str) -> tuple[tuple[str, float], ...]:
    """``"email=0.7,webhook=0.3"`` → ``(("email", 0.7), ("webhook", 0.3))``."""
    pairs = []
    for part in text.split(","):
        name, _, weight = part.partition("=")
        pairs.append((name.strip(), float(weight or 1)))
    return tuple(pairs)
