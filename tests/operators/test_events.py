from __future__ import annotations

from operators.events import iso_ms, make_event, stable_id
from schemas import DeliveryEvent


def test_event_ids_are_stable_and_distinct():
    assert stable_id("n", "sent", "email", 1) == stable_id("n", "sent", "email", 1)
    assert stable_id("n", "sent", "email", 1) != stable_id("n", "sent", "email", 2)


def test_event_dict_matches_the_wire_schema():
    event = make_event(
        notification_id="n",
        tenant_id="t",
        user_id="u",
        status="sent",
        channel="email",
        provider="smtp",
        requested_at_ms=1000,
        now_ms=1500,
        latency_ms=500.0,
        attempt=1,
        campaign_id="c-1",
    )
    model = DeliveryEvent.model_validate(event)
    assert model.campaign_id == "c-1" and model.latency_ms == 500.0
    assert iso_ms(1000) == "1970-01-01T00:00:01.000Z"
