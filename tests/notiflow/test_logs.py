from __future__ import annotations

import logging

import orjson

from notiflow.logs import JsonFormatter


def test_json_lines_carry_extras_like_the_notification_id():
    record = logging.LogRecord(
        "connectors.dispatch", logging.WARNING, __file__, 1, "delivery failed", None, None
    )
    record.notification_id = "n-1"
    record.channel = "email"
    line = orjson.loads(JsonFormatter({"process": 0}).format(record))
    assert line["msg"] == "delivery failed" and line["level"] == "warning"
    assert (line["notification_id"], line["channel"], line["process"]) == ("n-1", "email", 0)
