"""State stays bounded: 1,000,000 distinct users through the per-user pipeline.

Simulates what the Bytewax keyed operator does with ``UserLogic``: one state per key, a timer
at ``next_due``, the state discarded when ``is_empty``. Users arrive at a steady rate over four
simulated hours with a one-hour idempotency window, so at most about a quarter of them may be
alive at once, and none once every window has passed. Prints the bytes per live user.
"""

from __future__ import annotations

import gc
import heapq
import pickle
import tracemalloc

from operators.user_pipeline import UserState
from tests.operators.test_user_pipeline import T0, note, pipeline

USERS = 1_000_000
SPAN_S = 4 * 3600
WINDOW_S = 3600


def test_million_distinct_users_keep_state_bounded():
    p = pipeline(idempotency_window_s=WINDOW_S)
    template = note(0, channels=["email"])
    states: dict[str, UserState] = {}
    timers: list[tuple[float, str]] = []
    peak_live = 0

    def fire(until: float) -> None:
        while timers and timers[0][0] <= until:
            due, key = heapq.heappop(timers)
            state = states.get(key)
            if state is None or p.next_due(state) != due:
                continue  # stale timer (re-armed since)
            p.on_due(state, due)
            if state.is_empty():
                del states[key]
            else:
                heapq.heappush(timers, (p.next_due(state), key))

    for i in range(USERS):
        now = T0 + i * SPAN_S / USERS
        fire(now)
        key = f"acme/user-{i}"
        state = states[key] = UserState()
        p.on_item(
            state,
            {**template, "id": f"n{i}", "key": key, "user_id": f"user-{i}", "source": f"req/0/{i}"},
            now,
        )
        heapq.heappush(timers, (p.next_due(state), key))
        if i % 10_000 == 0:
            peak_live = max(peak_live, len(states))
    expected_live = USERS * WINDOW_S / SPAN_S
    assert expected_live * 0.95 < peak_live <= expected_live * 1.01

    sample = list(states.values())[:20_000]  # what a live user costs, measured
    per_user_pickle = sum(len(pickle.dumps(s)) for s in sample) / len(sample)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    copies = [pickle.loads(pickle.dumps(s)) for s in sample]
    per_user_bytes = (tracemalloc.get_traced_memory()[0] - before) / len(copies)
    tracemalloc.stop()
    del copies

    fire(T0 + SPAN_S + WINDOW_S + 1)  # every window has passed
    gc.collect()
    assert states == {} and timers == []
    assert per_user_bytes < 2_000 and per_user_pickle < 600
    print(
        f"\n{USERS:,} users: peak {peak_live:,} live states, ~{per_user_bytes:.0f} B in memory "
        f"and {per_user_pickle:.0f} B snapshotted per live user "
        f"(~{peak_live * per_user_bytes / 2**20:.0f} MiB at peak); 0 after the windows"
    )
