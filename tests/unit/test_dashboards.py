"""The generated Grafana dashboards and their provisioning."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from stream import alerts, dashboards
from stream.catalogue import CATALOGUE
from stream.exporters import KpiGauges, PipelineMetrics
from stream.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
WINDOWS = "1h,24h,7d,30d,day,month,last_month"


def _committed(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (GRAFANA / "dashboards" / name).read_text(encoding="utf-8")
    )
    return data


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def _by_title(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {panel["title"]: panel for panel in _panels(board)}


def _exprs(panel: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in panel["targets"]]


def _steps(panel: dict[str, Any]) -> list[tuple[str, float | None]]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [(step["color"], step["value"]) for step in steps]


def _exported_metric_names() -> set[str]:
    """Return every sample name the worker can expose, from the exporters."""
    registry = CollectorRegistry()
    PipelineMetrics(registry)
    KpiGauges(registry, "EUR")
    names = {"up", "process_resident_memory_bytes"}
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{end}" for end in ("bucket", "sum", "count"))
    return names


def test_committed_dashboards_are_what_the_catalogue_generates() -> None:
    generated = dashboards.dashboards(
        alerts.resolve(), get_settings().reporting_currency
    )

    assert sorted(generated) == ["kpi-wall.json", "pipeline-health.json"]
    for name, text in generated.items():
        committed = (GRAFANA / "dashboards" / name).read_text(encoding="utf-8")
        assert committed == text, (
            f"grafana/dashboards/{name} is stale: run `python -m stream.dashboards`"
        )


def test_every_kpi_has_a_headline_panel() -> None:
    wall = _committed("kpi-wall.json")
    stats = [panel for panel in _panels(wall) if panel["type"] == "stat"]

    shown = {expr.split("(")[1].split("{")[0] for p in stats for expr in _exprs(p)}

    assert len(CATALOGUE) == 21
    assert len(stats) == 21
    assert shown == {kpi.headline.metric for kpi in CATALOGUE}


def test_dimensioned_kpis_have_a_bar_gauge_by_value() -> None:
    panels = _by_title(_committed("kpi-wall.json"))

    bars = {t: p for t, p in panels.items() if p["type"] == "bargauge"}

    assert {title: _exprs(panel) for title, panel in bars.items()} == {
        "Conversion by channel ($window)": [
            "max by (channel) (crm_channel_conversion_ratio"
            '{window="$window", channel!="all"})'
        ],
        "Click-through rate by channel ($window)": [
            "max by (channel) (crm_ad_click_through_ratio"
            '{window="$window", channel!="all"})'
        ],
        "Lost sales by reason ($window)": [
            'max by (reason) (crm_lost_deals{window="$window", reason!="all"})'
        ],
        "Complaints by category ($window)": [
            'max by (category) (crm_complaints{window="$window", category!="all"})'
        ],
    }


def test_panels_follow_the_window_variable_unless_the_kpi_lacks_it() -> None:
    panels = _by_title(_committed("kpi-wall.json"))

    assert _exprs(panels["Email deliverability ($window)"]) == [
        'max(crm_email_deliverability_ratio{window="$window"})'
    ]
    assert _exprs(panels["Quota attainment (last_month)"]) == [
        'max(crm_quota_attainment_ratio{window="last_month"})'
    ]
    assert _exprs(panels["Active customers (now)"]) == [
        'max(crm_active_customers{window="now"})'
    ]
    assert _exprs(panels["Prospect follow-up (now)"]) == [
        'max(crm_prospect_follow_up_ratio{window="now"})'
    ]
    assert _exprs(panels["Complaints ($window)"]) == [
        'max(crm_complaints{window="$window", category="all"})'
    ]


def test_window_variable_offers_every_window() -> None:
    (variable,) = _committed("kpi-wall.json")["templating"]["list"]

    assert variable["name"] == "window"
    assert variable["type"] == "custom"
    assert variable["query"] == WINDOWS
    assert variable["current"] == {"text": "24h", "value": "24h"}
    assert [option["value"] for option in variable["options"]] == WINDOWS.split(",")


def test_units_follow_the_series_kind() -> None:
    panels = _by_title(
        json.loads(dashboards.render(dashboards.kpi_wall(alerts.resolve(), "USD")))
    )

    def unit(title: str) -> str:
        value: str = panels[title]["fieldConfig"]["defaults"]["unit"]
        return value

    assert unit("Unsubscribe rate ($window)") == "percentunit"
    assert unit("Margin ($window)") == "currencyUSD"
    assert unit("Sales-cycle length ($window)") == "dtdurations"
    assert unit("Quotes issued ($window)") == "short"


def test_a_currency_grafana_does_not_know_is_a_suffix() -> None:
    panels = _by_title(
        json.loads(dashboards.render(dashboards.kpi_wall(alerts.resolve(), "XYZ")))
    )

    assert panels["Margin ($window)"]["fieldConfig"]["defaults"]["unit"] == (
        "suffix: XYZ"
    )


def test_threshold_colours_follow_the_bad_side() -> None:
    panels = _by_title(_committed("kpi-wall.json"))

    assert _steps(panels["Email deliverability ($window)"]) == [
        ("red", None),
        ("yellow", 0.95),
        ("green", 0.97),
    ]
    assert _steps(panels["Unsubscribe rate ($window)"]) == [
        ("green", None),
        ("yellow", 0.003),
        ("red", 0.005),
    ]
    assert _steps(panels["Margin ($window)"]) == [("blue", None)]
    assert _steps(panels["Click-through rate by channel ($window)"]) == [
        ("red", None),
        ("yellow", 0.005),
        ("green", 0.01),
    ]


def test_threshold_overrides_recolour_the_wall() -> None:
    config = alerts.resolve(
        {"kpis": {"email_deliverability": {"critical": 0.9, "warning": 0.92}}}
    )

    panels = _by_title(
        json.loads(dashboards.render(dashboards.kpi_wall(config, "EUR")))
    )

    assert _steps(panels["Email deliverability ($window)"]) == [
        ("red", None),
        ("yellow", 0.9),
        ("green", 0.92),
    ]


def test_every_panel_and_query_uses_the_provisioned_data_source() -> None:
    for name in ("kpi-wall.json", "pipeline-health.json"):
        for panel in _panels(_committed(name)):
            expected = {"type": "prometheus", "uid": "crm-prometheus"}
            assert panel["datasource"] == expected, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == expected, panel["title"]


def test_every_query_names_a_metric_the_worker_exports() -> None:
    known = _exported_metric_names()
    identifier = re.compile(r"\b(?:crm_\w+|process_\w+|up)\b")

    for name in ("kpi-wall.json", "pipeline-health.json"):
        for panel in _panels(_committed(name)):
            for expr in _exprs(panel):
                named = set(identifier.findall(expr))
                assert named, f"{panel['title']}: no metric in {expr!r}"
                assert named <= known, f"{panel['title']}: unknown {named - known}"


def test_pipeline_board_covers_the_pipeline_metrics() -> None:
    board = _committed("pipeline-health.json")

    exprs = "\n".join(expr for panel in _panels(board) for expr in _exprs(panel))

    for metric in (
        "crm_events_total",
        "crm_events_invalid_total",
        "crm_events_late_total",
        "crm_events_duplicate_total",
        "crm_event_to_kpi_delay_seconds_bucket",
        "crm_watermark_timestamp_seconds",
        "crm_consumer_lag",
        "crm_checkpoints_total",
        "crm_kpi_state_owned",
        "crm_records_consumed_total",
        'up{job="crm-kpi-stream"}',
        "process_resident_memory_bytes",
    ):
        assert metric in exprs
    assert "histogram_quantile(0.99, " in exprs
    assert "time() - max(crm_watermark_timestamp_seconds)" in exprs


def test_dashboards_are_valid_grafana_json() -> None:
    for name, uid in (
        ("kpi-wall.json", "crm-kpi-wall"),
        ("pipeline-health.json", "crm-pipeline-health"),
    ):
        board = _committed(name)
        ids = [panel["id"] for panel in board["panels"]]
        cells: set[tuple[int, int]] = set()

        assert board["uid"] == uid
        assert board["schemaVersion"] >= 39
        assert len(ids) == len(set(ids)), f"{name}: repeated panel ids"
        for panel in board["panels"]:
            assert panel["type"] in {"row", "stat", "gauge", "bargauge", "timeseries"}
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{name}: {panel['title']} overlaps"
                    cells.add((x, y))


def test_provisioning_points_at_the_generated_dashboards() -> None:
    provisioning = GRAFANA / "provisioning"
    sources = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )
    providers = yaml.safe_load(
        (provisioning / "dashboards" / "dashboards.yml").read_text(encoding="utf-8")
    )

    (source,) = sources["datasources"]
    (provider,) = providers["providers"]
    assert source["uid"] == dashboards.DATASOURCE_UID == "crm-prometheus"
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
