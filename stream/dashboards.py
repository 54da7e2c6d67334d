"""Grafana dashboards generated from the catalogue: the KPI wall and pipeline health.

Built with grafana-foundation-sdk, Grafana's own typed builders for dashboard
JSON (https://grafana.github.io/grafana-foundation-sdk/), so the panel, query
and variable shapes are those Grafana 11.6 reads. Threshold colours come from
the same thresholds as the alert rules, overrides included, so the wall turns
red where the alerts fire.

`python -m stream.dashboards [--overrides FILE]` writes `grafana/dashboards/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, common, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as builder
from grafana_foundation_sdk.builders import prometheus as query
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import units

from stream import alerts
from stream.catalogue import CATALOGUE, OVERALL, WINDOWED, Kpi, Series, Threshold, Unit
from stream.errors import CrmKpiError
from stream.settings import get_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = PROJECT_ROOT / "grafana" / "dashboards"

DATASOURCE_UID = "crm-prometheus"
"""Uid of the Prometheus data source in grafana/provisioning/datasources."""

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
WINDOW_VARIABLE = "window"
DEFAULT_WINDOW = "24h"
REFRESH = "10s"

_CURRENCY_UNITS = {
    value
    for value in vars(units).values()
    if isinstance(value, str) and value.startswith("currency")
}
_UNITS = {
    Unit.RATIO: units.PercentUnit,
    Unit.COUNT: units.Short,
    Unit.SECONDS: units.DurationSeconds,
}
_RATE = "[$__rate_interval]"


class _Ids:
    """Panel ids in the order panels are added: unique within a dashboard."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last += 1
        return self._last


def kpi_wall(config: alerts.AlertConfig, currency: str) -> builder.Dashboard:
    """Return the KPI wall: every KPI's headline, then the dimensioned ones by value.

    `currency` is the reporting currency every money KPI is exported in.
    """
    ids = _Ids()
    window_options = [
        model.VariableOption(
            selected=window == DEFAULT_WINDOW, text=window, value=window
        )
        for window in WINDOWED
    ]
    wall = (
        builder.Dashboard("CRM KPI wall")
        .uid("crm-kpi-wall")
        .description("Every KPI of the catalogue, coloured by its thresholds.")
        .tags(["crm", "kpi"])
        .refresh(REFRESH)
        .time("now-6h", "now")
        .timezone("utc")
        .with_variable(
            builder.CustomVariable(WINDOW_VARIABLE)
            .label("Window")
            .description(
                "Window of the windowed KPIs. A KPI not reported for it (quota:"
                " months only; state at the watermark) keeps its own window,"
                " named in its title."
            )
            .values(",".join(WINDOWED))
            .current(model.VariableOption(text=DEFAULT_WINDOW, value=DEFAULT_WINDOW))
            .options(window_options)
        )
        .with_row(builder.Row("Headlines").id(ids.next()))
    )
    for kpi in CATALOGUE:
        wall.with_panel(_headline(kpi, config.thresholds.get(kpi.id), currency, ids))

    wall.with_row(builder.Row("By dimension").id(ids.next()))
    for kpi in CATALOGUE:
        if kpi.dimension is not None:
            threshold = config.thresholds.get(kpi.id)
            wall.with_panel(_by_dimension(kpi, threshold, currency, ids))
    return wall


def pipeline_health() -> builder.Dashboard:
    """Return the pipeline-health board: flow, errors, time, lag and workers."""
    ids = _Ids()
    job = f'job="{alerts.JOB}"'
    board = (
        builder.Dashboard("CRM pipeline health")
        .uid("crm-pipeline-health")
        .description("The KPI workers: what they consume, reject, delay and hold.")
        .tags(["crm", "pipeline"])
        .refresh(REFRESH)
        .time("now-1h", "now")
        .timezone("utc")
        .with_row(builder.Row("Workers").id(ids.next()))
        .with_panel(
            _stat("Workers up", ids)
            .height(8)
            .description(f"Worker targets of job {alerts.JOB} Prometheus can scrape.")
            .thresholds(_steps([("red", None), ("green", 1.0)]))
            .with_target(_instant(f"sum(up{{{job}}})"))
        )
        .with_panel(
            _stat("Workers holding the KPI state", ids)
            .height(8)
            .description(
                "Exactly one worker should hold the KPI state; 0 means no KPI is"
                " computed, more than one is a handover in progress."
            )
            .thresholds(_steps([("red", None), ("green", 1.0), ("orange", 2.0)]))
            .with_target(_instant("sum(crm_kpi_state_owned)"))
        )
        .with_panel(
            _series("Process memory", units.BytesIEC, ids)
            .span(8)
            .with_target(
                _range(f"process_resident_memory_bytes{{{job}}}", "{{instance}}")
            )
        )
        .with_panel(
            _series("Checkpoints written", units.OpsPerSecond, ids)
            .span(8)
            .with_target(
                _range(
                    f"sum by (instance) (rate(crm_checkpoints_total{_RATE}))",
                    "{{instance}}",
                )
            )
        )
        .with_row(builder.Row("Flow").id(ids.next()))
        .with_panel(
            _series("Records consumed", units.OpsPerSecond, ids).with_target(
                _range(
                    f"sum by (topic) (rate(crm_records_consumed_total{_RATE}))",
                    "{{topic}}",
                )
            )
        )
        .with_panel(
            _series("Events by type and outcome", units.OpsPerSecond, ids).with_target(
                _range(
                    f"sum by (type, outcome) (rate(crm_events_total{_RATE}))",
                    "{{type}} {{outcome}}",
                )
            )
        )
        .with_panel(
            _series("Dead letters by reason", units.OpsPerSecond, ids).with_target(
                _range(
                    f"sum by (reason) (rate(crm_events_invalid_total{_RATE}))",
                    "{{reason}}",
                )
            )
        )
        .with_panel(
            _series("Late and duplicate events", units.OpsPerSecond, ids)
            .with_target(_range(f"sum(rate(crm_events_late_total{_RATE}))", "late"))
            .with_target(
                _range(
                    f"sum(rate(crm_events_duplicate_total{_RATE}))",
                    "duplicate",
                    ref_id="B",
                )
            )
        )
        .with_row(builder.Row("Time and lag").id(ids.next()))
        .with_panel(
            _series("Event to KPI delay", units.Seconds, ids)
            .description("From an event record's produce time to the KPI update.")
            .with_target(_range(_quantile(0.5), "p50"))
            .with_target(_range(_quantile(0.99), "p99", ref_id="B"))
        )
        .with_panel(
            _series("Watermark behind the wall clock", units.Seconds, ids)
            .description(
                "time() minus the largest event time applied. It grows while the"
                " stream is idle or stalled, and is large during a replay."
            )
            .with_target(
                _range("time() - max(crm_watermark_timestamp_seconds)", "behind")
            )
        )
        .with_panel(
            _series("Consumer lag per partition", units.Short, ids)
            .span(24)
            .with_target(
                _range(
                    "max by (topic, partition) (crm_consumer_lag)",
                    "{{topic}} / {{partition}}",
                )
            )
        )
    )
    return board


def render(dashboard: builder.Dashboard) -> str:
    """Return a dashboard's JSON, keys sorted, byte for byte what is committed."""
    return (
        json.dumps(dashboard.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
    )


def dashboards(config: alerts.AlertConfig, currency: str) -> dict[str, str]:
    """Return every dashboard's JSON by file name."""
    return {
        "kpi-wall.json": render(kpi_wall(config, currency)),
        "pipeline-health.json": render(pipeline_health()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dashboards; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m stream.dashboards", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--overrides", type=Path, help="JSON or YAML thresholds")
    parser.add_argument("--directory", type=Path, default=DASHBOARD_DIR)
    args = parser.parse_args(argv)

    try:
        overrides = alerts.load_overrides(args.overrides) if args.overrides else None
        files = dashboards(alerts.resolve(overrides), get_settings().reporting_currency)
    except CrmKpiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    args.directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = args.directory / name
        path.write_text(text, encoding="utf-8")
        print(path)
    return 0


# KPI panels --------------------------------------------------------------------


def panel_window(kpi: Kpi, threshold: Threshold | None) -> str | None:
    """Return the fixed window a KPI's panels show, or None to follow `$window`.

    A KPI reported for every window follows the variable. Another keeps one
    of its own: the window its alert watches if it has one (last month for
    quota attainment, where the month in progress would be red every morning),
    else its first (the watermark for a state).
    """
    windows = kpi.windows_of(kpi.headline.id)
    if set(WINDOWED) <= set(windows):
        return None
    alert_window = threshold.alert_window if threshold else None
    return alert_window if alert_window in windows else windows[0]


def _headline(
    kpi: Kpi, threshold: Threshold | None, currency: str, ids: _Ids
) -> stat.Panel:
    window = panel_window(kpi, threshold)
    title = f"{kpi.title} ({window or '$' + WINDOW_VARIABLE})"
    selector = _selector(kpi, kpi.headline, window, OVERALL)
    return (
        _stat(title, ids)
        .span(4)
        .description(kpi.formula)
        .unit(_unit(kpi.headline, currency))
        .thresholds(_colours(threshold))
        .color_mode(common_model.BigValueColorMode.BACKGROUND)
        .with_target(_instant(f"max({selector})"))
    )


def _by_dimension(
    kpi: Kpi, threshold: Threshold | None, currency: str, ids: _Ids
) -> bargauge.Panel:
    assert kpi.dimension is not None
    window = panel_window(kpi, threshold)
    selector = _selector(kpi, kpi.headline, window, f"!{OVERALL}")
    title = kpi.title
    if not title.endswith(f" by {kpi.dimension}"):
        title += f" by {kpi.dimension}"
    return (
        bargauge.Panel()
        .id(ids.next())
        .title(f"{title} ({window or '$' + WINDOW_VARIABLE})")
        .description(kpi.formula)
        .datasource(DATASOURCE)
        .height(9)
        .span(12)
        .unit(_unit(kpi.headline, currency))
        .thresholds(_colours(threshold))
        .min(0)
        .orientation(common_model.VizOrientation.HORIZONTAL)
        .display_mode(common_model.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(
            _instant(
                f"max by ({kpi.dimension}) ({selector})",
                legend=f"{{{{{kpi.dimension}}}}}",
            )
        )
    )


def _selector(kpi: Kpi, series: Series, window: str | None, value: str) -> str:
    """Return a series selector; `value` is a dimension value, `!` negates it."""
    labels = [f'window="{window or "$" + WINDOW_VARIABLE}"']
    if kpi.dimension is not None:
        operator = "!=" if value.startswith("!") else "="
        labels.append(f'{kpi.dimension}{operator}"{value.lstrip("!")}"')
    return f"{series.metric}{{{', '.join(labels)}}}"


def _unit(series: Series, currency: str) -> str:
    if series.unit is not Unit.MONEY:
        return _UNITS[series.unit]
    unit = f"currency{currency}"
    return unit if unit in _CURRENCY_UNITS else f"suffix: {currency}"


def _colours(threshold: Threshold | None) -> builder.ThresholdsConfig:
    """Return green, yellow and red steps on the threshold's bad side."""
    if threshold is None:
        return _steps([("blue", None)])
    if threshold.direction == "below":
        return _steps(
            [
                ("red", None),
                ("yellow", threshold.critical),
                ("green", threshold.warning),
            ]
        )
    return _steps(
        [("green", None), ("yellow", threshold.warning), ("red", threshold.critical)]
    )


# Building blocks ---------------------------------------------------------------


def _steps(steps: list[tuple[str, float | None]]) -> builder.ThresholdsConfig:
    # Grafana colours a value with the last step whose value it reaches; the
    # first step's null stands for minus infinity.
    return (
        builder.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for color, value in steps])
    )


def _stat(title: str, ids: _Ids) -> stat.Panel:
    return (
        stat.Panel()
        .id(ids.next())
        .title(title)
        .datasource(DATASOURCE)
        .height(4)
        .span(4)
        .graph_mode(common_model.BigValueGraphMode.NONE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
    )


def _series(title: str, unit: str, ids: _Ids) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .id(ids.next())
        .title(title)
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .unit(unit)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_model.LegendDisplayMode.LIST)
            .placement(common_model.LegendPlacement.BOTTOM)
        )
    )


def _instant(expr: str, legend: str | None = None) -> query.Dataquery:
    target = query.Dataquery().expr(expr).instant().ref_id("A").datasource(DATASOURCE)
    if legend is not None:
        target.legend_format(legend)
    return target


def _range(expr: str, legend: str, ref_id: str = "A") -> query.Dataquery:
    return (
        query.Dataquery()
        .expr(expr)
        .range()
        .legend_format(legend)
        .ref_id(ref_id)
        .datasource(DATASOURCE)
    )


def _quantile(quantile: float) -> str:
    return (
        f"histogram_quantile({quantile}, sum by (le)"
        f" (rate(crm_event_to_kpi_delay_seconds_bucket{_RATE})))"
    )


if __name__ == "__main__":
    sys.exit(main())
