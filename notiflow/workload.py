"""Sample workloads: valid requests with deliberate duplicates and malformed records.

Used by ``make run`` (the demo), the end-to-end tests and the benchmarks, so all three exercise
the same shapes. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import orjson

MALFORMED_SAMPLES: tuple[bytes, ...] = (
    b"this is not json",
    b'{"tenant_id": "acme", "recipient": ',  # truncated
    b"[]",
    b"null",
    b"{}",
    b'{"tenant_id": "acme", "content": {"email": {"body": "x"}}}',  # no recipient
    b'{"tenant_id": "acme", "recipient": {"user_id": "u1"}}',  # no content/template
    b'{"tenant_id": 7, "recipient": {"user_id": "u1"}, "template": "welcome"}',
    b'{"tenant_id": "acme", "recipient": {"user_id": "u1", "email": "not-an-email"},'
    b' "template": "welcome"}',
    b'{"tenant_id": "acme", "recipient": {"user_id": "u1"}, "template": "welcome",'
    b' "priority": "urgent"}',
    b'{"tenant_id": "acme", "recipient": {"user_id": "u1"}, "template": "welcome",'
    b' "channels": ["carrier-pigeon"]}',
    b'{"tenant_id": "acme", "recipient": {"user_id": "u1"}, "template": "welcome",'
    b' "send_at": "tomorrow"}',
    b'{"tenant_id": "acme", "recipient": {"user_id": "u1"}, "template": "welcome",'
    b' "unknown_field": 1}',
    b'{"tenant_id": "acme", "recipient": {"user_id": "u1", "phone": "12"}, "template": "welcome"}',
    b"\xff\xfe\x00garbage",
    b"",
)


@dataclass
class Workload:
    """Records to produce (key, value) plus what a correct engine must report for them."""

    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    unique: int = 0
    duplicates: int = 0
    malformed: int = 0
    emails: int = 0
    webhooks: int = 0


def build_workload(
    total: int,
    *,
    malformed: int = 0,
    duplicates: int = 0,
    webhook_url: str | None = None,
    users: int = 200,
    oversized_bytes: int | None = None,
    seed: int = 7,
    tenant: str = "acme",
) -> Workload:
    """``total`` records: ``malformed`` bad ones, ``duplicates`` repeats of earlier ids.

    Valid requests go by email; every third also by webhook when ``webhook_url`` is given.
    With ``oversized_bytes`` one malformed record is a valid request padded past that size.
    """
    rng = random.Random(seed)
    valid = total - malformed - duplicates
    if valid <= 0 or duplicates > valid:
        raise ValueError("need more valid requests than duplicates")
    work = Workload(unique=valid, duplicates=duplicates, malformed=malformed)
    originals: list[tuple[bytes, bytes]] = []
    for i in range(valid):
        user = f"user-{rng.randrange(users):05d}"
        channels = ["email"]
        recipient = {"user_id": user, "email": f"{user}@example.test"}
        if webhook_url and i % 3 == 0:
            channels.append("webhook")
            recipient["webhook_url"] = webhook_url
            work.webhooks += 1
        work.emails += 1
        request = {
            "id": f"req-{seed}-{i:07d}",
            "tenant_id": tenant,
            "recipient": recipient,
            "category": rng.choice(["account", "orders", "marketing"]),
            "channels": channels,
            "template": "order_shipped" if i % 2 else "welcome",
            "data": {"name": f"User {user[-5:]}", "order_id": f"O-{i}"},
        }
        originals.append((f"{tenant}/{user}".encode(), orjson.dumps(request)))
    bad = list(MALFORMED_SAMPLES)
    if oversized_bytes:
        padded = orjson.loads(originals[0][1])
        padded["id"], padded["data"] = "oversized", {"pad": "x" * oversized_bytes}
        bad[0] = orjson.dumps(padded)
    records: list[tuple[bytes | None, bytes]] = list(originals)
    repeats = [originals[rng.randrange(i + 1)] for i in range(duplicates)]
    for repeat in repeats:  # each repeat goes after its original
        records.append(repeat)
    for i in range(malformed):
        records.insert(rng.randrange(len(records) + 1), (None, bad[i % len(bad)]))
    work.records = records
    return work
