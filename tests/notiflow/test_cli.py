"""The CLI against real services: send to the broker, migrate and stats on chDB."""

from __future__ import annotations

import orjson

from notiflow import clickhouse
from notiflow.cli import main
from notiflow.config_doc import render_markdown
from notiflow.kafka.reader import TopicReader
from notiflow.settings import Settings
from operators.events import make_event
from schemas import NotificationRequest


def test_config_markdown_prints_the_reference(capsys):
    assert main(["config", "--markdown"]) == 0
    assert capsys.readouterr().out == render_markdown()


def test_send_from_arguments_and_file(monkeypatch, tmp_path, kafka_config, topics):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_config["bootstrap.servers"])
    monkeypatch.setenv("NOTIFLOW_TOPIC_PREFIX", topics.topic_prefix)
    assert main(["send", "--user", "u1", "--email", "u1@example.test", "--id", "cli-1"]) == 0
    lines = [
        orjson.dumps({"tenant_id": "t", "recipient": {"user_id": f"u{i}"}, "template": "welcome"})
        for i in range(5)
    ]
    (tmp_path / "batch.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert main(["send", "--file", str(tmp_path / "batch.jsonl")]) == 0
    reader = TopicReader(kafka_config, topics.requests_topic)
    assert reader.wait_for(6, 15)
    requests = [NotificationRequest.model_validate_json(m.value()) for m in reader.messages]
    assert {r.id for r in requests} == {"cli-1", None}
    reader.close()


def test_send_without_a_broker_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("NOTIFLOW_DATA_DIR", str(tmp_path))
    assert main(["send", "--user", "u1", "--email", "u1@example.test"]) == 2
    assert "no broker" in capsys.readouterr().out


def test_migrate_then_stats(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    monkeypatch.setenv("NOTIFLOW_DATA_DIR", str(tmp_path))
    assert main(["migrate"]) == 0
    assert "0001" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert "up to date" in capsys.readouterr().out
    settings = Settings()
    client = clickhouse.connect(settings)
    events = [
        make_event(
            notification_id=f"n{i}",
            tenant_id="acme",
            user_id="u",
            status="sent",
            channel="email",
            provider="smtp",
            requested_at_ms=1.7e12,
            now_ms=1.7e12 + 40,
            latency_ms=40.0,
        )
        for i in range(7)
    ]
    clickhouse.insert_events(client, settings.clickhouse_database, events)
    client.close()
    assert main(["stats", "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    assert "email" in out and "7" in out
    assert main(["stats", "--tenant", "nobody"]) == 0
