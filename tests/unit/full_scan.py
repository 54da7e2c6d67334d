"""KPI values recomputed by scanning every applied event: the unit tests' baseline.

Written straight from docs/semantics.md, one rule at a time, with no state
and no cleverness: admission replays the arrival order, and every figure is
a filter over the applied events at the final watermark. Slow (it rescans
everything per figure) and meant to be obviously right, so the engine's
incremental state can be checked against it on random streams.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from schemas.events import Event
from stream.catalogue import (
    CHANNELS,
    COMPLAINT_CATEGORIES,
    LOST_REASONS,
    SeriesKey,
    all_keys,
)
from stream.settings import Settings

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def millis_of(moment: datetime) -> int:
    """Whole milliseconds since the epoch, floored."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@dataclass
class Applied:
    """An applied event with its event time in ms."""

    t: int
    event: Any

    @property
    def type(self) -> str:
        return str(self.event.type)


def admit_all(
    events: list[Event], settings: Settings
) -> tuple[list[Applied], int | None, list[str]]:
    """Replay admission; return the applied events, the watermark, each verdict."""
    horizon = settings.dedupe_horizon_seconds * 1000
    late = 30 * DAY + settings.late_grace_seconds * 1000
    claims: dict[str, list[int]] = defaultdict(list)
    applied: list[Applied] = []
    verdicts: list[str] = []
    wm: int | None = None
    for event in events:
        t = millis_of(event.occurred_at)
        if wm is not None and any(c >= wm - horizon for c in claims[event.event_id]):
            verdicts.append("duplicate")
        elif wm is not None and t < wm - late:
            verdicts.append("late")
        else:
            verdicts.append("applied")
            applied.append(Applied(t, event))
            wm = t if wm is None else max(wm, t)
            claims[event.event_id].append(t)
    return applied, wm, verdicts


def local_midnight(zone: ZoneInfo, day: date) -> int:
    return millis_of(datetime(day.year, day.month, day.day, tzinfo=zone))


def window_bounds(wm: int, timezone: str) -> dict[str, tuple[int, int]]:
    """Every window at wm, computed afresh from the semantics page."""
    bounds = {}
    for name, size, step in (
        ("1h", HOUR, MINUTE),
        ("24h", DAY, 5 * MINUTE),
        ("7d", 7 * DAY, HOUR),
        ("30d", 30 * DAY, HOUR),
    ):
        b = (wm // step) * step
        bounds[name] = (b - size + step, b + step)

    zone = ZoneInfo(timezone)
    today = datetime.fromtimestamp(wm / 1000, zone).date()
    # Check the float-based lookup against the bounds it implies.
    while local_midnight(zone, today) > wm:
        today -= timedelta(days=1)
    while local_midnight(zone, today + timedelta(days=1)) <= wm:
        today += timedelta(days=1)
    bounds["day"] = (
        local_midnight(zone, today),
        local_midnight(zone, today + timedelta(days=1)),
    )
    first = today.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    previous = (first - timedelta(days=1)).replace(day=1)
    bounds["month"] = (local_midnight(zone, first), local_midnight(zone, following))
    bounds["last_month"] = (
        local_midnight(zone, previous),
        local_midnight(zone, first),
    )
    return bounds


def local_month(t: int, timezone: str) -> str:
    zone = ZoneInfo(timezone)
    day = datetime.fromtimestamp(t / 1000, zone).date()
    return f"{day.year:04d}-{day.month:02d}"


def ratio(numerator: Any, denominator: Any) -> float | None:
    if denominator == 0:
        return None
    return float(Fraction(numerator) / Fraction(denominator))


def scan(events: list[Event], settings: Settings) -> dict[SeriesKey, float | None]:
    """Every KPI value after admitting `events` in order."""
    applied, wm, _ = admit_all(events, settings)
    if wm is None:
        return {}

    values: dict[SeriesKey, float | None] = {}
    bounds = window_bounds(wm, settings.timezone)
    for window, (s, e) in bounds.items():
        inside = [a for a in applied if s <= a.t < e]
        _simple(values, window, inside, settings)
        _first_contact(values, window, applied, s, e)
        _customers(values, window, applied, s, e)
        _messages(values, window, applied, s, e)
        _quotes(values, window, applied, s, e)
        _sales_cycle(values, window, applied, s, e)
    _quotas(values, applied, wm, settings)
    _now(values, applied, wm, settings)
    return {key: values[key] for key in all_keys()}


def _of(inside: list[Applied], *types: str) -> list[Any]:
    return [a.event for a in inside if a.type in types]


def _weight(events: list[Any]) -> int:
    return sum(getattr(event, "count", 1) for event in events)


def _simple(
    values: dict[SeriesKey, float | None],
    w: str,
    inside: list[Applied],
    settings: Settings,
) -> None:
    created = _of(inside, "lead.created")
    converted = _of(inside, "lead.converted")
    values[("lead_conversion", w, None)] = ratio(len(converted), len(created))
    values[("lead_volume", w, None)] = float(len(created))
    values[("leads_converted", w, None)] = float(len(converted))
    if w == "day":
        values[("lead_volume_target", w, None)] = ratio(
            len(created), settings.daily_lead_target
        )

    visits = _of(inside, "site.visit")
    impressions = _of(inside, "ad.impression")
    clicks = _of(inside, "ad.click")
    for channel in (None, *CHANNELS):
        key = "all" if channel is None else channel

        def pick(events: list[Any], c: str | None = channel) -> list[Any]:
            return [ev for ev in events if c is None or ev.channel == c]

        values[("channel_conversion", w, key)] = ratio(
            len(pick(created)), _weight(pick(visits))
        )
        values[("site_visits", w, key)] = float(_weight(pick(visits)))
        values[("ad_click_through", w, key)] = ratio(
            _weight(pick(clicks)), _weight(pick(impressions))
        )
        values[("ad_impressions", w, key)] = float(_weight(pick(impressions)))

    signups = len(_of(inside, "newsletter.subscribed"))
    values[("newsletter_signup", w, None)] = ratio(signups, _weight(visits))
    values[("newsletter_signups", w, None)] = float(signups)

    sent = len(_of(inside, "email.sent"))
    delivered = len(_of(inside, "email.delivered"))
    unsubscribed = len(_of(inside, "email.unsubscribed"))
    values[("email_deliverability", w, None)] = ratio(delivered, sent)
    values[("emails_sent", w, None)] = float(sent)
    values[("email_unsubscribe", w, None)] = ratio(unsubscribed, delivered)
    values[("emails_delivered", w, None)] = float(delivered)

    orders = _of(inside, "order.placed")
    spends = _of(inside, "spend.recorded")
    crm_revenue = sum((o.revenue for o in orders if o.crm_attributed), Decimal(0))
    crm_spend = sum((s.amount for s in spends if s.category == "crm"), Decimal(0))
    acquisition = sum(
        (s.amount for s in spends if s.category == "acquisition"), Decimal(0)
    )
    values[("crm_roi", w, None)] = ratio(crm_revenue - crm_spend, crm_spend)
    values[("crm_attributed_revenue", w, None)] = float(crm_revenue)
    values[("crm_spend", w, None)] = float(crm_spend)
    values[("acquisition_spend", w, None)] = float(acquisition)
    revenue = sum((o.revenue for o in orders), Decimal(0))
    margin = sum((o.revenue - o.cost for o in orders), Decimal(0))
    values[("margin", w, None)] = float(margin)
    values[("margin_rate", w, None)] = ratio(margin, revenue)
    values[("revenue", w, None)] = float(revenue)

    lost = _of(inside, "deal.lost")
    for reason in (None, *LOST_REASONS):
        key = "all" if reason is None else reason
        these = [d for d in lost if reason is None or d.reason == reason]
        values[("lost_deals", w, key)] = float(len(these))
        values[("lost_deals_value", w, key)] = float(
            sum((d.amount or Decimal(0) for d in these), Decimal(0))
        )

    complaints = _of(inside, "complaint.filed")
    for category in (None, *COMPLAINT_CATEGORIES):
        key = "all" if category is None else category
        these = [c for c in complaints if category is None or c.category == category]
        values[("complaints", w, key)] = float(len(these))


def _first_contact(
    values: dict[SeriesKey, float | None],
    w: str,
    applied: list[Applied],
    s: int,
    e: int,
) -> None:
    resolved = 0
    first = 0
    for a in applied:
        if a.type != "ticket.resolved" or not s <= a.t < e:
            continue
        resolved += 1
        before = [
            b
            for b in applied
            if b.type.startswith("ticket.")
            and b.event.ticket_id == a.event.ticket_id
            and s <= b.t < a.t
        ]
        replies = sum(1 for b in before if b.type == "ticket.replied")
        closes = sum(
            1 for b in before if b.type in ("ticket.reopened", "ticket.resolved")
        )
        if replies <= 1 and closes == 0:
            first += 1
    values[("first_contact_resolution", w, None)] = ratio(first, resolved)
    values[("tickets_resolved", w, None)] = float(resolved)


JOINING = ("lead.converted", "deal.won", "order.placed")


def timelines(applied: list[Applied]) -> dict[str, list[tuple[int, bool]]]:
    """Per customer, the (time, present after) states of the walk, with joins."""
    per_customer: dict[str, list[Applied]] = defaultdict(list)
    for a in applied:
        if a.type in (*JOINING, "customer.churned"):
            per_customer[a.event.customer_id].append(a)

    walked = {}
    for customer, events in per_customer.items():
        events.sort(key=lambda a: (a.t, a.event.event_id))
        present = False
        steps = []
        for a in events:
            joining = a.type in JOINING
            if joining and not present:
                present = True
                steps.append((a.t, True))
            elif not joining and present:
                present = False
                steps.append((a.t, False))
        walked[customer] = steps
    return walked


def present_at(steps: list[tuple[int, bool]], at: int) -> bool:
    present = False
    for t, state in steps:
        if t < at:
            present = state
    return present


def _customers(
    values: dict[SeriesKey, float | None],
    w: str,
    applied: list[Applied],
    s: int,
    e: int,
) -> None:
    walked = timelines(applied)
    start = {c for c, steps in walked.items() if present_at(steps, s)}
    end = {c for c, steps in walked.items() if present_at(steps, e)}
    new = {
        c for c, steps in walked.items() if any(st and s <= t < e for t, st in steps)
    }
    retained = len(start & end)
    values[("customer_churn", w, None)] = ratio(len(start) - retained, len(start))
    values[("customer_base_start", w, None)] = float(len(start))
    values[("customer_base_end", w, None)] = float(len(end))
    values[("customer_retention", w, None)] = ratio(retained, len(start))
    values[("portfolio_growth", w, None)] = ratio(len(end) - len(start), len(start))
    values[("customers_new", w, None)] = float(len(new))
    spend = sum(
        (
            a.event.amount
            for a in applied
            if a.type == "spend.recorded"
            and a.event.category == "acquisition"
            and s <= a.t < e
        ),
        Decimal(0),
    )
    values[("customer_acquisition_cost", w, None)] = ratio(spend, len(new))


def _messages(
    values: dict[SeriesKey, float | None],
    w: str,
    applied: list[Applied],
    s: int,
    e: int,
) -> None:
    delivered_at: dict[str, int] = {}
    opened: set[str] = set()
    clicked: set[str] = set()
    for a in applied:
        if a.type == "email.delivered":
            m = a.event.message_id
            delivered_at[m] = min(delivered_at.get(m, a.t), a.t)
        elif a.type == "email.opened":
            opened.add(a.event.message_id)
        elif a.type == "email.clicked":
            clicked.add(a.event.message_id)
    inside = [m for m, t in delivered_at.items() if s <= t < e]
    values[("email_open", w, None)] = ratio(
        sum(1 for m in inside if m in opened), len(inside)
    )
    values[("email_click", w, None)] = ratio(
        sum(1 for m in inside if m in clicked), len(inside)
    )
    values[("messages_delivered", w, None)] = float(len(inside))


def _quotes(
    values: dict[SeriesKey, float | None],
    w: str,
    applied: list[Applied],
    s: int,
    e: int,
) -> None:
    first: dict[tuple[str, int], tuple[int, Decimal]] = {}
    for a in applied:
        if a.type == "quote.issued":
            first.setdefault((a.event.quote_id, a.event.version), (a.t, a.event.amount))
    inside = [amount for t, amount in first.values() if s <= t < e]
    values[("quotes_issued", w, None)] = float(len(inside))
    values[("quotes_issued_value", w, None)] = float(sum(inside, Decimal(0)))


def _sales_cycle(
    values: dict[SeriesKey, float | None],
    w: str,
    applied: list[Applied],
    s: int,
    e: int,
) -> None:
    cycles = []
    unknown = 0
    deals = [a for a in applied if a.type == "deal.won" and s <= a.t < e]
    for a in deals:
        starts = [
            b.t
            for b in applied
            if b.type == "lead.created" and b.event.lead_id == a.event.lead_id
        ]
        if a.event.lead_id is not None and starts:
            cycles.append(a.t - min(starts))
        elif a.event.lead_created_at is not None:
            cycles.append(a.t - millis_of(a.event.lead_created_at))
        else:
            unknown += 1
    cycles.sort()
    n = len(cycles)
    if n:
        mean: float | None = float(Fraction(sum(cycles), n * 1000))
        if n % 2:
            median: float | None = float(Fraction(cycles[n // 2], 1000))
        else:
            median = float(Fraction(cycles[n // 2 - 1] + cycles[n // 2], 2000))
        rank = -(-9 * n // 10)
        p90: float | None = float(Fraction(cycles[rank - 1], 1000))
    else:
        mean = median = p90 = None
    values[("sales_cycle_mean", w, None)] = mean
    values[("sales_cycle_median", w, None)] = median
    values[("sales_cycle_p90", w, None)] = p90
    values[("deals_won", w, None)] = float(len(deals))
    values[("deals_won_unknown_start", w, None)] = float(unknown)


def _quotas(
    values: dict[SeriesKey, float | None],
    applied: list[Applied],
    wm: int,
    settings: Settings,
) -> None:
    this = local_month(wm, settings.timezone)
    year, month = map(int, this.split("-"))
    previous = f"{year - 1:04d}-12" if month == 1 else f"{year:04d}-{month - 1:02d}"
    for window, period in (("month", this), ("last_month", previous)):
        latest: dict[str, tuple[int, str, Decimal]] = {}
        for a in applied:
            if a.type == "quota.set" and a.event.period == period:
                candidate = (a.t, a.event.event_id, a.event.amount)
                current = latest.get(a.event.rep_id)
                if current is None or candidate[:2] > current[:2]:
                    latest[a.event.rep_id] = candidate
        attainments = []
        for rep, (_, _, quota) in latest.items():
            if quota <= 0:
                continue
            won = sum(
                (
                    a.event.amount
                    for a in applied
                    if a.type == "deal.won"
                    and a.event.rep_id == rep
                    and local_month(a.t, settings.timezone) == period
                ),
                Decimal(0),
            )
            attainments.append(Fraction(won) / Fraction(quota))
        n = len(attainments)
        values[("reps_with_quota", window, None)] = float(n)
        values[("quota_attainment", window, None)] = ratio(
            sum(1 for x in attainments if x >= 1), n
        )
        values[("quota_attainment_mean", window, None)] = (
            float(sum(attainments, Fraction(0)) / n) if n else None
        )


def _now(
    values: dict[SeriesKey, float | None],
    applied: list[Applied],
    wm: int,
    settings: Settings,
) -> None:
    walked = timelines(applied)
    present = {c for c, steps in walked.items() if steps and steps[-1][1]}
    horizon = settings.active_horizon_days * DAY
    ordered = {
        a.event.customer_id
        for a in applied
        if a.type == "order.placed" and wm - horizon < a.t <= wm
    }
    values[("active_customers", "now", None)] = float(len(present & ordered))
    values[("dormant_customers", "now", None)] = float(len(present - ordered))

    created: dict[str, int] = {}
    closed: set[str] = set()
    contacted: dict[str, list[int]] = defaultdict(list)
    for a in applied:
        lead = getattr(a.event, "lead_id", None)
        if lead is None:
            continue
        if a.type == "lead.created":
            created[lead] = min(created.get(lead, a.t), a.t)
        elif a.type in ("lead.converted", "lead.disqualified", "deal.lost"):
            closed.add(lead)
        elif a.type == "lead.contacted":
            contacted[lead].append(a.t)
    old_open = [
        lead for lead, t in created.items() if lead not in closed and t < wm - DAY
    ]
    followed = [
        lead
        for lead in old_open
        if any(wm - 7 * DAY <= t <= wm for t in contacted[lead])
    ]
    values[("prospect_follow_up", "now", None)] = ratio(len(followed), len(old_open))
    values[("open_leads", "now", None)] = float(len(old_open))
