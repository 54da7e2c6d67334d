"""Reference KPI computation: a plain batch oracle for the streaming engine's tests.

Written straight from the KPI contract and docs/semantics.md, and independent of
the streaming engine: admit the events in arrival order, then compute every
series of the catalogue for every window at the final watermark, in one batch,
from the list of applied events. It sorts, filters and counts; it keeps no
incremental state, so that it is easy to check by reading.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, localcontext
from fractions import Fraction
from zoneinfo import ZoneInfo

from schemas.events import (
    AdClick,
    AdImpression,
    ComplaintFiled,
    CustomerChurned,
    DealLost,
    DealWon,
    EmailClicked,
    EmailDelivered,
    EmailOpened,
    Event,
    LeadContacted,
    LeadConverted,
    LeadCreated,
    LeadDisqualified,
    OrderPlaced,
    QuotaSet,
    QuoteIssued,
    SiteVisit,
    SpendRecorded,
    TicketReopened,
    TicketReplied,
    TicketResolved,
)
from stream.catalogue import (
    AT_WATERMARK,
    CHANNELS,
    COMPLAINT_CATEGORIES,
    LOST_REASONS,
    MONTHLY,
    OVERALL,
    WINDOWED,
    SeriesKey,
    all_keys,
)
from stream.settings import Settings

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

ROLLING_MS: dict[str, tuple[int, int]] = {
    "1h": (HOUR_MS, MINUTE_MS),
    "24h": (DAY_MS, 5 * MINUTE_MS),
    "7d": (7 * DAY_MS, HOUR_MS),
    "30d": (30 * DAY_MS, HOUR_MS),
}
"""Rolling windows: name -> (size W, step R), in milliseconds."""

LARGEST_WINDOW_MS = 30 * DAY_MS
FOLLOW_UP_AGE_MS = DAY_MS
FOLLOW_UP_CONTACT_MS = 7 * DAY_MS

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Money must stay exact: 200 digits hold any product of a contract amount (at
# most 40 digits) and a rate, and any sum of them; should a rate ever need
# more, the Inexact trap raises instead of rounding silently.
EXACT = Context(prec=200, traps=[Inexact, InvalidOperation, Overflow])

Value = float | None


@dataclass
class ReferenceResult:
    """What the reference computation gives for one event log."""

    values: dict[SeriesKey, Value]
    watermark_ms: int | None
    applied: int
    duplicates: int
    late: int
    late_event_ids: list[str]
    duplicate_event_ids: list[str]


@dataclass(frozen=True)
class Applied:
    """An applied event with its event time and its rank in arrival order."""

    time: int
    seq: int
    event: Event


def event_time_ms(moment: datetime) -> int:
    """Return an aware datetime as epoch milliseconds, sub-millisecond floored."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def reference_kpis(events: Iterable[Event], settings: Settings) -> ReferenceResult:
    """Admit `events` (valid, in arrival order) and compute every KPI series.

    Returns the value of every key of the catalogue at the final watermark, or
    no value at all when no event was applied.
    """
    with localcontext(EXACT):
        result, applied = admit(events, settings)
        if result.watermark_ms is None:
            return result

        log = EventLog(applied, settings)
        values: dict[SeriesKey, Value] = {}
        for window, (start, end) in window_bounds(
            result.watermark_ms, settings
        ).items():
            values.update(windowed_values(log, window, start, end, settings))
        values.update(quota_values(log, result.watermark_ms, settings))
        values.update(state_values(log, result.watermark_ms, settings))

    expected = all_keys()
    if set(values) != set(expected):
        missing = sorted(set(expected) - set(values), key=str)
        extra = sorted(set(values) - set(expected), key=str)
        raise AssertionError(f"reference keys differ: missing {missing}, extra {extra}")
    result.values = {key: values[key] for key in expected}
    return result


# Admission


def admit(
    events: Iterable[Event], settings: Settings
) -> tuple[ReferenceResult, list[Applied]]:
    """Run duplicate, late and apply steps in arrival order, as semantics.md says.

    Returns the counters (with empty values) and the applied events in arrival
    order.
    """
    horizon = settings.dedupe_horizon_seconds * 1000
    late_limit = LARGEST_WINDOW_MS + settings.late_grace_seconds * 1000
    result = ReferenceResult({}, None, 0, 0, 0, [], [])
    applied: list[Applied] = []

    # event id -> event time of the applied event that last claimed it. A
    # claim older than the horizon never becomes recent again (the watermark
    # only grows), so keeping it is the same as forgetting it.
    claims: dict[str, int] = {}

    for event in events:
        moment = event_time_ms(event.occurred_at)
        wm = result.watermark_ms
        claim = claims.get(event.event_id)

        if wm is not None and claim is not None and claim >= wm - horizon:
            result.duplicates += 1
            result.duplicate_event_ids.append(event.event_id)
            continue

        if wm is not None and moment < wm - late_limit:
            result.late += 1
            result.late_event_ids.append(event.event_id)
            continue

        applied.append(Applied(moment, len(applied), event))
        claims[event.event_id] = moment
        result.watermark_ms = moment if wm is None else max(wm, moment)

    result.applied = len(applied)
    return result, applied


# Windows


def window_bounds(watermark_ms: int, settings: Settings) -> dict[str, tuple[int, int]]:
    """Return every windowed window's `[start, end)` in epoch ms at a watermark."""
    bounds: dict[str, tuple[int, int]] = {}
    for window, (size, step) in ROLLING_MS.items():
        bucket = watermark_ms // step * step
        bounds[window] = (bucket - size + step, bucket + step)

    zone = ZoneInfo(settings.timezone)
    today = (EPOCH + timedelta(milliseconds=watermark_ms)).astimezone(zone).date()
    this_month = today.replace(day=1)
    bounds["day"] = (
        local_midnight_ms(today, zone),
        local_midnight_ms(today + timedelta(days=1), zone),
    )
    bounds["month"] = (
        local_midnight_ms(this_month, zone),
        local_midnight_ms(next_month(this_month), zone),
    )
    bounds["last_month"] = (
        local_midnight_ms(previous_month(this_month), zone),
        local_midnight_ms(this_month, zone),
    )

    return {window: bounds[window] for window in WINDOWED}


def local_midnight_ms(day: date, zone: ZoneInfo) -> int:
    """Return the start of a local day as epoch ms.

    A midnight skipped by a daylight-saving jump takes the offset before the
    jump (fold 0), which lands on the jump itself: the first instant of that
    day. A midnight that occurs twice takes its first occurrence.
    """
    return event_time_ms(datetime.combine(day, time(0), tzinfo=zone))


def next_month(first: date) -> date:
    """Return the first day of the month after the one starting at `first`."""
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def previous_month(first: date) -> date:
    """Return the first day of the month before the one starting at `first`."""
    return (first - timedelta(days=1)).replace(day=1)


def month_period(watermark_ms: int, window: str, settings: Settings) -> str:
    """Return the `YYYY-MM` period of a monthly window, in the configured zone."""
    zone = ZoneInfo(settings.timezone)
    today = (EPOCH + timedelta(milliseconds=watermark_ms)).astimezone(zone).date()
    first = today.replace(day=1)
    if window == "last_month":
        first = previous_month(first)
    return f"{first.year:04d}-{first.month:02d}"


# The applied events, indexed for batch queries


@dataclass
class Timeline:
    """Applied events of one type sorted by event time (ties: arrival order)."""

    times: list[int] = field(default_factory=list)
    events: list[Applied] = field(default_factory=list)

    def between(self, start: int, end: int) -> list[Applied]:
        """Return the events with `start <= time < end`."""
        return self.events[
            bisect_left(self.times, start) : bisect_left(self.times, end)
        ]


@dataclass
class Customer:
    """One customer's walk through the base, from its joining and leaving events."""

    times: list[int] = field(default_factory=list)
    present_after: list[bool] = field(default_factory=list)
    join_times: list[int] = field(default_factory=list)
    order_times: list[int] = field(default_factory=list)

    def present_at(self, moment: int) -> bool:
        """Return whether it is in the base after all its events before `moment`."""
        before = bisect_left(self.times, moment)
        return before > 0 and self.present_after[before - 1]

    def present_now(self) -> bool:
        """Return whether it is in the base after all its applied events."""
        return bool(self.present_after) and self.present_after[-1]

    def joined_between(self, start: int, end: int) -> bool:
        """Return whether it joined (or rejoined) at a time in `[start, end)`."""
        first = bisect_left(self.join_times, start)
        return first < len(self.join_times) and self.join_times[first] < end


@dataclass
class Ticket:
    """Event times of one ticket's replies, reopens and resolutions, sorted."""

    replies: list[int] = field(default_factory=list)
    reopens: list[int] = field(default_factory=list)
    resolutions: list[int] = field(default_factory=list)


def count_between(times: list[int], start: int, end: int) -> int:
    """Return how many of the sorted `times` are in `[start, end)`."""
    return bisect_left(times, end) - bisect_left(times, start)


class EventLog:
    """The applied events, grouped by type and by entity once, then queried."""

    def __init__(self, applied: list[Applied], settings: Settings) -> None:
        self.settings = settings
        by_time = sorted(applied, key=lambda item: item.time)

        self.types: dict[str, Timeline] = defaultdict(Timeline)
        for item in by_time:
            timeline = self.types[item.event.type]
            timeline.times.append(item.time)
            timeline.events.append(item)

        self.customers = self._customers(applied)
        self.tickets = self._tickets(by_time)
        self.quotes = self._quotes(applied)
        self.delivered_at, self.opened, self.clicked = self._emails(by_time)
        self.lead_start, self.closed_leads, self.contacts = self._leads(by_time)

    def of(self, event_type: str, start: int, end: int) -> list[Applied]:
        """Return the applied events of a type with event time in `[start, end)`."""
        timeline = self.types.get(event_type)
        return timeline.between(start, end) if timeline else []

    def all_of(self, event_type: str) -> list[Applied]:
        """Return every applied event of a type, by event time."""
        timeline = self.types.get(event_type)
        return timeline.events if timeline else []

    def money(self, amount: Decimal, currency: str) -> Decimal:
        """Convert an amount to the reporting currency, exactly."""
        try:
            rate = self.settings.rates[currency]
        except KeyError:
            raise ValueError(
                f"currency {currency!r} has no rate in settings.rates; the reference"
                " expects valid events only"
            ) from None
        return amount * rate

    @staticmethod
    def _customers(applied: list[Applied]) -> dict[str, Customer]:
        # Each customer's joining and leaving events, in event-time order with
        # ties by event id; arrival order settles a tie left after that.
        moves: dict[str, list[Applied]] = defaultdict(list)
        for item in applied:
            event = item.event
            if isinstance(
                event, LeadConverted | DealWon | OrderPlaced | CustomerChurned
            ):
                moves[event.customer_id].append(item)

        customers: dict[str, Customer] = {}
        for customer_id, items in moves.items():
            items.sort(key=lambda item: (item.time, item.event.event_id, item.seq))
            customer = Customer()
            present = False
            for item in items:
                if isinstance(item.event, CustomerChurned):
                    present = False
                elif not present:
                    present = True
                    customer.join_times.append(item.time)
                if isinstance(item.event, OrderPlaced):
                    customer.order_times.append(item.time)
                customer.times.append(item.time)
                customer.present_after.append(present)
            customers[customer_id] = customer
        return customers

    @staticmethod
    def _tickets(by_time: list[Applied]) -> dict[str, Ticket]:
        tickets: dict[str, Ticket] = defaultdict(Ticket)
        for item in by_time:
            event = item.event
            if isinstance(event, TicketReplied):
                tickets[event.ticket_id].replies.append(item.time)
            elif isinstance(event, TicketReopened):
                tickets[event.ticket_id].reopens.append(item.time)
            elif isinstance(event, TicketResolved):
                tickets[event.ticket_id].resolutions.append(item.time)
        return tickets

    def _quotes(
        self, applied: list[Applied]
    ) -> dict[tuple[str, int], tuple[int, Decimal]]:
        # The first applied event of a (quote_id, version) pair, in arrival
        # order, fixes its time and amount; later ones change nothing.
        quotes: dict[tuple[str, int], tuple[int, Decimal]] = {}
        for item in applied:
            event = item.event
            if isinstance(event, QuoteIssued):
                pair = (event.quote_id, event.version)
                if pair not in quotes:
                    quotes[pair] = (item.time, self.money(event.amount, event.currency))
        return quotes

    @staticmethod
    def _emails(
        by_time: list[Applied],
    ) -> tuple[dict[str, int], set[str], set[str]]:
        delivered_at: dict[str, int] = {}
        opened: set[str] = set()
        clicked: set[str] = set()
        for item in by_time:
            event = item.event
            if isinstance(event, EmailDelivered):
                delivered_at.setdefault(event.message_id, item.time)
            elif isinstance(event, EmailOpened):
                opened.add(event.message_id)
            elif isinstance(event, EmailClicked):
                clicked.add(event.message_id)
        return delivered_at, opened, clicked

    @staticmethod
    def _leads(
        by_time: list[Applied],
    ) -> tuple[dict[str, int], set[str], dict[str, list[int]]]:
        lead_start: dict[str, int] = {}
        closed: set[str] = set()
        contacts: dict[str, list[int]] = defaultdict(list)
        for item in by_time:
            event = item.event
            if isinstance(event, LeadCreated):
                lead_start.setdefault(event.lead_id, item.time)
            elif isinstance(event, LeadConverted | LeadDisqualified | DealLost):
                # Only a deal.lost may name no lead. A deal.won does not close
                # a lead: the contract lists converted, disqualified and lost.
                if event.lead_id is not None:
                    closed.add(event.lead_id)
            elif isinstance(event, LeadContacted):
                contacts[event.lead_id].append(item.time)
        return lead_start, closed, contacts


# Output conversions


def ratio(numerator: int | Decimal | Fraction, denominator: int | Decimal) -> Value:
    """Return an exact ratio as a float, or no value when the denominator is 0."""
    if denominator == 0:
        return None
    return float(Fraction(numerator) / Fraction(denominator))


def count(value: int) -> float:
    """Return a count as a float."""
    return float(value)


def money(value: Decimal) -> float:
    """Return an exact money sum as a float."""
    return float(value)


# Windowed KPIs


def windowed_values(
    log: EventLog, window: str, start: int, end: int, settings: Settings
) -> dict[SeriesKey, Value]:
    """Return every series reported for a window `[start, end)`."""
    values: dict[SeriesKey, Value] = {}
    values.update(leads_and_traffic(log, window, start, end, settings))
    values.update(email_figures(log, window, start, end))
    values.update(money_figures(log, window, start, end))
    values.update(customer_base(log, window, start, end))
    values.update(support_figures(log, window, start, end))
    values.update(sales_figures(log, window, start, end))
    return values


def per_channel(items: list[Applied], weighed: bool) -> dict[str, int]:
    """Sum events by channel (`count` when weighed, else 1 each), with `all`."""
    totals = dict.fromkeys((OVERALL, *CHANNELS), 0)
    for item in items:
        event = item.event
        assert isinstance(event, LeadCreated | SiteVisit | AdImpression | AdClick)
        weight = event.count if weighed and not isinstance(event, LeadCreated) else 1
        totals[event.channel] += weight
        totals[OVERALL] += weight
    return totals


def leads_and_traffic(
    log: EventLog, window: str, start: int, end: int, settings: Settings
) -> dict[SeriesKey, Value]:
    """Lead conversion and volume, channel conversion, click-through, sign-ups."""
    created = per_channel(log.of("lead.created", start, end), weighed=False)
    converted = len(log.of("lead.converted", start, end))
    visits = per_channel(log.of("site.visit", start, end), weighed=True)
    impressions = per_channel(log.of("ad.impression", start, end), weighed=True)
    clicks = per_channel(log.of("ad.click", start, end), weighed=True)
    signups = len(log.of("newsletter.subscribed", start, end))

    values: dict[SeriesKey, Value] = {
        ("lead_conversion", window, None): ratio(converted, created[OVERALL]),
        ("lead_volume", window, None): count(created[OVERALL]),
        ("leads_converted", window, None): count(converted),
        ("newsletter_signup", window, None): ratio(signups, visits[OVERALL]),
        ("newsletter_signups", window, None): count(signups),
    }
    if window == "day":
        target = settings.daily_lead_target
        values[("lead_volume_target", window, None)] = ratio(created[OVERALL], target)
    for channel in (OVERALL, *CHANNELS):
        values[("channel_conversion", window, channel)] = ratio(
            created[channel], visits[channel]
        )
        values[("site_visits", window, channel)] = count(visits[channel])
        values[("ad_click_through", window, channel)] = ratio(
            clicks[channel], impressions[channel]
        )
        values[("ad_impressions", window, channel)] = count(impressions[channel])
    return values


def email_figures(
    log: EventLog, window: str, start: int, end: int
) -> dict[SeriesKey, Value]:
    """Deliverability, unsubscribes, and open and click rates of messages."""
    sent = len(log.of("email.sent", start, end))
    delivered = len(log.of("email.delivered", start, end))
    unsubscribed = len(log.of("email.unsubscribed", start, end))
    messages = [
        message for message, at in log.delivered_at.items() if start <= at < end
    ]
    opened = sum(1 for message in messages if message in log.opened)
    clicked = sum(1 for message in messages if message in log.clicked)

    return {
        ("email_deliverability", window, None): ratio(delivered, sent),
        ("emails_sent", window, None): count(sent),
        ("email_unsubscribe", window, None): ratio(unsubscribed, delivered),
        ("emails_delivered", window, None): count(delivered),
        ("email_open", window, None): ratio(opened, len(messages)),
        ("email_click", window, None): ratio(clicked, len(messages)),
        ("messages_delivered", window, None): count(len(messages)),
    }


def money_figures(
    log: EventLog, window: str, start: int, end: int
) -> dict[SeriesKey, Value]:
    """CRM ROI, margin and the spends, in the reporting currency."""
    revenue = Decimal(0)
    cost = Decimal(0)
    attributed = Decimal(0)
    for item in log.of("order.placed", start, end):
        order = item.event
        assert isinstance(order, OrderPlaced)
        order_revenue = log.money(order.revenue, order.currency)
        revenue += order_revenue
        cost += log.money(order.cost, order.currency)
        if order.crm_attributed:
            attributed += order_revenue

    spend = {"acquisition": Decimal(0), "crm": Decimal(0)}
    for item in log.of("spend.recorded", start, end):
        record = item.event
        assert isinstance(record, SpendRecorded)
        spend[record.category] += log.money(record.amount, record.currency)

    margin = revenue - cost
    return {
        ("crm_roi", window, None): ratio(attributed - spend["crm"], spend["crm"]),
        ("crm_attributed_revenue", window, None): money(attributed),
        ("crm_spend", window, None): money(spend["crm"]),
        ("acquisition_spend", window, None): money(spend["acquisition"]),
        ("margin", window, None): money(margin),
        ("margin_rate", window, None): ratio(margin, revenue),
        ("revenue", window, None): money(revenue),
    }


def customer_base(
    log: EventLog, window: str, start: int, end: int
) -> dict[SeriesKey, Value]:
    """Churn, retention, growth, new customers and CAC over `[start, end)`."""
    at_start = {cid for cid, c in log.customers.items() if c.present_at(start)}
    at_end = {cid for cid, c in log.customers.items() if c.present_at(end)}
    retained = len(at_start & at_end)
    new = sum(1 for c in log.customers.values() if c.joined_between(start, end))

    acquisition = Decimal(0)
    for item in log.of("spend.recorded", start, end):
        record = item.event
        assert isinstance(record, SpendRecorded)
        if record.category == "acquisition":
            acquisition += log.money(record.amount, record.currency)

    return {
        ("customer_churn", window, None): ratio(
            len(at_start) - retained, len(at_start)
        ),
        ("customer_base_start", window, None): count(len(at_start)),
        ("customer_base_end", window, None): count(len(at_end)),
        ("customer_retention", window, None): ratio(retained, len(at_start)),
        ("portfolio_growth", window, None): ratio(
            len(at_end) - len(at_start), len(at_start)
        ),
        ("customer_acquisition_cost", window, None): ratio(acquisition, new),
        ("customers_new", window, None): count(new),
    }


def support_figures(
    log: EventLog, window: str, start: int, end: int
) -> dict[SeriesKey, Value]:
    """First-contact resolution and complaints by category."""
    resolved = 0
    first_contact = 0
    for item in log.of("ticket.resolved", start, end):
        event = item.event
        assert isinstance(event, TicketResolved)
        ticket = log.tickets[event.ticket_id]

        # The ticket's own events at s <= t < r, r the resolution's time. The
        # bound is on event time: an event sharing the resolution's time is
        # not before it, whatever the event ids (semantics.md gives this
        # formula; its tie rule by event id is not applied here).
        replies = count_between(ticket.replies, start, item.time)
        reopens = count_between(ticket.reopens, start, item.time)
        earlier = count_between(ticket.resolutions, start, item.time)
        resolved += 1
        if replies <= 1 and reopens == 0 and earlier == 0:
            first_contact += 1

    complaints = dict.fromkeys((OVERALL, *COMPLAINT_CATEGORIES), 0)
    for item in log.of("complaint.filed", start, end):
        complaint = item.event
        assert isinstance(complaint, ComplaintFiled)
        complaints[complaint.category] += 1
        complaints[OVERALL] += 1

    values: dict[SeriesKey, Value] = {
        ("first_contact_resolution", window, None): ratio(first_contact, resolved),
        ("tickets_resolved", window, None): count(resolved),
    }
    for category, number in complaints.items():
        values[("complaints", window, category)] = count(number)
    return values


def sales_figures(
    log: EventLog, window: str, start: int, end: int
) -> dict[SeriesKey, Value]:
    """Lost deals by reason, quotes issued and the sales cycle."""
    lost = dict.fromkeys((OVERALL, *LOST_REASONS), 0)
    lost_value = dict.fromkeys((OVERALL, *LOST_REASONS), Decimal(0))
    for item in log.of("deal.lost", start, end):
        deal = item.event
        assert isinstance(deal, DealLost)
        amount = Decimal(0)
        if deal.amount is not None and deal.currency is not None:
            amount = log.money(deal.amount, deal.currency)
        for key in (OVERALL, deal.reason):
            lost[key] += 1
            lost_value[key] += amount

    quotes = [amount for at, amount in log.quotes.values() if start <= at < end]

    values: dict[SeriesKey, Value] = {
        ("quotes_issued", window, None): count(len(quotes)),
        ("quotes_issued_value", window, None): money(sum(quotes, Decimal(0))),
    }
    for reason in (OVERALL, *LOST_REASONS):
        values[("lost_deals", window, reason)] = count(lost[reason])
        values[("lost_deals_value", window, reason)] = money(lost_value[reason])
    values.update(sales_cycle(log, window, start, end))
    return values


def sales_cycle(
    log: EventLog, window: str, start: int, end: int
) -> dict[SeriesKey, Value]:
    """Mean, median and p90 of won time minus lead start, in seconds."""
    cycles: list[Fraction] = []
    won = log.of("deal.won", start, end)
    for item in won:
        deal = item.event
        assert isinstance(deal, DealWon)
        lead_start: int | None = None
        if deal.lead_id is not None:
            lead_start = log.lead_start.get(deal.lead_id)
        if lead_start is None and deal.lead_created_at is not None:
            lead_start = event_time_ms(deal.lead_created_at)
        if lead_start is not None:
            cycles.append(Fraction(item.time - lead_start, 1000))

    cycles.sort()
    n = len(cycles)
    mean: Value = None
    median: Value = None
    p90: Value = None
    if n:
        mean = float(sum(cycles, Fraction(0)) / n)
        middle = n // 2
        median = float(
            cycles[middle] if n % 2 else (cycles[middle - 1] + cycles[middle]) / 2
        )
        # Nearest rank: position ceil(0.9 n), counting from 1, in integers.
        p90 = float(cycles[(9 * n + 9) // 10 - 1])

    return {
        ("sales_cycle_mean", window, None): mean,
        ("sales_cycle_median", window, None): median,
        ("sales_cycle_p90", window, None): p90,
        ("deals_won", window, None): count(len(won)),
        ("deals_won_unknown_start", window, None): count(len(won) - n),
    }


# Quota attainment (month and last_month)


def quota_values(
    log: EventLog, watermark_ms: int, settings: Settings
) -> dict[SeriesKey, Value]:
    """Share of reps at or above quota, mean attainment and reps with a quota."""
    bounds = window_bounds(watermark_ms, settings)

    # (rep, period) -> the winning quota.set: latest event time, then the
    # greater event id; on a full tie the later arrival wins.
    latest: dict[tuple[str, str], tuple[int, str, int, Decimal]] = {}
    for item in log.all_of("quota.set"):
        quota = item.event
        assert isinstance(quota, QuotaSet)
        candidate = (
            item.time,
            quota.event_id,
            item.seq,
            log.money(quota.amount, quota.currency),
        )
        key = (quota.rep_id, quota.period)
        if key not in latest or candidate[:3] > latest[key][:3]:
            latest[key] = candidate

    values: dict[SeriesKey, Value] = {}
    for window in MONTHLY:
        start, end = bounds[window]
        period = month_period(watermark_ms, window, settings)
        quotas = {
            rep: amount
            for (rep, quota_period), (_, _, _, amount) in latest.items()
            if quota_period == period and amount > 0
        }

        won: dict[str, Decimal] = defaultdict(Decimal)
        for item in log.of("deal.won", start, end):
            deal = item.event
            assert isinstance(deal, DealWon)
            won[deal.rep_id] += log.money(deal.amount, deal.currency)

        attainments = [Fraction(won[rep]) / Fraction(q) for rep, q in quotas.items()]
        reached = sum(1 for attainment in attainments if attainment >= 1)
        values[("quota_attainment", window, None)] = ratio(reached, len(attainments))
        values[("quota_attainment_mean", window, None)] = ratio(
            sum(attainments, Fraction(0)), len(attainments)
        )
        values[("reps_with_quota", window, None)] = count(len(attainments))
    return values


# States at the watermark


def state_values(
    log: EventLog, watermark_ms: int, settings: Settings
) -> dict[SeriesKey, Value]:
    """Active and dormant customers, and prospect follow-up, at the watermark."""
    (now,) = AT_WATERMARK
    horizon = settings.active_horizon_days * DAY_MS

    # Any recent order counts, even one placed before a churn and rejoin:
    # the contract asks only for a customer in the base with a recent order.
    present = [c for c in log.customers.values() if c.present_now()]
    active = sum(
        1
        for c in present
        if any(watermark_ms - horizon < at <= watermark_ms for at in c.order_times)
    )

    old_enough = watermark_ms - FOLLOW_UP_AGE_MS
    contact_from = watermark_ms - FOLLOW_UP_CONTACT_MS
    open_leads = [
        lead
        for lead, created in log.lead_start.items()
        if lead not in log.closed_leads and created < old_enough
    ]
    followed = sum(
        1
        for lead in open_leads
        if any(contact_from <= at <= watermark_ms for at in log.contacts.get(lead, []))
    )

    return {
        ("active_customers", now, None): count(active),
        ("dormant_customers", now, None): count(len(present) - active),
        ("prospect_follow_up", now, None): ratio(followed, len(open_leads)),
        ("open_leads", now, None): count(len(open_leads)),
    }
