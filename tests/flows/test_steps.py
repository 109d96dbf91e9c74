"""The flows' step functions: Kafka source errors and bad events reach the DLQ, not the void."""

from __future__ import annotations

import orjson

from flows.analytics import decode_event
from flows.steps import Parser, rejection_event
from notiflow.kafka.source import Record, SourceError
from notiflow.messages import rejection_message
from notiflow.settings import Settings
from operators.events import make_event
from operators.parse import Rejection
from schemas import DeliveryEvent


def test_source_error_becomes_dlq_record_and_rejected_event():
    [rejection] = Parser(Settings())([SourceError("req", 3, 17, "Broker: Offset out of range")])
    assert isinstance(rejection, Rejection) and rejection.kind == "source_error"
    message = rejection_message(rejection)
    headers = dict(message.headers)
    assert headers["notiflow-reason"] == b"Broker: Offset out of range"
    assert (headers["notiflow-source-partition"], headers["notiflow-source-offset"]) == (
        b"3",
        b"17",
    )
    event = DeliveryEvent.model_validate(rejection_event(rejection))
    assert event.status == "rejected" and "source_error" in event.reason


def test_rejected_event_ids_differ_per_source_record():
    a, b = Parser(Settings())(
        [Record("req", 0, 1, None, b"nope", 5, ()), Record("req", 0, 2, None, b"nope", 5, ())]
    )
    assert rejection_event(a)["event_id"] != rejection_event(b)["event_id"]


def test_analytics_decodes_good_events_and_rejects_bad_ones():
    event = make_event(
        notification_id="n",
        tenant_id="t",
        user_id="u",
        status="sent",
        requested_at_ms=1.0,
        now_ms=2.0,
    )
    key, decoded = decode_event(Record("ev", 2, 9, b"t/u", orjson.dumps(event), 1, ()))
    assert key == "2" and decoded == event
    bad = decode_event(Record("ev", 2, 10, None, b'{"event_id": "x"}', 1, ()))
    assert isinstance(bad, Rejection) and "notification_id" in bad.reason
    junk = decode_event(Record("ev", 2, 11, None, b"\x00\x01", 1, ()))
    assert isinstance(junk, Rejection) and "not JSON" in junk.reason
    assert isinstance(decode_event(SourceError("ev", 0, 0, "boom")), Rejection)
