"""Rendering cost per delivery: the built-in templates through ``TemplateStore.render``.

    python benchmarks/templates_bench.py              # 20,000 renders per channel, best of 5
    python benchmarks/templates_bench.py --quick      # smoke mode

Each render is what the planner does per channel of a released notification: resolve the
template files for the tenant, channel and locale, render every part in the sandbox, and
validate the result for the channel. Prints CPU µs per render.
"""

from __future__ import annotations

import argparse
import sys
import time

from operators.templates import TemplateStore

CHANNELS = ("email", "webhook", "sms", "push")


def note(i: int, locale: str) -> dict:
    return {
        "id": f"n{i}",
        "tenant_id": "acme",
        "user_id": f"u{i}",
        "category": "orders",
        "priority": "normal",
        "template": "order_shipped",
        "data": {"name": f"User {i}", "order_id": f"o-{i}"},
        "recipient": {"user_id": f"u{i}", "email": "a@example.org", "locale": locale},
    }


def bench(channel: str, renders: int, repeat: int, locale: str = "en") -> float:
    """Best CPU µs per render of ``renders`` distinct notes on ``channel``."""
    store = TemplateStore()
    notes = [note(i, locale) for i in range(renders)]
    store.render(notes[0], channel)  # compile outside the clock
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for n in notes:
            store.render(n, channel)
        best = min(best, time.process_time() - start)
    return best / renders * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke mode")
    args = parser.parse_args(argv)
    if args.quick:
        args.renders, args.repeat = 200, 1
    for channel in CHANNELS:
        cost = bench(channel, args.renders, args.repeat)
        print(
            f"{channel}: {cost:.1f} µs per render ({args.renders:,} renders, best of {args.repeat})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
