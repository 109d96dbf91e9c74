"""Flow entry points for the benchmark processes (``python -m bytewax.run TARGET``).

- ``e2e()``: exactly ``flows.orchestrate.build_flow`` — the real connectors, pointed at the
  local stubs by the environment.
- ``orchestrate()``: the same flow with instant in-process providers: every operator, the
  dispatcher, events and DLQ sinks to Kafka, no provider I/O. Its throughput against the null
  pipeline's is the "ratio" target.

Both first apply the experiments named in ``NOTIFLOW_BENCH_EXPERIMENTS`` (see
``benchmarks.experiments``): candidate fixes measured before they land. Unset, nothing is
changed.
"""

from __future__ import annotations

import os
from typing import ClassVar

from bytewax.dataflow import Dataflow

from benchmarks import experiments
from connectors import registry
from connectors.base import Connector, Delivery, SendResult
from notiflow.settings import Settings

#: Channels served instantly (every channel the schema knows).
CHANNELS = ("email", "sms", "push", "in_app", "webhook", "voice")


class NullConnector(Connector):
    """Accepts every delivery at once. Subclassed per channel (``channel`` is a ClassVar)."""

    channel: ClassVar[str] = "email"
    provider: ClassVar[str] = "null"

    async def send(self, delivery: Delivery) -> SendResult:
        return SendResult()


def _connector(channel: str) -> NullConnector:
    cls = type(
        f"Null{channel.title()}Connector",
        (NullConnector,),
        {"channel": channel, "provider": f"null-{channel}"},
    )
    return cls()


def null_connectors(_settings: Settings) -> list[Connector]:
    return [_connector(channel) for channel in CHANNELS]


def _experiments() -> None:
    experiments.apply(os.environ.get("NOTIFLOW_BENCH_EXPERIMENTS", ""))


def e2e() -> Dataflow:
    _experiments()
    from flows.orchestrate import build_flow

    return build_flow()


def orchestrate() -> Dataflow:
    _experiments()
    registry.build_connectors = null_connectors  # read at call time by build_routes
    from flows.orchestrate import build_flow

    return build_flow()
