from __future__ import annotations

from pathlib import Path

import yaml

from notiflow.config_doc import render_markdown
from notiflow.settings import Settings, env_names, kafka_options_from_env

ROOT = Path(__file__).resolve().parents[2]


def test_unprefixed_service_variables_and_prefixed_ones(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("CLICKHOUSE_URL", "http://ch:8123/db")
    monkeypatch.setenv("NOTIFLOW_PARTITIONS", "12")
    monkeypatch.setenv("NOTIFLOW_TOPIC_PREFIX", "prod.")
    settings = Settings()
    assert settings.kafka_config()["bootstrap.servers"] == "k1:9092,k2:9092"
    assert settings.clickhouse_dsn == "http://ch:8123/db"
    assert settings.partitions == 12
    assert settings.requests_topic == "prod.notifications.requests"


def test_embedded_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert "bootstrap.servers" not in settings.kafka_config()
    assert settings.clickhouse_dsn == f"chdb://{tmp_path.resolve() / 'clickhouse'}"


def test_librdkafka_pass_through_from_env_and_file(monkeypatch, tmp_path):
    config_file = tmp_path / "client.properties"
    config_file.write_text("# SASL\nsecurity.protocol=SASL_SSL\nsasl.username = svc\n")
    monkeypatch.setenv("NOTIFLOW_KAFKA_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("NOTIFLOW_KAFKA_OPT_SASL_MECHANISMS", "SCRAM-SHA-512")
    config = Settings().kafka_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.username"] == "svc"
    assert config["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert kafka_options_from_env({"OTHER": "x"}) == {}


def test_configuration_reference_is_current():
    """docs/configuration.md is generated from the settings (`make docs`)."""
    assert (ROOT / "docs" / "configuration.md").read_text() == render_markdown()


def test_compose_file_only_sets_known_variables():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["notiflow"]["environment"]
    assert set(env) <= env_names(), set(env) - env_names()
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, name
    kafka_env = compose["services"]["kafka"]["environment"]
    assert "broker,controller" in kafka_env["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert (ROOT / "Dockerfile").is_file()
