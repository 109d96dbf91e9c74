"""Cost per notification of the profile step (``flows.enrich.Enricher``) against real Redis.

    python benchmarks/profiles_bench.py                      # 100k profiles, batches 1/100/1000
    python benchmarks/profiles_bench.py --profiles 1000000 --notes 50000
    python benchmarks/profiles_bench.py --quick              # smoke mode (small counts)

Starts its own ``redis-server`` (a separate process), imports ``--profiles`` profiles with
``ProfileStore.import_jsonl`` (one MULTI of 1,000 profiles per round trip), then calls the
flow's enrich step on batches of parsed requests (``operators.parse.parse_request``: template
requests naming only a user and the channels email + push, so every address comes from the
profile; 10 % of the users opted out of push, so some notes also yield ``suppressed``
events). Modes, each on its own ``Enricher``:

- ``no Redis``: no ``REDIS_URL`` (experiments, routing and preference rules only): the
  baseline the profile lookup adds to;
- ``cold cache``: the cache cleared first, so every profile is a miss: one pipelined round
  trip (GET + SMEMBERS per user) per batch;
- ``warm cache``: the same users again right after, within the TTL: no round trip;
- ``cache off``: ``profile_cache_ttl_seconds = 0``: one round trip per batch, every time.

Each batch size gets fresh ``Enricher`` instances; the modes run interleaved ``--repeat``
times and the best pass counts (the machine is shared). Reported per batch size: µs per
notification (wall time of the step over the batches, notes parsed beforehand: A/B
assignment, profile lookup and merge, routing, preference rules), CPU µs of this process
(Redis's own CPU not included), Redis round trips per batch (the store's counter) and what
the lookup adds to the wall time over the baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from flows.enrich import Enricher
from notiflow.devservices.redis_server import RedisServer, find_redis_server
from notiflow.settings import Settings
from operators.parse import parse_request

TENANT = "acme"
BATCH_SIZES = (1, 100, 1000)
MODES = ("no Redis", "cold cache", "warm cache", "cache off")
Row = dict[str, Any]


def profile(i: int) -> dict[str, Any]:
    """A realistic profile (~600 bytes stored): addresses, locale, quiet hours, a push token,
    a consent record; every tenth user opted out of push."""
    return {
        "tenant_id": TENANT,
        "user_id": f"u{i}",
        "email": f"user{i}@example.test",
        "phone": f"+1555{i % 10_000_000:07d}",
        "locale": ("en-US", "de-DE", "fr-FR")[i % 3],
        "timezone": ("America/New_York", "Europe/Berlin", "Europe/Paris")[i % 3],
        "quiet_hours": "22:00-07:00",
        "push_tokens": [{"platform": "fcm", "token": f"fcm-token-{i:012d}" * 4, "device_id": "d1"}],
        "opt_outs": {"channels": ["push"] if i % 10 == 0 else [], "categories": ["marketing"]},
        "consents": [
            {"channel": "sms", "granted": True, "at": "2026-01-01T00:00:00Z", "source": "signup"}
        ],
    }


def import_profiles(url: str, count: int, workdir: Path) -> float:
    """Write ``count`` profiles as JSONL and import them; returns profiles per second."""
    from notiflow.profiles import ProfileStore

    path = workdir / "profiles.jsonl"
    with open(path, "wb") as out:
        for i in range(count):
            out.write(orjson.dumps(profile(i)) + b"\n")
    started = time.perf_counter()
    with ProfileStore(url, ttl_s=0) as store:
        result = store.import_jsonl(path)
    elapsed = time.perf_counter() - started
    if result.imported != count:
        raise RuntimeError(f"imported {result.imported} of {count}: {result.errors[:3]}")
    return count / elapsed


def note(i: int, user: int) -> dict[str, Any]:
    """A parsed request for user ``u<user>`` (as the flow's parse step emits it)."""
    value = orjson.dumps(
        {
            "id": f"n{i}",
            "tenant_id": TENANT,
            "recipient": {"user_id": f"u{user}"},
            "category": "orders",
            "channels": ["email", "push"],
            "template": "order_shipped",
            "data": {"order": i},
        }
    )
    parsed = parse_request(value, source=f"requests/0/{i}", timestamp_ms=0, max_bytes=65536)
    if not isinstance(parsed, dict):
        raise RuntimeError(f"benchmark request rejected: {parsed}")
    return parsed


def batches(users: range, size: int) -> Iterator[list[dict[str, Any]]]:
    """Notes for ``users`` (one each), in batches of ``size``."""
    for start in range(users.start, users.stop, size):
        yield [note(u, u) for u in range(start, min(start + size, users.stop))]


def timed(enricher: Enricher, work: list[list[dict[str, Any]]]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, Redis round trips) of the enrich step over
    every batch of ``work``."""
    store = enricher.store
    before = store.lookups if store else 0
    started, cpu = time.perf_counter(), time.process_time()
    for batch in work:
        enricher(batch)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return elapsed, cpu, (store.lookups if store else 0) - before


def run_size(url: str, size: int, notes: int, repeat: int) -> list[Row]:
    """Every mode for one batch size, interleaved ``repeat`` times; the best pass counts."""
    notes = max(size, notes - notes % size)
    work = list(batches(range(notes), size))
    common: dict[str, Any] = {"metrics_port": 0, "log_level": "WARNING"}
    cached = Enricher(Settings(redis_url=url, profile_cache_ttl_seconds=600, **common))
    enrichers = {
        "no Redis": Enricher(Settings(redis_url=None, **common)),
        "cold cache": cached,
        "warm cache": cached,  # the same users again, right after the cold pass
        "cache off": Enricher(Settings(redis_url=url, profile_cache_ttl_seconds=0, **common)),
    }
    best: dict[str, tuple[float, float, int]] = {}
    try:
        for enricher in enrichers.values():
            enricher(work[0])  # warm up: connection, listener, code paths
        for _ in range(repeat):
            for mode, enricher in enrichers.items():
                if mode == "cold cache" and cached.store is not None:
                    cached.store.clear()  # every profile a miss again
                wall, cpu, trips = timed(enricher, work)
                previous = best.get(mode)
                best[mode] = (
                    (wall, cpu, trips)
                    if previous is None
                    else (min(wall, previous[0]), min(cpu, previous[1]), trips)
                )
    finally:
        for enricher in enrichers.values():
            if enricher.store is not None:
                enricher.store.close()
    baseline = best["no Redis"][0] / notes * 1e6
    rows: list[Row] = []
    for mode in MODES:
        wall, cpu, trips = best[mode]
        us = wall / notes * 1e6
        rows.append(
            {
                "batch": size,
                "mode": mode,
                "us_per_note": us,
                "cpu_us_per_note": cpu / notes * 1e6,
                "trips_per_batch": trips / len(work),
                "added_us": us - baseline,
            }
        )
    return rows


def markdown(rows: list[Row]) -> str:
    lines = [
        "| batch | mode | µs / notification | CPU µs / notification | Redis round trips / batch "
        "| added by profiles (µs) |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        added = "—" if r["mode"] == "no Redis" else f"{r['added_us']:,.1f}"
        lines.append(
            f"| {r['batch']:,} | {r['mode']} | {r['us_per_note']:,.1f} | "
            f"{r['cpu_us_per_note']:,.1f} | {r['trips_per_batch']:.2f} | {added} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000, help="profiles imported")
    parser.add_argument("--notes", type=int, default=10_000, help="notifications per mode")
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="comma-separated"
    )
    parser.add_argument("--repeat", type=int, default=3, help="passes per mode; the best counts")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 5k profiles, 1k notes")
    args = parser.parse_args(argv)
    profiles, notes = (5_000, 1_000) if args.quick else (args.profiles, args.notes)
    repeat = 1 if args.quick else args.repeat
    if notes > profiles:
        parser.error("--notes must not exceed --profiles (one profile per notification)")
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    rows: list[Row] = []
    with RedisServer() as server, tempfile.TemporaryDirectory() as workdir:
        rate = import_profiles(server.url, profiles, Path(workdir))
        for size in sizes:
            rows += run_size(server.url, size, notes, repeat)
    print(
        f"profile step, {profiles:,} profiles, {notes:,} notifications per mode, best of {repeat}"
    )
    print(f"redis-server: {find_redis_server()}; import: {rate:,.0f} profiles/s\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
