"""Provider failures through the running engine: retried, or dead-lettered, never dropped."""

from __future__ import annotations

import urllib.request
from collections import Counter

import orjson
import pytest

from notiflow.engine import Engine
from notiflow.kafka.reader import TopicReader
from notiflow.producer import produce_all
from notiflow.settings import Settings
from tests.e2e.helpers import wait_for_finals


def _request(
    i: int,
    webhook_url: str | None = None,
    email: str | None = None,
    channels: list[str] | None = None,
) -> tuple[bytes, bytes]:
    recipient = {"user_id": f"u{i}"}
    if email:
        recipient["email"] = email
    if webhook_url:
        recipient["webhook_url"] = webhook_url
    request = {
        "id": f"f-{i}",
        "tenant_id": "acme",
        "recipient": recipient,
        "content": {"email": {"subject": "s", "body": "b"}, "webhook": {"body": "b"}},
    }
    if channels:
        request["channels"] = channels
    return f"acme/u{i}".encode(), orjson.dumps(request)


@pytest.mark.e2e
def test_retry_then_dead_letter(engine_env, smtp, hooks):
    settings = Settings()
    kafka = {"bootstrap.servers": engine_env["KAFKA_BOOTSTRAP_SERVERS"]}
    hooks.status_for_path("/rejects", 400, body={"error": "bad payload"})
    hooks.script([503, 500])  # the first two unscripted-path requests fail, then succeed
    smtp.fail_next(1, code=451)  # one temporary SMTP failure, retried
    records = [
        _request(1, webhook_url=hooks.url("/flaky")),
        _request(2, webhook_url=hooks.url("/rejects")),
        _request(3, email="three@example.test"),
        _request(4, channels=["sms"]),  # no address and no SMS provider yet
    ]
    with Engine(settings) as engine:
        produce_all(kafka, settings.requests_topic, records)
        events = TopicReader(kafka, settings.events_topic)
        dlq = TopicReader(kafka, settings.dlq_topic)
        statuses = wait_for_finals(events, 4, 90, engine)
        assert dlq.wait_for(2, 30)
        assert engine.poll() is None
        metrics_port = int(engine_env["NOTIFLOW_METRICS_PORT"])
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz") as response:
            health = orjson.loads(response.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            metrics_text = response.read().decode()
        events.close()
        dlq.close()

    assert health["status"] == "ok" and health["flow"] == "orchestrate"
    assert 'notiflow_outcomes_total{channel="webhook",status="failed"} 1.0' in metrics_text
    assert "notiflow_outcome_latency_seconds_bucket" in metrics_text
    assert "notiflow_consumer_lag" in metrics_text

    assert statuses["sent"] == 2  # the flaky webhook after two retries, the email after one
    assert statuses["retrying"] == 3
    assert statuses["failed"] == 1
    assert statuses["dead_lettered"] == 1
    by_id = {}
    for message in events.messages:
        event = orjson.loads(message.value())
        by_id.setdefault(event["notification_id"], []).append(event)
    flaky_sent = next(e for e in by_id["f-1"] if e["status"] == "sent")
    assert flaky_sent["attempt"] == 3 and flaky_sent["latency_ms"] > 0
    failed = next(e for e in by_id["f-2"] if e["status"] == "failed")
    assert "400" in failed["reason"]
    assert [e["status"] for e in by_id["f-4"]] == ["accepted", "dead_lettered"]
    assert smtp.count == 1
    assert [r.path for r in hooks.received].count("/flaky") == 3

    letters = [orjson.loads(m.value()) for m in dlq.messages]
    kinds = Counter(letter["kind"] for letter in letters)
    assert kinds == {"delivery_failed": 1, "undeliverable": 1}
    failed_letter = next(x for x in letters if x["kind"] == "delivery_failed")
    assert failed_letter["delivery"]["address"] == hooks.url("/rejects")
    assert failed_letter["provider"] == "webhook"
