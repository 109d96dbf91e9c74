"""``notiflow stats`` tables and ``--report``: real charts from the seeded events in chDB."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from PIL import Image, ImageStat
from rich.console import Console

from notiflow import clickhouse as ch
from notiflow.kafka.clickhouse_sink import backfill_rollups
from notiflow.report import LATENCY_PNG, OUTCOMES_PNG, THROUGHPUT_PNG, write_report
from notiflow.stats import render_details
from tests.analytics.seed import T0, seed_events

CHARTS = (THROUGHPUT_PNG, OUTCOMES_PNG, LATENCY_PNG)


@pytest.fixture(scope="module")
def seeded(client: Client) -> str:
    name = "analytics_report"
    ch.migrate(client, name)
    ch.insert_events(client, name, seed_events())
    backfill_rollups(client, name)
    return name


def assert_real_chart(path: Path) -> None:
    """A PNG of a sensible size with drawing on it, not an empty canvas."""
    assert path.stat().st_size > 10_000, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= 800 and height >= 250, (path, image.size)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1_000_000) or []
        assert len(colours) > 50, path  # lines, bars, text: not a blank canvas
        assert max(ImageStat.Stat(rgb).stddev) > 10, path
        white = max(count for count, colour in colours if colour == (255, 255, 255))
        assert white < 0.97 * width * height, path


def test_report_writes_charts_and_a_page_that_shows_them(
    client: Client, seeded: str, tmp_path: Path
) -> None:
    index = write_report(client, seeded, tmp_path / "report")
    assert index == tmp_path / "report" / "index.html"
    for chart in CHARTS:
        assert_real_chart(index.parent / chart)
    page = index.read_text()
    assert set(re.findall(r'<img src="([^"]+)"', page)) == set(CHARTS)
    assert "Delivery funnel" in page and "Provider outcomes" in page
    assert "<td>smtp</td><td>3</td><td>2</td>" in page  # funnel: accepted 3, sent 2
    assert "<td>events</td><td>29</td>" in page
    assert "66.7%" in page  # rates as percentages


def test_report_filters_and_empty_results(client: Client, seeded: str, tmp_path: Path) -> None:
    filtered = write_report(client, seeded, tmp_path / "acme", since=T0, tenant="acme")
    assert "tenant acme" in filtered.read_text()
    assert "<td>events</td><td>27</td>" in filtered.read_text()
    empty = write_report(client, seeded, tmp_path / "none", tenant="nobody")
    for chart in CHARTS:  # still valid images, saying there is no data
        with Image.open(empty.parent / chart) as image:
            assert image.size[0] >= 800
    assert "<td>events</td><td>0</td>" in empty.read_text()


def test_stats_details_tables(client: Client, seeded: str) -> None:
    console = Console(record=True, width=200, color_system=None)
    render_details(client, seeded, console, tenant="acme", channel="email")
    text = console.export_text()
    assert "Delivery funnel" in text and "Provider outcomes" in text
    funnel = next(line for line in text.splitlines() if "smtp" in line and "66.7%" in line)
    assert re.sub(r"\s+", " ", funnel).startswith("│ email │ smtp │ 3 │ 2 │ 2 │ 1 │ 1 │")
    quiet = Console(record=True, width=200, color_system=None)
    render_details(client, seeded, quiet, tenant="nobody")
    assert quiet.export_text() == ""
