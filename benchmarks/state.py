"""State memory per active user, measured two ways.

- **In the flow**: the orchestration flow (instant providers, one process) first takes a warm-up
  of distinct users, then ``N`` more distinct users, one email request each; the growth of the
  process's resident set between the two, over ``N``, is what an active user costs (per-user
  state — id and content windows — plus Bytewax's per-key bookkeeping).
- **Model**: the same ``UserPipeline`` state for parsed requests, measured with ``tracemalloc``
  and pickled (what a recovery snapshot stores), as ``tests/operators/test_state_memory.py``
  does.
"""

from __future__ import annotations

import pickle
import time
import tracemalloc
from typing import Any

import orjson

from benchmarks.loadgen import Expectation, Record
from operators.parse import parse_request
from operators.user_pipeline import UserState

MIB = 2**20


def distinct_users(count: int, start: int, prefix: str = "s") -> tuple[list[Record], Expectation]:
    """One email request each for users ``start .. start + count`` (no repeats)."""
    records: list[Record] = []
    for i in range(start, start + count):
        user = f"s{i:08d}"
        body = {
            "id": f"{prefix}-{i}",
            "tenant_id": "acme",
            "recipient": {"user_id": user, "email": f"{user}@acme.example.test"},
            "category": "orders",
            "channels": ["email"],
            "template": "order_shipped",
            "data": {"name": f"User {i}", "order_id": str(i)},
        }
        records.append((f"acme/{user}".encode(), orjson.dumps(body)))
    expect = Expectation(records=count)
    expect.deliveries["email"] = count
    return records, expect


def model_bytes_per_user(users: int = 20_000) -> dict[str, float]:
    """Bytes of ``UserState`` per user after one accepted request (memory and pickled)."""
    from flows.orchestrate import user_pipeline
    from notiflow.settings import Settings

    pipeline = user_pipeline(Settings())
    records, _ = distinct_users(users, 0, prefix="m")
    notes = [
        parse_request(value, source=f"r/0/{i}", timestamp_ms=0, max_bytes=65536)
        for i, (_key, value) in enumerate(records)
    ]
    now = time.time()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    states = []
    for note in notes:
        state = UserState()
        pipeline.on_item(state, note, now)  # type: ignore[arg-type]
        states.append(state)
    in_memory = (tracemalloc.get_traced_memory()[0] - before) / users
    tracemalloc.stop()
    pickled = sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states) / users
    return {"bytes_per_user": round(in_memory), "pickled_bytes_per_user": round(pickled)}


def summarise(result: dict[str, Any], users: int) -> dict[str, Any]:
    """Per-user and per-1M-users figures from the flow run (warm-up, then ``users``)."""
    rss = [
        next(p["rss_mib"] for p in phase["processes"] if p["name"].startswith("orchestrate"))
        for phase in result["phases"]
    ]
    per_user = (rss[-1] - rss[0]) * MIB / users
    model = model_bytes_per_user()
    return {
        "active_users": users,
        "rss_after_warmup_mib": rss[0],
        "rss_after_users_mib": rss[-1],
        "flow_bytes_per_user": round(per_user),
        "flow_mib_per_1m_users": round(per_user * 1_000_000 / MIB),
        "model_bytes_per_user": model["bytes_per_user"],
        "model_mib_per_1m_users": round(model["bytes_per_user"] * 1_000_000 / MIB),
        "snapshot_bytes_per_user": model["pickled_bytes_per_user"],
    }
