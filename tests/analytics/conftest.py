"""Real embedded ClickHouse for the analytics tests: one chDB path per module (chDB hosts one
path per process at a time), a fresh migrated database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from notiflow import clickhouse as ch
from notiflow.settings import Settings

_databases = itertools.count()


@pytest.fixture(scope="module")
def ch_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("chdb"),
        clickhouse_url=None,
        metrics_port=0,
        log_level="WARNING",
    )


@pytest.fixture(scope="module")
def client(ch_settings: Settings) -> Iterator[Client]:
    opened = ch.connect(ch_settings)
    yield opened
    opened.close()


@pytest.fixture
def database(client: Client) -> str:
    """A fresh, migrated database."""
    name = f"analytics_{next(_databases)}"
    ch.migrate(client, name)
    return name


@pytest.fixture
def db_settings(ch_settings: Settings, database: str) -> Settings:
    """Settings pointing at this test's database (same chDB path as ``client``)."""
    return ch_settings.model_copy(update={"clickhouse_database": database})
