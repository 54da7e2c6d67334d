"""KPI pages: the JSON documents, the 404 message, the event stream and the wall."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import faust
import jsonschema  # type: ignore[import-untyped]
from aiohttp.test_utils import TestClient, TestServer
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from schemas.api import api_json_schemas
from schemas.kpis import KpiSnapshot
from stream.web import SnapshotBoard, kpis_document, register

EARLY = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATE = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)

KPI_IDS = [
    "lead_conversion",
    "active_customers",
    "first_contact_resolution",
    "crm_roi",
    "customer_churn",
    "email_unsubscribe",
    "channel_conversion",
    "ad_click_through",
    "customer_acquisition_cost",
    "email_open",
    "email_deliverability",
    "newsletter_signup",
    "customer_retention",
    "quota_attainment",
    "lost_deals",
    "sales_cycle",
    "prospect_follow_up",
    "portfolio_growth",
    "quotes_issued",
    "complaints",
    "margin",
]


def snapshot(
    series: str,
    window: str,
    dimension_value: str | None,
    value: float | None,
    *,
    kpi: str,
    unit: str = "count",
    dimension: str | None = None,
    currency: str | None = None,
    watermark: datetime = EARLY,
) -> KpiSnapshot:
    return KpiSnapshot.model_validate(
        {
            "key": f"{series}|{window}|{dimension_value or ''}",
            "kpi": kpi,
            "series": series,
            "window": window,
            "dimension": dimension,
            "dimension_value": dimension_value,
            "value": value,
            "unit": unit,
            "currency": currency,
            "watermark": watermark,
            "definition_version": 1,
            "computed_at": watermark,
        }
    )


SNAPSHOTS = [
    snapshot("lead_conversion", "1h", None, 0.25, kpi="lead_conversion", unit="ratio"),
    snapshot(
        "site_visits",
        "24h",
        "email",
        120.0,
        kpi="channel_conversion",
        dimension="channel",
        watermark=LATE,
    ),
    snapshot(
        "margin", "month", None, 1500.5, kpi="margin", unit="money", currency="EUR"
    ),
]


def latest() -> dict[str, KpiSnapshot]:
    return {s.key: s for s in SNAPSHOTS}


def find(document: dict[str, Any], kpi: str, series: str) -> dict[str, Any]:
    for entry in document["kpis"]:
        if entry["id"] == kpi:
            for candidate in entry["series"]:
                if candidate["id"] == series:
                    return dict(candidate)
    raise AssertionError(f"no series {series} of {kpi} in the document")


def value_of(series: dict[str, Any], key: str) -> dict[str, Any]:
    matches = [v for v in series["values"] if v["key"] == key]
    assert len(matches) == 1, key
    return dict(matches[0])


def test_listing_has_every_kpi_in_catalogue_order() -> None:
    document = kpis_document(latest()).model_dump(mode="json")

    assert [kpi["id"] for kpi in document["kpis"]] == KPI_IDS


def test_listing_has_a_value_for_every_series_window_and_dimension() -> None:
    document = kpis_document({}).model_dump(mode="json")

    keys = [
        value["key"]
        for kpi in document["kpis"]
        for series in kpi["series"]
        for value in series["values"]
    ]
    # 21 KPIs; see stream/catalogue.py for the series, windows and dimensions.
    assert len(keys) == len(set(keys)) == 746
    assert document["watermark"] is None


def test_listing_shows_a_snapshot_at_its_key() -> None:
    document = kpis_document(latest()).model_dump(mode="json")

    value = value_of(
        find(document, "lead_conversion", "lead_conversion"), "lead_conversion|1h|"
    )

    assert value == {
        "key": "lead_conversion|1h|",
        "window": "1h",
        "dimension_value": None,
        "value": 0.25,
        "watermark": "2026-03-01T12:00:00Z",
        "computed_at": "2026-03-01T12:00:00Z",
        "definition_version": 1,
    }


def test_listing_shows_a_series_without_snapshot_as_null() -> None:
    document = kpis_document(latest()).model_dump(mode="json")

    value = value_of(find(document, "crm_roi", "crm_roi"), "crm_roi|7d|")

    assert value["value"] is None
    assert value["watermark"] is None


def test_listing_describes_a_dimensioned_kpi() -> None:
    document = kpis_document(latest()).model_dump(mode="json")
    kpi = next(k for k in document["kpis"] if k["id"] == "channel_conversion")
    visits = find(document, "channel_conversion", "site_visits")

    assert kpi["dimension"] == "channel"
    assert kpi["dimension_values"][:3] == ["all", "organic", "paid_search"]
    assert [s["headline"] for s in kpi["series"]] == [True, False]
    assert value_of(visits, "site_visits|24h|email")["value"] == 120.0
    assert value_of(visits, "site_visits|24h|all")["value"] is None


def test_listing_carries_thresholds_units_and_currency() -> None:
    document = kpis_document(latest()).model_dump(mode="json")
    deliverability = next(
        k for k in document["kpis"] if k["id"] == "email_deliverability"
    )
    margin = find(document, "margin", "margin")

    assert deliverability["threshold"] == {
        "direction": "below",
        "warning": 0.97,
        "critical": 0.95,
    }
    assert deliverability["definition_version"] == 1
    assert margin["unit"] == "money"
    assert margin["currency"] == "EUR"
    assert margin["metric"] == "crm_margin"


def test_listing_watermark_is_the_latest_of_its_values() -> None:
    assert kpis_document(latest()).watermark == LATE


def test_listing_matches_its_published_json_schema() -> None:
    document = kpis_document(latest()).model_dump(mode="json")

    jsonschema.validate(document, api_json_schemas()["api/kpi-listing.json"])


@contextlib.asynccontextmanager
async def served() -> AsyncIterator[tuple[TestClient[Any, Any], SnapshotBoard]]:
    """Serve the pages of a Faust app (not started) from a board of SNAPSHOTS."""
    board = SnapshotBoard()
    board.update(SNAPSHOTS)
    app = faust.App("test-web", broker="kafka://127.0.0.1:9092", web_port=6999)
    register(app, board)
    assert isinstance(app.web, AiohttpWeb)
    async with TestClient(TestServer(app.web.web_app)) as client:
        yield client, board


async def test_get_kpis_answers_the_listing() -> None:
    async with served() as (http, _):
        response = await http.get("/kpis")
        body = await response.json()

    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert [kpi["id"] for kpi in body["kpis"]] == KPI_IDS
    assert body["watermark"] == "2026-03-01T12:05:00Z"


async def test_get_one_kpi_answers_its_document() -> None:
    async with served() as (http, _):
        response = await http.get("/kpis/margin")
        body = await response.json()

    assert response.status == 200
    jsonschema.validate(body, api_json_schemas()["api/kpi-document.json"])
    assert body["kpi"]["id"] == "margin"
    assert body["watermark"] == "2026-03-01T12:00:00Z"
    assert [s["id"] for s in body["kpi"]["series"]] == [
        "margin",
        "margin_rate",
        "revenue",
    ]


async def test_unknown_kpi_is_a_404_naming_the_known_ids() -> None:
    async with served() as (http, _):
        response = await http.get("/kpis/conversion")
        body = await response.json()

    assert response.status == 404
    jsonschema.validate(body, api_json_schemas()["api/kpi-not-found.json"])
    assert body == {
        "error": "unknown KPI 'conversion': use one of known_ids, or GET /kpis for"
        " every KPI with its values",
        "known_ids": sorted(KPI_IDS),
    }


async def test_event_stream_sends_the_latest_then_each_change() -> None:
    change = snapshot("complaints", "1h", "all", 4.0, kpi="complaints")

    async with served() as (http, board):
        response = await http.get("/kpis/stream")
        first = [await response.content.readline() for _ in range(2 + 3 * 3)]
        board.update([change])
        second = [await response.content.readline() for _ in range(3)]
        board.close()
        rest = await asyncio.wait_for(response.content.read(), 5)

    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert first[:2] == [b"retry: 2000\n", b"\n"]
    assert first[2::3] == [b"event: snapshot\n"] * 3
    assert [
        KpiSnapshot.model_validate_json(line.removeprefix(b"data: ")).key
        for line in first[3::3]
    ] == ["lead_conversion|1h|", "site_visits|24h|email", "margin|month|"]
    assert second == [
        b"event: snapshot\n",
        b"data: " + change.model_dump_json().encode() + b"\n",
        b"\n",
    ]
    assert rest == b""


async def test_wall_is_a_self_contained_page() -> None:
    async with served() as (http, _):
        response = await http.get("/wall")
        page = await response.text()

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert 'new EventSource("/kpis/stream")' in page
    # Nothing outside the worker is reachable from a wall display.
    assert "http://" not in page.replace('"http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
