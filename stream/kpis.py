"""The KPI engine: admits CRM events in arrival order and computes every KPI.

Pure logic, no Kafka and no I/O: `admit` applies one event (already
validated, money already in the reporting currency) to the state in
`stream.state`, and `values` reads every series of the catalogue at the
watermark. The rules are those of `docs/semantics.md`. State expires on event
time only: as the watermark moves, whatever no window can reach is dropped.
"""

from __future__ import annotations

import enum
import logging
import pickle
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

from schemas.events import (
    AdClick,
    AdImpression,
    ComplaintFiled,
    CustomerChurned,
    DealLost,
    DealWon,
    EmailBounced,
    EmailClicked,
    EmailDelivered,
    EmailOpened,
    EmailSent,
    EmailUnsubscribed,
    Envelope,
    Event,
    LeadContacted,
    LeadConverted,
    LeadCreated,
    LeadDisqualified,
    NewsletterSubscribed,
    OrderPlaced,
    QuotaSet,
    QuoteIssued,
    SiteVisit,
    SpendRecorded,
    TicketOpened,
    TicketReopened,
    TicketReplied,
    TicketResolved,
)
from stream.catalogue import (
    CHANNELS,
    COMPLAINT_CATEGORIES,
    LOST_REASONS,
    OVERALL,
    WINDOWED,
    SeriesKey,
    all_keys,
)
from stream.errors import CheckpointError
from stream.settings import Settings
from stream.state.claims import EventClaims
from stream.state.counters import (
    ACQUISITION_SPEND,
    AD_CLICKS,
    AD_IMPRESSIONS,
    CATEGORY_INDEX,
    CHANNEL_INDEX,
    COMPLAINTS,
    CRM_REVENUE,
    CRM_SPEND,
    DISQUALIFIED_ACROSS_MONTHS,
    EMAILS_DELIVERED,
    EMAILS_SENT,
    EMAILS_UNSUBSCRIBED,
    EXACT,
    LEADS_CONVERTED,
    LEADS_CREATED,
    LOST_DEALS,
    LOST_VALUE,
    MARGIN,
    MESSAGES_CLICKED,
    MESSAGES_DELIVERED,
    MESSAGES_OPENED,
    NEWSLETTER_SIGNUPS,
    QUOTES_ISSUED,
    QUOTES_VALUE,
    REASON_INDEX,
    RESOLUTIONS_DISQUALIFIED,
    REVENUE,
    SITE_VISITS,
    TICKETS_RESOLVED,
    Counters,
    Totals,
)
from stream.state.customers import CustomerBase
from stream.state.deals import WonDeals
from stream.state.leads import Leads
from stream.state.messages import Messages
from stream.state.quotas import Quotas
from stream.state.quotes import Quotes
from stream.state.tickets import Tickets
from stream.windows import (
    DAY_MS,
    FAR_PAST,
    HOUR_MS,
    LONGEST_ROLLING_MS,
    MINUTE_MS,
    Bounds,
    Calendar,
    Window,
    epoch_ms,
    period_month,
    windows_at,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the checkpoint format; bump it whenever the state's shape changes."""

_MAGIC = b"crm-kpi-stream state\n"
_VERSION_BYTES = 2

_ALL_KEYS: tuple[SeriesKey, ...] = tuple(all_keys())
_WINDOW_INDEX = {name: index for index, name in enumerate(WINDOWED)}
_LAST_MONTH = _WINDOW_INDEX["last_month"]
_DAY_24H = _WINDOW_INDEX["24h"]
_DAYS_30 = _WINDOW_INDEX["30d"]

Number = int | Decimal | Fraction


class Admission(enum.Enum):
    """What `KpiEngine.admit` did with an event."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    LATE = "late"


class KpiEngine:
    """A deterministic, incremental state machine from CRM events to KPI values.

    Feed it events one at a time in arrival order with `admit`; read every
    series of the catalogue at the current watermark with `values`. `dump`
    and `load` turn the whole state into bytes and back, for checkpoints.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._calendar = Calendar(settings.timezone)
        self._late_ms = LONGEST_ROLLING_MS + settings.late_grace_seconds * 1000
        self._watermark: int | None = None
        self._minute = FAR_PAST
        self._hour = FAR_PAST
        self._cut = FAR_PAST

        bounds = _initial_bounds()
        self._claims = EventClaims(settings.dedupe_horizon_seconds * 1000)
        self._counters = Counters(self._calendar)
        self._customers = CustomerBase(bounds, settings.active_horizon_days * DAY_MS)
        self._tickets = Tickets(self._counters, self._calendar)
        self._leads = Leads()
        self._deals = WonDeals(bounds)
        self._messages = Messages(self._counters)
        self._quotes = Quotes(self._counters)
        self._quotas = Quotas()

        self._handlers: dict[type[Envelope], Callable[[Any, int], None]] = {
            LeadCreated: self._lead_created,
            LeadContacted: self._lead_contacted,
            LeadConverted: self._lead_converted,
            LeadDisqualified: self._lead_disqualified,
            QuoteIssued: self._quote_issued,
            DealWon: self._deal_won,
            DealLost: self._deal_lost,
            QuotaSet: self._quota_set,
            OrderPlaced: self._order_placed,
            CustomerChurned: self._customer_churned,
            SiteVisit: self._site_visit,
            AdImpression: self._ad_impression,
            AdClick: self._ad_click,
            NewsletterSubscribed: self._newsletter_subscribed,
            SpendRecorded: self._spend_recorded,
            EmailSent: self._email_sent,
            EmailDelivered: self._email_delivered,
            EmailOpened: self._email_opened,
            EmailClicked: self._email_clicked,
            EmailUnsubscribed: self._email_unsubscribed,
            EmailBounced: self._no_figure,
            TicketOpened: self._no_figure,
            TicketReplied: self._ticket_replied,
            TicketReopened: self._ticket_reopened,
            TicketResolved: self._ticket_resolved,
            ComplaintFiled: self._complaint_filed,
        }

    @property
    def watermark_ms(self) -> int | None:
        """The largest event time applied so far, or None before the first.

        Only events move it. On a live stream that falls silent the KPIs stay
        at the last event's time rather than sliding on with the wall clock,
        which the contract allows; doing so would need the wall-clock advance
        recorded in the checkpoint, so that a restart computes the same values.
        """
        return self._watermark

    @property
    def tracked_entities(self) -> int:
        """Customers, leads, tickets, messages, reps, quotes, won deals and ids held."""
        return (
            len(self._customers)
            + len(self._leads)
            + len(self._tickets)
            + len(self._messages)
            + len(self._quotas)
            + len(self._quotes)
            + len(self._deals)
            + len(self._claims)
        )

    def admit(self, event: Event) -> Admission:
        """Apply an event unless it is a duplicate or late; say which it was.

        The checks run in the order of the semantics page: a duplicate first
        (its id claimed within the horizon of the watermark before it), then
        late (older than the watermark - 30 d - grace), else it is applied,
        moves the watermark and claims its id.
        """
        millis = epoch_ms(event.occurred_at)
        watermark = self._watermark
        if watermark is None:
            watermark = self._advance(millis)
        else:
            if self._claims.is_claimed(event.event_id, watermark):
                return Admission.DUPLICATE
            if millis < watermark - self._late_ms:
                return Admission.LATE
            if millis > watermark:
                watermark = self._advance(millis)

        self._claims.claim(event.event_id, millis, watermark)
        self._handlers[type(event)](event, millis)
        return Admission.APPLIED

    def values(self) -> dict[SeriesKey, float | None]:
        """Return every series of the catalogue at the watermark.

        The keys are exactly `catalogue.all_keys()`, in that order; a series
        with no value (a zero denominator) maps to None. Before the first
        applied event there is no watermark and the result is empty. Each
        value is the float nearest to the exact figure: sums are exact
        integers and decimals, ratios exact fractions, rounded once.

        Reading also brings the entity state up to the watermark (which
        `admit` does once per hour of event time): window bounds move and
        state no window can reach is dropped. No figure depends on when
        that happens.
        """
        watermark = self._watermark
        if watermark is None:
            return {}

        windows = windows_at(watermark, self._calendar)
        self._tidy(watermark, windows)

        figures: dict[SeriesKey, float | None] = {}
        for index, window in enumerate(windows):
            self._window_figures(figures, index, window)
        self._monthly_figures(figures, watermark)
        self._now_figures(figures, watermark)
        return {key: figures[key] for key in _ALL_KEYS}

    def dump(self) -> bytes:
        """Return the whole state as bytes, for a checkpoint."""
        state = {
            "settings": self._fingerprint(),
            "clock": (self._watermark, self._minute, self._hour, self._cut),
            "claims": self._claims.export(),
            "counters": self._counters.export(),
            "customers": self._customers.export(),
            "tickets": self._tickets.export(),
            "leads": self._leads.export(),
            "deals": self._deals.export(),
            "messages": self._messages.export(),
            "quotes": self._quotes.export(),
            "quotas": self._quotas.export(),
        }
        header = _MAGIC + FORMAT_VERSION.to_bytes(_VERSION_BYTES, "big")
        return header + pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, data: bytes, settings: Settings) -> KpiEngine:
        """Rebuild an engine from `dump()` output.

        Raises:
            CheckpointError: the bytes are not a checkpoint of this format
                version, are damaged, or were written under other settings.
        """
        if not data.startswith(_MAGIC):
            raise CheckpointError(
                "the checkpoint does not start with the KPI state header; it is"
                " not a KPI state, rebuild it by replaying the events topic"
            )

        body = data[len(_MAGIC) :]
        version = int.from_bytes(body[:_VERSION_BYTES], "big")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"the checkpoint has format version {version}, this engine reads"
                f" version {FORMAT_VERSION}; rebuild the state by replaying the"
                " events topic"
            )

        # The checkpoint topic is trusted input: only this worker writes it,
        # and unpickling runs code named in the data. It must never be opened
        # to other producers.
        try:
            state = pickle.loads(body[_VERSION_BYTES:])
        except Exception as error:
            raise CheckpointError(
                f"the checkpoint of format version {version} cannot be read:"
                f" {error}; rebuild the state by replaying the events topic"
            ) from error

        if not isinstance(state, dict):
            raise CheckpointError(
                f"the checkpoint of format version {version} holds a"
                f" {type(state).__name__}, not the state; rebuild the state by"
                " replaying the events topic"
            )

        engine = cls(settings)
        written = state.get("settings")
        if written != engine._fingerprint():
            raise CheckpointError(
                f"the checkpoint was written with {written}, the settings now say"
                f" {engine._fingerprint()}; restore those settings or rebuild the"
                " state by replaying the events topic"
            )

        try:
            engine._restore(state)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"the checkpoint of format version {version} is damaged: {error!r};"
                " rebuild the state by replaying the events topic"
            ) from error

        logger.info(
            "kpi state restored watermark=%s entities=%s",
            engine._watermark,
            engine.tracked_entities,
        )
        return engine

    def _restore(self, state: dict[str, Any]) -> None:
        self._watermark, self._minute, self._hour, self._cut = state["clock"]
        self._claims.restore(state["claims"])
        self._counters.restore(state["counters"])
        self._customers.restore(state["customers"])
        self._tickets.restore(state["tickets"])
        self._leads.restore(state["leads"])
        self._deals.restore(state["deals"])
        self._messages.restore(state["messages"])
        self._quotes.restore(state["quotes"])
        self._quotas.restore(state["quotas"])

    def _fingerprint(self) -> dict[str, object]:
        # The settings the state itself depends on: buckets are local days,
        # claims and late limits follow the horizons. Output-only settings
        # (the daily target, the currency label) may change freely.
        settings = self._settings
        return {
            "timezone": settings.timezone,
            "dedupe_horizon_seconds": settings.dedupe_horizon_seconds,
            "late_grace_seconds": settings.late_grace_seconds,
            "active_horizon_days": settings.active_horizon_days,
        }

    def _advance(self, millis: int) -> int:
        self._watermark = millis
        minute = millis // MINUTE_MS
        if minute == self._minute:
            return millis

        # Once per minute of event time: place the windows, drop the buckets
        # and claims they left behind, and hourly tidy the entity state.
        self._minute = minute
        windows = windows_at(millis, self._calendar)
        last_month = windows[_LAST_MONTH]

        # The cut is before every window start and before the oldest time an
        # event may still be applied at; it depends on the watermark alone
        # (floored to the minute), so forgetting never depends on call order.
        self._cut = min(last_month.start, minute * MINUTE_MS - self._late_ms)
        self._counters.retain(
            windows[_DAY_24H].start,
            windows[_DAYS_30].start,
            last_month.first_day if last_month.first_day is not None else FAR_PAST,
        )
        self._claims.expire(millis)

        hour = millis // HOUR_MS
        if hour != self._hour:
            self._hour = hour
            self._tidy(millis, windows)
        return millis

    def _tidy(self, watermark: int, windows: tuple[Window, ...]) -> None:
        bounds = _entity_bounds(windows)
        self._customers.move_bounds(bounds)
        self._deals.move_bounds(bounds)
        self._leads.move_to(watermark)

        cut = self._cut
        self._customers.compact(cut, watermark)
        self._deals.compact(cut)
        self._tickets.compact(cut)
        self._messages.compact(cut)
        self._quotes.compact(cut)
        self._quotas.expire(self._calendar.month_of(windows[_LAST_MONTH].start))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "kpi state tidied watermark=%s cut=%s entities=%s buckets=%s",
                watermark,
                cut,
                self.tracked_entities,
                len(self._counters),
            )

    def _window_figures(
        self, figures: dict[SeriesKey, float | None], index: int, window: Window
    ) -> None:
        name = window.name
        totals = self._counters.totals(window)
        counts = totals.counts
        money = totals.money

        def put(series: str, value: float | None, dimension: str | None = None) -> None:
            figures[(series, name, dimension)] = value

        created = totals.count_all(LEADS_CREATED, len(CHANNELS))
        converted = counts[LEADS_CONVERTED]
        put("lead_conversion", _ratio(converted, created))
        put("lead_volume", float(created))
        put("leads_converted", float(converted))
        if name == "day":
            put("lead_volume_target", _ratio(created, self._settings.daily_lead_target))

        resolved = counts[TICKETS_RESOLVED]
        disqualified = counts[RESOLUTIONS_DISQUALIFIED]
        if index == _LAST_MONTH:
            disqualified -= counts[DISQUALIFIED_ACROSS_MONTHS]
        put("first_contact_resolution", _ratio(resolved - disqualified, resolved))
        put("tickets_resolved", float(resolved))

        crm_revenue, crm_spend = money[CRM_REVENUE], money[CRM_SPEND]
        put("crm_roi", _ratio(EXACT.subtract(crm_revenue, crm_spend), crm_spend))
        put("crm_attributed_revenue", float(crm_revenue))
        put("crm_spend", float(crm_spend))

        start, end, kept, new = self._customers.window_figures(index)
        put("customer_churn", _ratio(start - kept, start))
        put("customer_base_start", float(start))
        put("customer_base_end", float(end))
        put("customer_retention", _ratio(kept, start))
        put("portfolio_growth", _ratio(end - start, start))

        sent, delivered = counts[EMAILS_SENT], counts[EMAILS_DELIVERED]
        put("email_unsubscribe", _ratio(counts[EMAILS_UNSUBSCRIBED], delivered))
        put("emails_delivered", float(delivered))
        put("email_deliverability", _ratio(delivered, sent))
        put("emails_sent", float(sent))

        messages = counts[MESSAGES_DELIVERED]
        put("email_open", _ratio(counts[MESSAGES_OPENED], messages))
        put("email_click", _ratio(counts[MESSAGES_CLICKED], messages))
        put("messages_delivered", float(messages))

        visits = totals.count_all(SITE_VISITS, len(CHANNELS))
        self._by_channel(put, totals)
        put("newsletter_signup", _ratio(counts[NEWSLETTER_SIGNUPS], visits))
        put("newsletter_signups", float(counts[NEWSLETTER_SIGNUPS]))

        acquisition = money[ACQUISITION_SPEND]
        put("customer_acquisition_cost", _ratio(acquisition, new))
        put("acquisition_spend", float(acquisition))
        put("customers_new", float(new))

        put(
            "lost_deals",
            float(totals.count_all(LOST_DEALS, len(LOST_REASONS))),
            OVERALL,
        )
        put(
            "lost_deals_value",
            float(totals.money_all(LOST_VALUE, len(LOST_REASONS))),
            OVERALL,
        )
        for reason, offset in REASON_INDEX.items():
            put("lost_deals", float(counts[LOST_DEALS + offset]), reason)
            put("lost_deals_value", float(money[LOST_VALUE + offset]), reason)

        won, unknown, mean, median, p90 = self._deals.figures(index)
        put("sales_cycle_mean", _seconds(mean))
        put("sales_cycle_median", _seconds(median))
        put("sales_cycle_p90", _seconds(p90))
        put("deals_won", float(won))
        put("deals_won_unknown_start", float(unknown))

        put("quotes_issued", float(counts[QUOTES_ISSUED]))
        put("quotes_issued_value", float(money[QUOTES_VALUE]))

        complaints = totals.count_all(COMPLAINTS, len(COMPLAINT_CATEGORIES))
        put("complaints", float(complaints), OVERALL)
        for category, offset in CATEGORY_INDEX.items():
            put("complaints", float(counts[COMPLAINTS + offset]), category)

        revenue, margin = money[REVENUE], money[MARGIN]
        put("margin", float(margin))
        put("margin_rate", _ratio(margin, revenue))
        put("revenue", float(revenue))

    def _by_channel(self, put: Callable[..., None], totals: Totals) -> None:
        counts = totals.counts
        channels = len(CHANNELS)
        put(
            "channel_conversion",
            _ratio(
                totals.count_all(LEADS_CREATED, channels),
                totals.count_all(SITE_VISITS, channels),
            ),
            OVERALL,
        )
        put("site_visits", float(totals.count_all(SITE_VISITS, channels)), OVERALL)
        put(
            "ad_click_through",
            _ratio(
                totals.count_all(AD_CLICKS, channels),
                totals.count_all(AD_IMPRESSIONS, channels),
            ),
            OVERALL,
        )
        put(
            "ad_impressions",
            float(totals.count_all(AD_IMPRESSIONS, channels)),
            OVERALL,
        )
        for channel, offset in CHANNEL_INDEX.items():
            visits = counts[SITE_VISITS + offset]
            impressions = counts[AD_IMPRESSIONS + offset]
            put(
                "channel_conversion",
                _ratio(counts[LEADS_CREATED + offset], visits),
                channel,
            )
            put("site_visits", float(visits), channel)
            put(
                "ad_click_through",
                _ratio(counts[AD_CLICKS + offset], impressions),
                channel,
            )
            put("ad_impressions", float(impressions), channel)

    def _monthly_figures(
        self, figures: dict[SeriesKey, float | None], watermark: int
    ) -> None:
        month = self._calendar.month_of(watermark)
        for name, number in (("month", month), ("last_month", month - 1)):
            reps, share, mean = self._quotas.figures(number)
            figures[("quota_attainment", name, None)] = _exact(share)
            figures[("quota_attainment_mean", name, None)] = _exact(mean)
            figures[("reps_with_quota", name, None)] = float(reps)

    def _now_figures(
        self, figures: dict[SeriesKey, float | None], watermark: int
    ) -> None:
        active = self._customers.active(watermark)
        figures[("active_customers", "now", None)] = float(active)
        figures[("dormant_customers", "now", None)] = float(
            self._customers.present - active
        )

        open_leads, followed_up = self._leads.follow_up(watermark)
        figures[("prospect_follow_up", "now", None)] = _ratio(followed_up, open_leads)
        figures[("open_leads", "now", None)] = float(open_leads)

    # Event handlers, one per event type, in the order of the contract.

    def _lead_created(self, event: LeadCreated, millis: int) -> None:
        self._counters.count(millis, LEADS_CREATED + CHANNEL_INDEX[event.channel])
        started = self._leads.created(event.lead_id, millis)
        if started is not None:
            self._deals.lead_started(event.lead_id, started)

    def _lead_contacted(self, event: LeadContacted, millis: int) -> None:
        self._leads.contacted(event.lead_id, millis)

    def _lead_converted(self, event: LeadConverted, millis: int) -> None:
        self._counters.count(millis, LEADS_CONVERTED)
        self._leads.closed(event.lead_id)
        self._customers.join(event.customer_id, millis, event.event_id, False)

    def _lead_disqualified(self, event: LeadDisqualified, millis: int) -> None:
        self._leads.closed(event.lead_id)

    def _quote_issued(self, event: QuoteIssued, millis: int) -> None:
        self._quotes.issued(
            event.quote_id, event.version, millis, event.amount, self._cut
        )

    def _deal_won(self, event: DealWon, millis: int) -> None:
        self._customers.join(event.customer_id, millis, event.event_id, False)
        self._quotas.won(event.rep_id, self._calendar.month_of(millis), event.amount)

        # A seen lead.created wins over the deal's own lead_created_at.
        start = None
        if event.lead_id is not None:
            start = self._leads.creation(event.lead_id)
        if start is None and event.lead_created_at is not None:
            start = epoch_ms(event.lead_created_at)
        self._deals.won(millis, event.lead_id, start)

    def _deal_lost(self, event: DealLost, millis: int) -> None:
        offset = REASON_INDEX[event.reason]
        self._counters.count(millis, LOST_DEALS + offset)
        if event.amount is not None:
            self._counters.add_money(millis, LOST_VALUE + offset, event.amount)
        if event.lead_id is not None:
            self._leads.closed(event.lead_id)

    def _quota_set(self, event: QuotaSet, millis: int) -> None:
        self._quotas.set(
            event.rep_id,
            period_month(event.period),
            millis,
            event.event_id,
            event.amount,
        )

    def _order_placed(self, event: OrderPlaced, millis: int) -> None:
        revenue = event.revenue
        amounts: tuple[tuple[int, Decimal], ...] = (
            (REVENUE, revenue),
            (MARGIN, EXACT.subtract(revenue, event.cost)),
        )
        if event.crm_attributed:
            amounts += ((CRM_REVENUE, revenue),)
        self._counters.add_money_many(millis, amounts)
        self._customers.join(event.customer_id, millis, event.event_id, True)

    def _customer_churned(self, event: CustomerChurned, millis: int) -> None:
        self._customers.churn(event.customer_id, millis, event.event_id)

    def _site_visit(self, event: SiteVisit, millis: int) -> None:
        self._counters.count(
            millis, SITE_VISITS + CHANNEL_INDEX[event.channel], event.count
        )

    def _ad_impression(self, event: AdImpression, millis: int) -> None:
        self._counters.count(
            millis, AD_IMPRESSIONS + CHANNEL_INDEX[event.channel], event.count
        )

    def _ad_click(self, event: AdClick, millis: int) -> None:
        self._counters.count(
            millis, AD_CLICKS + CHANNEL_INDEX[event.channel], event.count
        )

    def _newsletter_subscribed(self, event: NewsletterSubscribed, millis: int) -> None:
        self._counters.count(millis, NEWSLETTER_SIGNUPS)

    def _spend_recorded(self, event: SpendRecorded, millis: int) -> None:
        slot = CRM_SPEND if event.category == "crm" else ACQUISITION_SPEND
        self._counters.add_money(millis, slot, event.amount)

    def _email_sent(self, event: EmailSent, millis: int) -> None:
        self._counters.count(millis, EMAILS_SENT)

    def _email_delivered(self, event: EmailDelivered, millis: int) -> None:
        self._counters.count(millis, EMAILS_DELIVERED)
        self._messages.delivered(event.message_id, millis, self._cut)

    def _email_opened(self, event: EmailOpened, millis: int) -> None:
        self._messages.opened(event.message_id, millis, self._cut)

    def _email_clicked(self, event: EmailClicked, millis: int) -> None:
        self._messages.clicked(event.message_id, millis, self._cut)

    def _email_unsubscribed(self, event: EmailUnsubscribed, millis: int) -> None:
        self._counters.count(millis, EMAILS_UNSUBSCRIBED)

    def _ticket_replied(self, event: TicketReplied, millis: int) -> None:
        self._tickets.replied(event.ticket_id, millis)

    def _ticket_reopened(self, event: TicketReopened, millis: int) -> None:
        self._tickets.reopened(event.ticket_id, millis)

    def _ticket_resolved(self, event: TicketResolved, millis: int) -> None:
        self._tickets.resolved(event.ticket_id, millis)

    def _complaint_filed(self, event: ComplaintFiled, millis: int) -> None:
        self._counters.count(millis, COMPLAINTS + CATEGORY_INDEX[event.category])

    def _no_figure(self, event: Envelope, millis: int) -> None:
        # email.bounced and ticket.opened feed no KPI; applying them still
        # claims their id and moves the watermark.
        return


def _initial_bounds() -> list[Bounds]:
    return [(FAR_PAST, FAR_PAST if name == "last_month" else None) for name in WINDOWED]


def _entity_bounds(windows: tuple[Window, ...]) -> list[Bounds]:
    # Every window but last_month ends after the watermark, so its end is
    # "after every applied event"; last_month ends at the month's start.
    return [
        (window.start, window.end if window.name == "last_month" else None)
        for window in windows
    ]


def _ratio(numerator: Number, denominator: Number) -> float | None:
    if denominator == 0:
        return None
    if isinstance(numerator, int) and isinstance(denominator, int):
        # Integer true division is correctly rounded in CPython.
        return numerator / denominator
    return float(Fraction(numerator) / Fraction(denominator))


def _exact(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def _seconds(millis: Fraction | int | None) -> float | None:
    return None if millis is None else float(Fraction(millis) / 1000)
