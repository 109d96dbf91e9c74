"""Generate the checked-in JSON Schema files from the pydantic models."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.event import DeliveryEvent
from schemas.profile import ProfileUpdate, UserProfile
from schemas.request import CampaignRequest, NotificationRequest

SCHEMA_DIR = Path(__file__).parent / "json"
MODELS = {
    "notification_request": NotificationRequest,
    "campaign_request": CampaignRequest,
    "delivery_event": DeliveryEvent,
    "user_profile": UserProfile,
    "profile_update": ProfileUpdate,
}


def render_schemas() -> dict[str, bytes]:
    """File name → JSON Schema bytes (stable key order, trailing newline)."""
    return {
        f"{name}.schema.json": orjson.dumps(
            model.model_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        )
        + b"\n"
        for name, model in MODELS.items()
    }


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, content in render_schemas().items():
        path = directory / filename
        path.write_bytes(content)
        written.append(path)
    return written
