"""The KPI reference page, docs/kpis.md: the catalogue with notes on edge cases.

Everything but the edge-case notes comes from `stream.catalogue`, so the page
names the same ids, metrics, windows and thresholds as the metrics, the alert
rules and the API. `python -m stream.kpi_page` writes it; a unit test fails
while the committed page differs from what this module renders.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from stream.catalogue import CATALOGUE, SERIES, Kpi, Series, Threshold, Unit

KPI_PAGE = Path(__file__).resolve().parents[1] / "docs" / "kpis.md"
"""Where the committed page lives."""

EDGE_CASES: dict[str, tuple[str, ...]] = {
    "lead_conversion": (
        "Not clamped: a lead created before the window and converted inside it"
        " counts in the numerator only, so the rate can exceed 1.",
        "No value when no lead was created in the window.",
        "`lead_volume_target` exists for `day` only: leads created today over"
        " `CRM_DAILY_LEAD_TARGET`; no value when the target is 0.",
    ),
    "active_customers": (
        "A state at the watermark, not a window: customers in the base with an"
        " order in `(wm - 90 d, wm]` (`CRM_ACTIVE_HORIZON_DAYS`).",
        "Active plus dormant is the whole base. A churned customer is in neither"
        " until a joining event (`lead.converted`, `deal.won`, `order.placed`)"
        " brings it back.",
        "An order is itself a joining event: it makes a customer absent from the"
        " base present and active at once.",
    ),
    "first_contact_resolution": (
        "Only the ticket's events inside the window and strictly before the"
        " resolution count: a reply before the window start does not.",
        "A second resolution of a ticket in the window is never first-contact:"
        " the first one precedes it.",
        "No value without a resolution in the window.",
    ),
    "crm_roi": (
        "Revenue of orders marked `crm_attributed`, minus spend of category"
        " `crm`, over that spend. Multiplying revenue by spend, as a common"
        " source does, is not a return.",
        "No value without CRM spend in the window; an ROI of 0 means the"
        " attributed revenue just covers the spend.",
    ),
    "customer_churn": (
        "S is the base at the window start, E at its end, each customer's joins"
        " and churns walked in event-time order: churn is the share of S not in"
        " E, always 1 - retention.",
        "A customer who churns and rejoins inside the window is in both S and"
        " E: not churned. A churn of a customer not in the base changes"
        " nothing and is not counted.",
        "No value when the base at the window start is empty.",
    ),
    "email_unsubscribe": (
        "Counts events, not contacts: two unsubscribe events count twice.",
        "An unsubscribe from a message delivered before the window counts, so"
        " a quiet window can show a high rate.",
        "No value without a delivered email in the window.",
    ),
    "channel_conversion": (
        "Site visits weigh by their `count`; leads count one each.",
        "An unknown channel is `other`; `all` is the figure over every channel.",
        "No value for a channel without visits in the window; it can exceed 1"
        " when leads come without tracked visits.",
    ),
    "ad_click_through": (
        "Clicks and impressions weigh by their `count` (sources send batches).",
        "No value for a channel without impressions in the window.",
    ),
    "customer_acquisition_cost": (
        "New customers are the distinct customers with a join in the window,"
        " rejoins included; a customer joining twice counts once.",
        "No value without a new customer, even when spend was recorded.",
    ),
    "email_open": (
        "A message counts at its delivery time, the earliest of its"
        " `email.delivered` events; a second delivery event changes nothing.",
        "An open or click at any event time counts for a message delivered in"
        " the window, even one recorded after the window end.",
        "No value without a message delivered in the window.",
    ),
    "email_deliverability": (
        "Counts events: deliveries in the window of emails sent before it"
        " count, so it can exceed 1 for a short window.",
        "Bounces are not subtracted; they show as the gap between sent and delivered.",
        "No value without an email sent in the window.",
    ),
    "newsletter_signup": (
        "The denominator is every site visit, all channels, weighed by `count`;"
        " a sign-up with or without a channel counts.",
        "No value without a site visit in the window.",
    ),
    "customer_retention": (
        "(E - N) / S is the share of the starting base still in it at the end;"
        " new customers do not count, so it never exceeds 1.",
        "No value when the base at the window start is empty.",
    ),
    "quota_attainment": (
        "Calendar months in `CRM_TIMEZONE`; reported for `month` and"
        " `last_month` only.",
        "A rep's quota is its `quota.set` with the latest event time (ties: the"
        " greater event id); a quota of 0 or less is no quota.",
        "Won amounts are the rep's `deal.won` with event time in the month. A"
        " rep without a quota is left out, whatever it won.",
        "No value when no rep has a quota for the month.",
    ),
    "lost_deals": (
        "A `deal.lost` without an amount counts with a value of 0.",
        "An unknown reason is `other`; `all` is the figure over every reason.",
    ),
    "sales_cycle": (
        "The start is the lead's earliest `lead.created`, else the deal's"
        " `lead_created_at`, else unknown: such deals count in"
        " `deals_won_unknown_start` and not in the statistics.",
        "The median of an even count is the mean of the two middle values; the"
        " 90th percentile is the nearest rank, the ceil(0.9 n)-th value.",
        "A cycle can be negative when the sources disagree on times; it is kept"
        " as it is.",
        "No value without a won deal of known start in the window.",
    ),
    "prospect_follow_up": (
        "A lead is open once created and until it is converted, disqualified"
        " or named by a `deal.lost`, at any event time.",
        "Only open leads created more than 24 h before the watermark count; a"
        " contact in `[wm - 7 d, wm]` follows them up.",
        "No value without such a lead.",
    ),
    "portfolio_growth": (
        "Negative when the base shrinks; new customers and churns both count.",
        "No value when the base at the window start is empty.",
    ),
    "quotes_issued": (
        "A (quote id, version) pair counts once, at the time and amount of its"
        " first applied event; a repeat with another amount changes nothing.",
        "A new version of a quote is a new quote.",
    ),
    "complaints": ("One per `complaint.filed` event; an unknown category is `other`.",),
    "margin": (
        "Revenue minus cost of the orders in the window, summed exactly; it can"
        " be negative.",
        "No margin rate when the window's revenue is 0.",
    ),
}
"""Short notes on how each KPI behaves at its edges, by KPI id."""

UNIT_WORDS: dict[Unit, str] = {
    Unit.RATIO: "ratio",
    Unit.COUNT: "count",
    Unit.MONEY: "money",
    Unit.SECONDS: "seconds",
}


def render_kpi_page() -> str:
    """Return the Markdown page describing every KPI of the catalogue."""
    missing = [kpi.id for kpi in CATALOGUE if not EDGE_CASES.get(kpi.id)]
    unknown = sorted(set(EDGE_CASES) - {kpi.id for kpi in CATALOGUE})
    if missing or unknown:
        raise ValueError(
            f"EDGE_CASES must have notes for exactly the catalogue's KPIs:"
            f" missing {missing}, unknown {unknown}; edit stream/kpi_page.py"
        )

    lines = [
        "# KPIs",
        "",
        "<!-- Generated from stream/catalogue.py by `python -m stream.kpi_page`;"
        " do not edit by hand. -->",
        "",
        f"The worker computes {len(CATALOGUE)} KPIs, each with a headline series"
        " and the figures beside it.",
        "Every series is one Prometheus metric on `/metrics`, labelled `window`,"
        " the KPI's",
        "dimension if it has one, and `currency` for money; `GET /kpis` and the"
        " snapshot feeds",
        "carry the same values (docs/feeds.md). Windows, the watermark and the"
        " admission of",
        "events (duplicates, late events) are defined in docs/semantics.md:",
        "",
        "- `1h`, `24h`, `7d`, `30d`: rolling windows ending at the watermark's bucket;",
        "- `day`, `month`: the calendar day and month holding the watermark,"
        " `last_month` the",
        "  month before, in `CRM_TIMEZONE`;",
        "- `now`: a state at the watermark rather than a window.",
        "",
        "A ratio is a plain number (0.25 is 25 %) and is not clamped. A ratio whose"
        " denominator",
        "is zero has no value: its series is absent from `/metrics` and `null` in"
        " JSON. Counts",
        "and money sums are 0 when nothing happened. Money is in the reporting"
        " currency",
        "(`CRM_REPORTING_CURRENCY`), converted exactly when an event is ingested.",
        "",
        "| KPI | id | headline metric | windows | dimension |",
        "|---|---|---|---|---|",
    ]
    for kpi in CATALOGUE:
        lines.append(
            f"| [{kpi.title}](#{kpi.id}) | `{kpi.id}`"
            f" | `{kpi.headline.metric}` | {_windows(kpi.windows)}"
            f" | {_code(kpi.dimension) if kpi.dimension else '-'} |"
        )

    for kpi in CATALOGUE:
        lines.extend(["", *_section(kpi)])
    lines.append("")
    return "\n".join(lines)


def _section(kpi: Kpi) -> list[str]:
    """Return the lines describing one KPI."""
    lines = [
        f"## {kpi.id}",
        "",
        f"**{kpi.title}**, definition version {kpi.version}.",
        "",
        kpi.formula,
        "",
        "| series | metric | unit | windows | what it measures |",
        "|---|---|---|---|---|",
    ]
    for position, series in enumerate(kpi.series):
        name = f"`{series.id}`" + (" (headline)" if position == 0 else "")
        lines.append(
            f"| {name} | `{series.metric}` | {UNIT_WORDS[series.unit]}"
            f" | {_windows(kpi.windows_of(series.id))} | {series.help} |"
        )

    lines.extend(["", f"Labels: {_labels(kpi)}."])
    if kpi.dimension is not None:
        lines.extend(
            [
                "",
                f"Dimension `{kpi.dimension}`: `all` (every value together), "
                + ", ".join(_code(value) for value in kpi.values)
                + ".",
            ]
        )
    if kpi.threshold is not None:
        lines.extend(["", _threshold(kpi.threshold, kpi.headline)])

    lines.extend(["", "Edge cases:", ""])
    lines.extend(f"- {note}" for note in EDGE_CASES[kpi.id])
    return lines


def _labels(kpi: Kpi) -> str:
    names = ["`window`"]
    if kpi.dimension is not None:
        names.append(_code(kpi.dimension))
    if any(series.unit is Unit.MONEY for series in kpi.series):
        names.append("`currency` (money series)")
    return ", ".join(names)


def _threshold(threshold: Threshold, headline: Series) -> str:
    """Describe where the headline turns worrying, and when an alert fires."""
    warning = _amount(threshold.warning, headline.unit)
    critical = _amount(threshold.critical, headline.unit)
    if threshold.direction == "below":
        text = (
            f"Threshold: low values are bad; below {warning} is a warning, below"
            f" {critical} critical."
        )
    else:
        text = (
            f"Threshold: high values are bad; from {warning} on is a warning, from"
            f" {critical} on critical."
        )
    if threshold.alert_window is not None:
        side = "below" if threshold.direction == "below" else "above"
        text += (
            f" An alert (prometheus/rules/) fires while the `{threshold.alert_window}`"
            f" value stays {side} {critical}"
        )
        if threshold.volume_series is not None:
            volume = SERIES[threshold.volume_series][1]
            text += (
                f" and `{volume.metric}` is at least {_number(threshold.min_volume)}"
            )
        text += f": {threshold.summary}."
    return text


def _amount(value: float, unit: Unit) -> str:
    if unit is Unit.RATIO:
        return f"{_number(value)} ({_number(round(value * 100, 6))} %)"
    return _number(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _windows(windows: Sequence[str]) -> str:
    return ", ".join(_code(window) for window in windows)


def _code(text: str) -> str:
    return f"`{text}`"


def main(argv: Sequence[str] | None = None) -> int:
    """Write docs/kpis.md (or another path); the command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m stream.kpi_page",
        description="Write the KPI reference page from the catalogue.",
    )
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=KPI_PAGE,
        help="file to write (default: docs/kpis.md of the repository)",
    )
    arguments = parser.parse_args(argv)

    arguments.path.parent.mkdir(parents=True, exist_ok=True)
    arguments.path.write_text(render_kpi_page(), encoding="utf-8", newline="\n")
    print(arguments.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
