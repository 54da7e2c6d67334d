"""The KPI catalogue: every KPI, its series, windows, dimensions and thresholds.

One entry per KPI of the contract. Metrics, alert rules, dashboards, the HTTP
API and the docs are all derived from this table, so they cannot drift apart.

A KPI has one or more *series*: its headline value (the first series) and the
figures beside it (numerators, denominators, percentiles). Each series is one
Prometheus metric. A value is addressed by a `SeriesKey`: the series id, the
window and the dimension value (`None` for a series without a dimension,
`"all"` for the overall value of a dimensioned one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

# The closed vocabularies are the event contract's; the catalogue reports by them.
from schemas.events import CHANNELS as CHANNELS
from schemas.events import COMPLAINT_CATEGORIES as COMPLAINT_CATEGORIES
from schemas.events import LOST_REASONS as LOST_REASONS
from stream.errors import CatalogueError

ROLLING_WINDOWS = ("1h", "24h", "7d", "30d")
CALENDAR_WINDOWS = ("day", "month", "last_month")
WINDOWED = ROLLING_WINDOWS + CALENDAR_WINDOWS
MONTHLY = ("month", "last_month")
DAILY = ("day",)
AT_WATERMARK = ("now",)
"""The pseudo-window of KPIs that are a state at the watermark, not a window."""

OVERALL = "all"
"""Dimension value of the overall figure of a dimensioned series."""

SeriesKey = tuple[str, str, str | None]
"""(series id, window, dimension value or None)."""


class Unit(StrEnum):
    """What a series measures; it decides the metric suffix and the display."""

    RATIO = "ratio"
    COUNT = "count"
    MONEY = "money"
    SECONDS = "seconds"


@dataclass(frozen=True)
class Threshold:
    """Where a KPI turns from healthy to worrying, for colours and alerts.

    `direction` says which side is bad: "below" means low values are bad.
    `warning` and `critical` are the two colour steps; an alert fires at
    `critical` on `alert_window` once `min_volume` of `volume_series` is met.
    """

    direction: Literal["below", "above"]
    warning: float
    critical: float
    alert_window: str | None = None
    volume_series: str | None = None
    min_volume: float = 0.0
    summary: str = ""


@dataclass(frozen=True)
class Series:
    """One figure of a KPI, exported as one metric."""

    id: str
    metric: str
    unit: Unit
    help: str


@dataclass(frozen=True)
class Kpi:
    """One KPI of the contract, with its series and where it applies."""

    id: str
    title: str
    formula: str
    series: tuple[Series, ...]
    windows: tuple[str, ...] = WINDOWED
    dimension: str | None = None
    values: tuple[str, ...] = ()
    threshold: Threshold | None = None
    version: int = 1
    series_windows: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def headline(self) -> Series:
        """The series that is the KPI's own value."""
        return self.series[0]

    def windows_of(self, series_id: str) -> tuple[str, ...]:
        """Return the windows a series of this KPI is reported for."""
        return self.series_windows.get(series_id, self.windows)

    def dimension_values(self) -> tuple[str | None, ...]:
        """Return the dimension values a series is reported for."""
        if self.dimension is None:
            return (None,)
        return (OVERALL, *self.values)


def _ratio(id: str, help: str) -> Series:
    return Series(id, f"crm_{id}_ratio", Unit.RATIO, help)


def _count(id: str, help: str) -> Series:
    return Series(id, f"crm_{id}", Unit.COUNT, help)


def _money(id: str, help: str) -> Series:
    return Series(id, f"crm_{id}", Unit.MONEY, help)


def _seconds(id: str, help: str) -> Series:
    return Series(id, f"crm_{id}_seconds", Unit.SECONDS, help)


CATALOGUE: tuple[Kpi, ...] = (
    Kpi(
        "lead_conversion",
        "Lead conversion rate",
        "lead.converted in window / lead.created in window; not clamped, it can"
        " exceed 1 when older leads convert.",
        (
            _ratio("lead_conversion", "Leads converted per lead created."),
            _count("lead_volume", "Leads created."),
            _count("leads_converted", "Leads converted."),
            _ratio("lead_volume_target", "Leads created today per daily target."),
        ),
        series_windows={"lead_volume_target": DAILY},
    ),
    Kpi(
        "active_customers",
        "Active customers",
        "Customers in the base with an order in the last 90 days; dormant ones"
        " are the rest of the base.",
        (
            _count("active_customers", "Customers in the base with a recent order."),
            _count("dormant_customers", "Customers in the base with no recent order."),
        ),
        windows=AT_WATERMARK,
    ),
    Kpi(
        "first_contact_resolution",
        "First-contact resolution",
        "Resolutions in window preceded, within the window, by at most one reply"
        " and no reopen or earlier resolution / resolutions in window.",
        (
            _ratio("first_contact_resolution", "Resolutions on first contact."),
            _count("tickets_resolved", "Ticket resolutions."),
        ),
        threshold=Threshold(
            "below",
            0.8,
            0.7,
            alert_window="7d",
            volume_series="tickets_resolved",
            min_volume=20,
            summary="First-contact resolution is low",
        ),
    ),
    Kpi(
        "crm_roi",
        "CRM ROI",
        "(CRM-attributed order revenue - CRM spend) / CRM spend, in window.",
        (
            _ratio("crm_roi", "Return on CRM spend."),
            _money("crm_attributed_revenue", "Revenue of CRM-attributed orders."),
            _money("crm_spend", "Spend recorded on the CRM."),
        ),
        threshold=Threshold("below", 1.0, 0.0, summary="CRM spend does not pay"),
    ),
    Kpi(
        "customer_churn",
        "Customer churn",
        "Customers in the base at window start and not at window end / base at"
        " window start.",
        (
            _ratio("customer_churn", "Share of the starting base lost."),
            _count("customer_base_start", "Customers in the base at window start."),
            _count("customer_base_end", "Customers in the base at window end."),
        ),
        threshold=Threshold("above", 0.05, 0.1, summary="Churn is high"),
    ),
    Kpi(
        "email_unsubscribe",
        "Unsubscribe rate",
        "email.unsubscribed / email.delivered, in window.",
        (
            _ratio("email_unsubscribe", "Unsubscribes per delivered email."),
            _count("emails_delivered", "Emails delivered."),
        ),
        threshold=Threshold(
            "above",
            0.003,
            0.005,
            alert_window="24h",
            volume_series="emails_delivered",
            min_volume=1000,
            summary="Unsubscribe rate is high",
        ),
    ),
    Kpi(
        "channel_conversion",
        "Conversion by channel",
        "lead.created from a channel / site.visit count from that channel.",
        (
            _ratio("channel_conversion", "Leads per site visit."),
            _count("site_visits", "Site visits."),
        ),
        dimension="channel",
        values=CHANNELS,
    ),
    Kpi(
        "ad_click_through",
        "Click-through rate",
        "ad.click count / ad.impression count, in window.",
        (
            _ratio("ad_click_through", "Ad clicks per impression."),
            _count("ad_impressions", "Ad impressions."),
        ),
        dimension="channel",
        values=CHANNELS,
        threshold=Threshold("below", 0.01, 0.005, summary="Click-through is low"),
    ),
    Kpi(
        "customer_acquisition_cost",
        "Customer acquisition cost",
        "Acquisition spend / new customers (joins to the base, rejoins included),"
        " in window.",
        (
            _money("customer_acquisition_cost", "Acquisition spend per new customer."),
            _money("acquisition_spend", "Spend recorded on acquisition."),
            _count("customers_new", "Distinct customers that joined the base."),
        ),
    ),
    Kpi(
        "email_open",
        "Email open rate",
        "Messages delivered in window with at least one open / messages delivered"
        " in window; the click rate likewise with clicks.",
        (
            _ratio("email_open", "Delivered messages opened."),
            _ratio("email_click", "Delivered messages clicked."),
            _count("messages_delivered", "Distinct messages delivered."),
        ),
        threshold=Threshold("below", 0.2, 0.1, summary="Open rate is low"),
    ),
    Kpi(
        "email_deliverability",
        "Email deliverability",
        "email.delivered / email.sent, in window.",
        (
            _ratio("email_deliverability", "Delivered emails per email sent."),
            _count("emails_sent", "Emails sent."),
        ),
        threshold=Threshold(
            "below",
            0.97,
            0.95,
            alert_window="24h",
            volume_series="emails_sent",
            min_volume=1000,
            summary="Email deliverability is low",
        ),
    ),
    Kpi(
        "newsletter_signup",
        "Newsletter subscription rate",
        "newsletter.subscribed / site.visit count, in window.",
        (
            _ratio("newsletter_signup", "Sign-ups per site visit."),
            _count("newsletter_signups", "Newsletter sign-ups."),
        ),
    ),
    Kpi(
        "customer_retention",
        "Customer retention",
        "(E - N) / S: the share of the base at window start still in it at window"
        " end (the standard form, new customers excluded).",
        (_ratio("customer_retention", "Share of the starting base kept."),),
        threshold=Threshold("below", 0.95, 0.9, summary="Retention is low"),
    ),
    Kpi(
        "quota_attainment",
        "Quota attainment",
        "Share of reps with a quota for the month whose won amount reaches it;"
        " also the mean attainment.",
        (
            _ratio("quota_attainment", "Share of reps at or above quota."),
            _ratio("quota_attainment_mean", "Mean won amount per quota."),
            _count("reps_with_quota", "Reps with a quota for the month."),
        ),
        windows=MONTHLY,
        threshold=Threshold(
            "below",
            0.9,
            0.6,
            alert_window="last_month",
            volume_series="reps_with_quota",
            min_volume=1,
            summary="Most reps missed their quota: targets look unrealistic",
        ),
    ),
    Kpi(
        "lost_deals",
        "Lost sales",
        "Count and value of deal.lost in window, by reason.",
        (
            _count("lost_deals", "Deals lost."),
            _money("lost_deals_value", "Value of the deals lost."),
        ),
        dimension="reason",
        values=LOST_REASONS,
    ),
    Kpi(
        "sales_cycle",
        "Sales-cycle length",
        "For deals won in window: won time - the lead's creation time; mean,"
        " median and 90th percentile. Deals with no known start are counted apart.",
        (
            _seconds("sales_cycle_mean", "Mean time from lead to won deal."),
            _seconds("sales_cycle_median", "Median time from lead to won deal."),
            _seconds("sales_cycle_p90", "90th percentile (nearest rank)."),
            _count("deals_won", "Deals won."),
            _count("deals_won_unknown_start", "Deals won with no known lead start."),
        ),
    ),
    Kpi(
        "prospect_follow_up",
        "Prospect follow-up",
        "Open leads older than 24 h contacted in the last 7 days / all open leads"
        " older than 24 h, at the watermark.",
        (
            _ratio("prospect_follow_up", "Open leads recently contacted."),
            _count("open_leads", "Open leads older than 24 h."),
        ),
        windows=AT_WATERMARK,
        threshold=Threshold("below", 0.8, 0.6, summary="Prospects are left waiting"),
    ),
    Kpi(
        "portfolio_growth",
        "Portfolio growth",
        "(E - S) / S with S and E the base at window start and end.",
        (_ratio("portfolio_growth", "Growth of the customer base."),),
    ),
    Kpi(
        "quotes_issued",
        "Quotes issued",
        "Count and value of distinct (quote_id, version), in window.",
        (
            _count("quotes_issued", "Distinct quote versions issued."),
            _money("quotes_issued_value", "Value of the quotes issued."),
        ),
    ),
    Kpi(
        "complaints",
        "Complaints",
        "complaint.filed in window, by category.",
        (_count("complaints", "Complaints filed."),),
        dimension="category",
        values=COMPLAINT_CATEGORIES,
    ),
    Kpi(
        "margin",
        "Margin",
        "Sum of revenue - cost of orders in window; the rate is that / revenue.",
        (
            _money("margin", "Order revenue minus cost."),
            _ratio("margin_rate", "Margin per unit of revenue."),
            _money("revenue", "Order revenue."),
        ),
    ),
)

KPIS: dict[str, Kpi] = {kpi.id: kpi for kpi in CATALOGUE}
SERIES: dict[str, tuple[Kpi, Series]] = {
    series.id: (kpi, series) for kpi in CATALOGUE for series in kpi.series
}


def get_kpi(kpi_id: str) -> Kpi:
    """Return the catalogue entry of a KPI.

    Raises:
        CatalogueError: the id is not a KPI of the catalogue.
    """
    try:
        return KPIS[kpi_id]
    except KeyError:
        known = ", ".join(sorted(KPIS))
        raise CatalogueError(
            f"unknown KPI {kpi_id!r}; the catalogue has: {known}"
        ) from None


def all_keys() -> list[SeriesKey]:
    """Return every series key the catalogue defines, in catalogue order."""
    keys: list[SeriesKey] = []
    for kpi in CATALOGUE:
        for series in kpi.series:
            for window in kpi.windows_of(series.id):
                for value in kpi.dimension_values():
                    keys.append((series.id, window, value))
    return keys
