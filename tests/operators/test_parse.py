from __future__ import annotations

import orjson
import pytest

from notiflow.workload import MALFORMED_SAMPLES
from operators.parse import (
    KIND_EMPTY,
    KIND_INVALID,
    KIND_NOT_JSON,
    KIND_OVERSIZED,
    Rejection,
    parse_request,
)

VALID = {
    "tenant_id": "acme",
    "recipient": {"user_id": "u1", "email": "u1@example.test"},
    "content": {"email": {"subject": "Hi $name", "body": "Hello $name"}},
    "data": {"name": "Ada"},
}


def parse(value: bytes | None, max_bytes: int = 65536):
    return parse_request(
        value, source="req/0/42", timestamp_ms=1_700_000_000_000, max_bytes=max_bytes
    )


def test_valid_request_becomes_internal_notification():
    note = parse(orjson.dumps({**VALID, "id": "n-1", "priority": "high"}))
    assert isinstance(note, dict)
    assert (note["id"], note["key"], note["priority"]) == ("n-1", "acme/u1", "high")
    assert note["requested_at_ms"] == 1_700_000_000_000
    assert note["content"]["email"]["subject"] == "Hi $name"


def test_missing_id_is_derived_from_source_and_stable():
    first, again = parse(orjson.dumps(VALID)), parse(orjson.dumps(VALID))
    other = parse_request(orjson.dumps(VALID), source="req/0/43", timestamp_ms=0, max_bytes=9999)
    assert first["id_generated"] and first["id"] == again["id"] != other["id"]


def test_created_at_is_the_request_time():
    note = parse(orjson.dumps({**VALID, "created_at": "2026-01-01T00:00:00Z"}))
    assert note["requested_at_ms"] == 1_767_225_600_000


@pytest.mark.parametrize(
    ("value", "kind", "fragment"),
    [
        (None, KIND_EMPTY, "empty"),
        (b"", KIND_EMPTY, "empty"),
        (b"{not json", KIND_NOT_JSON, "not valid JSON"),
        (b"x" * 300, KIND_OVERSIZED, "300 bytes"),
        (b"[]", KIND_INVALID, "(request)"),
        (orjson.dumps({**VALID, "priority": "urgent"}), KIND_INVALID, "priority"),
        (orjson.dumps({**VALID, "recipient": {}}), KIND_INVALID, "recipient.user_id"),
        (
            orjson.dumps({k: v for k, v in VALID.items() if k != "content"}),
            KIND_INVALID,
            "either 'content' or 'template'",
        ),
        (
            orjson.dumps(
                {**VALID, "send_at": "2026-01-02T00:00:00Z", "expires_at": "2026-01-01T00:00:00Z"}
            ),
            KIND_INVALID,
            "expires_at",
        ),
        (orjson.dumps({**VALID, "send_at": "2026-01-02T00:00:00"}), KIND_INVALID, "timezone"),
    ],
)
def test_malformed_input_is_rejected_with_a_reason(value, kind, fragment):
    result = parse(value, max_bytes=299)
    assert isinstance(result, Rejection)
    assert result.kind == kind
    assert fragment in result.reason
    assert result.value == value and result.source == "req/0/42"


def test_rejection_keeps_best_effort_ids():
    result = parse(orjson.dumps({**VALID, "id": "x-1", "priority": "urgent"}))
    assert (result.tenant_id, result.user_id, result.notification_id) == ("acme", "u1", "x-1")


def test_every_sample_malformed_record_is_rejected():
    assert all(isinstance(parse(sample), Rejection) for sample in MALFORMED_SAMPLES)
