"""The checked-in JSON Schemas must match the pydantic models (`make schemas`)."""

from __future__ import annotations

import orjson

from schemas import DeliveryEvent, NotificationRequest
from schemas.export import SCHEMA_DIR, render_schemas


def test_json_schemas_are_current():
    for filename, content in render_schemas().items():
        assert (SCHEMA_DIR / filename).read_bytes() == content, f"{filename} drifted"


def test_schemas_describe_the_contracts():
    request = orjson.loads((SCHEMA_DIR / "notification_request.schema.json").read_bytes())
    assert {"tenant_id", "recipient"} <= set(request["required"])
    event = orjson.loads((SCHEMA_DIR / "delivery_event.schema.json").read_bytes())
    assert "event_id" in event["required"]
    assert NotificationRequest.model_json_schema()["title"] == "NotificationRequest"
    assert DeliveryEvent.model_json_schema()["title"] == "DeliveryEvent"
