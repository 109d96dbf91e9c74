"""The shared harness of the connector tests: one attempt, one batch, one case shape, one check.

Each provider's module has one table of ``Case``s — what its local provider server is made to
answer, and how the connector must classify that — run by ``cases(TABLE)`` with ``attempt`` and
``check``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pytest

from connectors.base import (
    Connector,
    ConnectorError,
    Delivery,
    InvalidRequest,
    Outcome,
    RetryableError,
    SendResult,
)

__all__ = ["Case", "attempt", "batch", "cases", "check", "local", "nothing"]

ServerT = TypeVar("ServerT")


async def attempt(connector: Connector, delivery: Delivery) -> SendResult | ConnectorError:
    """One send on an opened connector, closed afterwards; the error is returned, not raised."""
    await connector.open()
    try:
        return await connector.send(delivery)
    except ConnectorError as error:
        return error
    finally:
        await connector.close()


async def batch(connector: Connector, *deliveries: Delivery, concurrency: int = 8) -> list[Outcome]:
    """``send_batch`` on an opened connector, closed afterwards."""
    await connector.open()
    try:
        return await connector.send_batch(deliveries, concurrency)
    finally:
        await connector.close()


@dataclass(frozen=True)
class Case(Generic[ServerT]):
    """What the server is made to do (``arrange``) → the outcome the connector must report.

    On an error, ``status``, ``reason`` (a substring) and ``retry_after`` are checked.
    ``delivery`` and ``connector`` override delivery fields and connector options;
    ``reaches_server=False``: the connector refuses the delivery before sending anything.
    """

    name: str
    arrange: Callable[[ServerT], object]
    outcome: type[SendResult] | type[ConnectorError]
    status: int | None = None
    retry_after: float | None = None
    reason: str = ""
    delivery: dict[str, Any] = field(default_factory=dict)
    connector: dict[str, Any] = field(default_factory=dict)
    reaches_server: bool = True


def cases(table: Sequence[Case[Any]]) -> pytest.MarkDecorator:
    """Parametrize a test's ``case`` argument over ``table``, named by case."""
    return pytest.mark.parametrize("case", table, ids=[case.name for case in table])


def nothing(server: object) -> None:
    """``arrange`` of a case the server answers as the provider would."""


def local(name: str, reason: str, **delivery: Any) -> Case[Any]:
    """A delivery refused before any request: ``InvalidRequest``."""
    return Case(
        name, nothing, InvalidRequest, reason=reason, delivery=delivery, reaches_server=False
    )


def check(
    case: Case[Any],
    outcome: SendResult | ConnectorError,
    received: int,
    *,
    retry_after_abs: float = 0.0,
) -> None:
    """``outcome`` is what ``case`` expects, and the server got one request (``received``),
    or none when the case is refused locally. ``retry_after_abs``: tolerance for waits the
    server computes from the clock."""
    assert isinstance(outcome, case.outcome), outcome
    assert received == (1 if case.reaches_server else 0)
    if isinstance(outcome, ConnectorError):
        assert outcome.status == case.status
        assert case.reason in outcome.reason
    if isinstance(outcome, RetryableError):
        if case.retry_after is None:
            assert outcome.retry_after is None
        else:
            assert outcome.retry_after == pytest.approx(case.retry_after, abs=retry_after_abs)
