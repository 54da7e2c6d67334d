"""The live wall of a real worker in Chromium: tiles show the KPIs and follow them.

Chromium is Debian's (`.ci/install.sh` installs it), driven by Playwright for
Python through the driver its wheel ships; nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from stream.settings import Settings
from stream.snapshots import watermark_datetime
from tests.integration.conftest import WorkerRun, create_topic, produce, wait_until
from tests.integration.feeds import (
    event_types,
    events_seen,
    produce_records,
    served_differences,
    simulate,
)
from tests.integration.test_kpis_match_reference import arrival_order, count_valid
from tests.reference import reference_kpis

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WALL_WINDOW = "7d"
"""The window the test opens the wall on (`/wall?window=7d`)."""

LOG_START = datetime(2026, 3, 2, 6, tzinfo=UTC)
"""Start of the simulated log: fixed, so that every headline of the window has
a value (six deals won give the sales cycle, for one) on every run."""

UPDATE_SECONDS = 5.0
"""How soon a new event must show on the wall."""

TILES_SCRIPT = """
() => Array.from(document.querySelectorAll("section.tile")).map((tile) => ({
  title: tile.querySelector("h2").textContent,
  headline: tile.querySelector(".headline").textContent,
  facts: Array.from(tile.querySelectorAll(".facts > div")).map(
    (row) => [row.children[0].textContent, row.children[1].textContent]),
}))
"""


# The wall's number formats, written again from docs/feeds.md and the rules
# of Intl.NumberFormat("en") and Number.prototype.toFixed ------------------------


def half_up(value: Decimal, digits: int) -> Decimal:
    """Round to `digits` fraction digits, ties away from zero (ICU, toFixed)."""
    return value.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def shortest(value: float) -> Decimal:
    """Return the shortest decimal that reads back as `value`, as ICU starts."""
    return Decimal(repr(value))


COMPACT_SUFFIXES = ("", "K", "M", "B", "T")


def compact(value: float, prefix: str = "") -> str:
    """Format like Intl's compact notation with at most one fraction digit."""
    sign = "-" if value < 0 else ""
    magnitude = abs(shortest(value))
    step = 0
    while step + 1 < len(COMPACT_SUFFIXES) and magnitude >= 1000 ** (step + 1):
        step += 1
    scaled = half_up(magnitude.scaleb(-3 * step), 1)
    # 999.96 rounds to 1000.0: ICU then shows the next magnitude, "1K".
    if scaled >= 1000 and step + 1 < len(COMPACT_SUFFIXES):
        step += 1
        scaled = half_up(magnitude.scaleb(-3 * step), 1)
    return f"{sign}{prefix}{scaled.normalize():f}{COMPACT_SUFFIXES[step]}"


def grouped(value: float) -> str:
    """Format like Intl's decimal style with no fraction digits."""
    rounded = half_up(shortest(value), 0)
    return f"{rounded:,.0f}"


def wall_text(value: float | None, unit: str, currency: str | None) -> str:
    """Return the text the wall shows for a value of a unit."""
    if value is None:
        return "—"
    if unit == "ratio":
        percent = Decimal(value * 100)
        digits = 0 if abs(percent) >= 100 else 2 if abs(percent) < 1 else 1
        return f"{half_up(percent, digits):f}%"
    if unit == "money":
        symbol = {"EUR": "€", "USD": "$", "GBP": "£"}[currency or "EUR"]
        return compact(value, symbol)
    if unit == "seconds":
        total = math.floor(abs(value) + 0.5)
        days, hours = total // 86400, total % 86400 // 3600
        minutes, seconds = total % 3600 // 60, total % 60
        if days:
            return f"{days}d {hours}h"
        if hours:
            return f"{hours}h {minutes}m"
        if minutes:
            return f"{minutes}m {seconds}s"
        return f"{seconds}s"
    return compact(value) if abs(value) >= 10000 else grouped(value)


def test_wall_formats_follow_the_documented_rules() -> None:
    assert wall_text(0.96213, "ratio", None) == "96.2%"
    assert wall_text(0.004567, "ratio", None) == "0.46%"
    assert wall_text(1.5, "ratio", None) == "150%"
    assert wall_text(1234.56, "money", "EUR") == "€1.2K"
    assert wall_text(-2500.0, "money", "EUR") == "-€2.5K"
    assert wall_text(12.0, "money", "EUR") == "€12"
    assert wall_text(999.96, "money", "EUR") == "€1K"
    assert wall_text(2.35, "money", "EUR") == "€2.4"
    assert wall_text(123456789.0, "money", "EUR") == "€123.5M"
    assert wall_text(99999.0, "count", None) == "100K"
    assert wall_text(1.005, "ratio", None) == "100%"
    assert wall_text(0.01005, "ratio", None) == "1.0%"
    assert wall_text(273600.4, "seconds", None) == "3d 4h"
    assert wall_text(3725.0, "seconds", None) == "1h 2m"
    assert wall_text(1234.0, "count", None) == "1,234"
    assert wall_text(12345.0, "count", None) == "12.3K"
    assert wall_text(None, "count", None) == "—"


# What the wall should show, from GET /kpis -------------------------------------


def shown_value(
    series: dict[str, Any], window: str, dimension_value: str | None
) -> str | None:
    """Return the wall's text for one value of a series, None if it has none."""
    for value in series["values"]:
        if (value["window"], value["dimension_value"]) == (window, dimension_value):
            return wall_text(value["value"], series["unit"], series["currency"])
    return None


def expected_tiles(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return, by tile title, the headline and facts the wall should show.

    A tile shows the headline series in the wall's window (or the KPI's first
    window when it has not that one), overall for a dimensioned KPI, and up to
    three other series that have a value for the same window.
    """
    tiles: dict[str, dict[str, Any]] = {}
    for kpi in listing["kpis"]:
        window = WALL_WINDOW if WALL_WINDOW in kpi["windows"] else kpi["windows"][0]
        overall = "all" if kpi["dimension"] else None
        facts: list[list[str]] = []
        for series in kpi["series"][1:]:
            text = shown_value(series, window, overall)
            if text is not None and len(facts) < 3:
                facts.append([series["help"].removesuffix("."), text])
        tiles[kpi["title"]] = {
            "headline": shown_value(kpi["series"][0], window, overall),
            "facts": facts,
        }
    return tiles


def listing(run: WorkerRun) -> dict[str, Any]:
    response = httpx.get(f"{run.base_url}/kpis", timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def shown_tiles(page: Page) -> dict[str, dict[str, Any]]:
    tiles = await page.evaluate(TILES_SCRIPT)
    return {
        tile["title"]: {"headline": tile["headline"], "facts": tile["facts"]}
        for tile in tiles
    }


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str
) -> None:
    """Await `check()` until it is true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def launch(playwright: Any) -> Browser:
    """Start Debian's Chromium; fail (never skip) when it is not installed."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the wall's browser test needs Debian's"
            " chromium (`apt-get install chromium`, as .ci/install.sh does)"
        )
    browser: Browser = await playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
    )
    return browser


def lead_created(occurred_at: datetime) -> tuple[bytes, bytes]:
    """Return the key and value of a valid lead.created record."""
    lead_id = f"lead-wall-{uuid.uuid4().hex[:12]}"
    event = {
        "event_id": f"evt-{uuid.uuid4().hex}",
        "type": "lead.created",
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
        "schema_version": 1,
        "lead_id": lead_id,
        "channel": "organic",
    }
    return lead_id.encode(), json.dumps(event).encode()


async def test_wall_shows_the_kpis_and_follows_a_new_event(
    stack_settings: Settings, worker_run: WorkerRun, tmp_path: Path
) -> None:
    bootstrap = stack_settings.kafka_bootstrap
    records = simulate(seed=41, events=2500, days=10, start=LOG_START)
    valid = count_valid(records, stack_settings)
    types = event_types(records)

    await create_topic(bootstrap, worker_run.events_topic, 2)
    worker_run.start()
    await produce_records(bootstrap, worker_run.events_topic, records)
    wait_until(
        lambda: events_seen(worker_run.metrics_text(), types) == valid,
        timeout=60,
        what=f"{valid} valid events processed",
    )
    expected = reference_kpis(
        await arrival_order(bootstrap, worker_run, valid), stack_settings
    )
    assert expected.watermark_ms is not None
    wait_until(
        lambda: not served_differences(worker_run, expected),
        timeout=30,
        what="GET /kpis equal to the reference",
    )
    before = expected_tiles(listing(worker_run))
    final = watermark_datetime(expected.watermark_ms)
    lead_tile = "Lead conversion rate"
    # The formats under test have values to show: percent, money, duration.
    for title in (
        lead_tile,
        "Margin",
        "Customer acquisition cost",
        "Sales-cycle length",
    ):
        assert before[title]["headline"] != "—", title

    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 900})
            await page.goto(f"{worker_run.base_url}/wall?window={WALL_WINDOW}")
            await page.wait_for_selector("#connection.live", timeout=15_000)

            async def shows(tiles: dict[str, dict[str, Any]]) -> bool:
                return await shown_tiles(page) == tiles

            await eventually(lambda: shows(before), 10, "the tiles of GET /kpis")
            time_before = await page.text_content("#watermark")
            await page.screenshot(path=str(tmp_path / "wall.png"))

            # A new lead at the watermark: the lead tile changes, the time not.
            key, value = lead_created(final)
            produced = time.monotonic()
            await produce(bootstrap, worker_run.events_topic, [value], [key])

            async def lead_tile_moved() -> bool:
                return (await shown_tiles(page))[lead_tile] != before[lead_tile]

            await eventually(lead_tile_moved, UPDATE_SECONDS, "the lead tile to change")
            latency = time.monotonic() - produced
            after: dict[str, dict[str, Any]] = {}

            async def shows_the_listing() -> bool:
                nonlocal after
                after = expected_tiles(listing(worker_run))
                return await shows(after)

            await eventually(shows_the_listing, 5, "the tiles of GET /kpis again")
            time_after = await page.text_content("#watermark")
            await page.screenshot(path=str(tmp_path / "wall-after.png"))
        finally:
            await browser.close()

    assert time_before == time_after == final.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert latency < UPDATE_SECONDS
    # One more lead created in the window, none more converted.
    facts = {
        label: int(text.replace(",", "")) for label, text in before[lead_tile]["facts"]
    }
    created, converted = facts["Leads created"], facts["Leads converted"]
    assert after[lead_tile] == {
        "headline": wall_text(converted / (created + 1), "ratio", None),
        "facts": [
            ["Leads created", f"{created + 1:,}"],
            ["Leads converted", f"{converted:,}"],
        ],
    }
    assert before[lead_tile]["headline"] == wall_text(
        converted / created, "ratio", None
    )
