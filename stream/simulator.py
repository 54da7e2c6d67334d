"""Simulated CRM event streams: a seeded, deterministic funnel of every event type.

The model, in short. A simulated clock ticks with exponential gaps whose mean
follows `density` (events per simulated second), scaled by an hour-of-week
curve (busy working hours, quiet nights and weekends). Each tick emits one
event: the earliest follow-up that is due, or else a new *root* drawn by weight.

- Site visits arrive in batches per channel; leads come in from a channel mix.
  Most leads are contacted within hours (calls, emails, meetings, sometimes
  again days later); some never are. A contacted lead is disqualified, quoted,
  converts on its own, or goes stale. Quotes get revised versions, then the
  deal is won (the lead converts and places a first, CRM-attributed order) or
  lost with a reason. Existing customers get upsell quotes and deals too.
- The customer base starts with `initial_customers`; base customers place
  orders, open tickets (replies, resolution, sometimes a reopening), file
  complaints and churn. A churned customer never comes back.
- Email campaigns send to contacts: about 97 % delivered, the rest bounce hard
  or soft; a quarter of deliveries are opened, some clicked, a few
  unsubscribed. Ads report impressions in batches, clicks follow; newsletter
  sign-ups add contacts; spend is booked for acquisition and for the CRM.
- Every rep gets a quota at each month start (time zone of the options), set
  from the team's recent results; some are revised days later.
- The stream starts mid-life: an open pipeline of `initial_leads` created
  before the start (numbered first, `lead-000001` on) and the initial customers
  (`cust-000001` on), whose creation events are not in the stream.

Money is EUR mostly, USD and GBP for some customers and reps. Entity ids are
stable strings (`lead-000123`, `cust-000045`, `msg-0001234`). Nothing but the
seed feeds the random draws, so the same options give the same bytes; only
`start=None` (the wall clock) and live mode make runs differ.
"""

from __future__ import annotations

import heapq
import io
import logging
import math
import random
import time
from bisect import bisect
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Generic, Literal, NamedTuple, TextIO, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from schemas.events import EVENT_MODELS, EVENT_TYPES
from stream.errors import CrmKpiError
from stream.producer import KEY_FIELDS, record_key, send
from stream.settings import DEFAULT_RATES, Settings

logger = logging.getLogger(__name__)

Kind = Literal["valid", "duplicate", "out_of_order", "late", "invalid"]
KINDS: tuple[Kind, ...] = ("valid", "duplicate", "out_of_order", "late", "invalid")

SCENARIOS: dict[str, str] = {
    "deliverability_collapse": "most emails bounce: deliverability falls to ~30 %",
    "unsubscribe_spike": "a third of the opened emails lead to an unsubscription",
    "support_backlog": "few tickets are resolved at first contact, many reopen",
    "sales_slump": "almost every deal is lost: quota attainment collapses",
    "churn_wave": "customers churn ten times as often",
}
"""Degradations that make one KPI collapse on purpose, for alert tests."""

DEFECTS: tuple[str, ...] = (
    "not_json",
    "not_object",
    "unknown_type",
    "missing_field",
    "ill_typed",
    "unknown_currency",
    "absurd_timestamp",
    "naive_timestamp",
    "empty_id",
)
"""Kinds of invalid records the simulator injects."""

UNKNOWN_CURRENCIES = ("CNY", "BRL", "XBT", "INR")
"""Well-formed currency codes missing from the default rate table."""

ABSURD_TIMES = (
    "1970-01-01T00:00:00Z",
    "1899-12-31T23:59:59+00:00",
    "2999-12-31T23:59:59Z",
)

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
MONTH = 30 * DAY

_T = TypeVar("_T")
_Draft = tuple[str, str, dict[str, object]]
"""An event before emission: type, source, fields beyond the envelope."""
_Handler = Callable[[Any], _Draft | None]


class SimulationError(CrmKpiError):
    """The simulation options are inconsistent or out of range."""


@dataclass(frozen=True)
class SimulationOptions:
    """How to simulate a stream; the defaults give a clean stream of 10,000 events.

    The run stops after `events` records or `duration` of event time, whichever
    comes first; with neither it never stops. Each record is a duplicate, an
    invalid record, a late event or (else) the next event of the clock, drawn
    with the given rates; an out-of-order event is a clock event whose time is
    moved back.
    """

    seed: int = 0
    """Seed of every random draw."""
    events: int | None = 10_000
    """Records to emit, all kinds together; `None` for no limit."""
    duration: timedelta | None = None
    """Event time to cover from `start`; `None` for no limit."""
    start: datetime | None = None
    """Event time of the first tick (timezone-aware). `None`: the wall clock
    minus the span the run covers (`duration`, else `events / density`), so
    that the stream ends about now."""
    density: float = 0.02
    """Mean events per simulated second (the default is ~1,700 events a day)."""
    timezone: str = "UTC"
    """IANA zone of the event times' offsets, quota months and the daily curve."""
    duplicate_rate: float = 0.0
    """Share of records repeating the exact bytes of a recent record."""
    out_of_order_rate: float = 0.0
    """Share of records with an event time before the latest one emitted. A
    drawn record stays in order when moving it back would put it before the
    event it follows (a delivery before its send), so the share comes out a
    little lower."""
    max_disorder: timedelta = timedelta(hours=2)
    """How far back an out-of-order event may lie."""
    late_rate: float = 0.0
    """Share of records older than the latest event time minus 30 d and grace."""
    late_grace: timedelta = timedelta(hours=1)
    """The worker's grace past its largest window (`CRM_LATE_GRACE_SECONDS`)."""
    invalid_rate: float = 0.0
    """Share of invalid records, of the kinds in `DEFECTS`."""
    scenario: str | None = None
    """A degradation from `SCENARIOS`, or `None` for a healthy business."""
    scenario_start: datetime | None = None
    """When the scenario sets in; `None` for the whole run."""
    live: bool = False
    """Follow the wall clock: each event happens now and `start` is ignored.
    Pace the run with the `rate` of `produce`, since generation alone runs as
    fast as it can."""
    reps: int = 12
    """Sales reps, `rep-01` on."""
    agents: int = 8
    """Support agents, `agent-01` on."""
    initial_customers: int | None = None
    """Customers before the start; `None` scales it with `density`."""
    initial_leads: int | None = None
    """Open leads before the start; `None` scales it with `density`."""

    def __post_init__(self) -> None:
        rates = {
            "duplicate_rate": self.duplicate_rate,
            "out_of_order_rate": self.out_of_order_rate,
            "late_rate": self.late_rate,
            "invalid_rate": self.invalid_rate,
        }
        for name, value in rates.items():
            if not 0 <= value <= 1:
                raise SimulationError(f"{name} must lie in 0..1, not {value}")
        if sum(rates.values()) > 1:
            raise SimulationError(
                f"the rates of injected records add up to {sum(rates.values())};"
                " keep their sum at most 1"
            )

        if not self.density > 0 or not math.isfinite(self.density):
            raise SimulationError(f"density must be > 0 events/s, not {self.density}")
        if self.events is not None and self.events < 0:
            raise SimulationError(f"events must be >= 0, not {self.events}")
        if self.duration is not None and self.duration <= timedelta(0):
            raise SimulationError(f"duration must be positive, not {self.duration}")
        if not timedelta(0) < self.max_disorder < timedelta(days=30):
            raise SimulationError(
                f"max_disorder must lie between 0 and 30 days, not {self.max_disorder}"
            )
        if self.late_grace < timedelta(0):
            raise SimulationError(f"late_grace must be >= 0, not {self.late_grace}")
        if self.reps < 1 or self.agents < 1:
            raise SimulationError("reps and agents must each be at least 1")

        for name, moment in (
            ("start", self.start),
            ("scenario_start", self.scenario_start),
        ):
            if moment is not None and moment.tzinfo is None:
                raise SimulationError(
                    f"{name} {moment.isoformat()} has no time zone; give an"
                    " aware datetime, e.g. with tzinfo=UTC"
                )
        if self.scenario is not None and self.scenario not in SCENARIOS:
            raise SimulationError(
                f"unknown scenario {self.scenario!r}; choose one of"
                f" {', '.join(SCENARIOS)}"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SimulationError(
                f"unknown time zone {self.timezone!r}; give an IANA name such as"
                " 'Europe/Paris'"
            ) from exc


class SimulatedRecord(NamedTuple):
    """One record to produce, and what the simulator put into it."""

    key: bytes | None
    """Kafka key: the main entity id (see `stream.producer.KEY_FIELDS`)."""
    value: bytes
    """The exact JSON bytes of the record."""
    kind: Kind
    """What was injected: a clean event or one of the faults."""
    event_type: str | None = None
    """The event's `type`; `None` for an invalid record."""
    event_time: int | None = None
    """The event's `occurred_at` in ms since the epoch; `None` when invalid."""
    defect: str | None = None
    """For an invalid record, its kind among `DEFECTS`."""


@dataclass
class SimulationSummary:
    """What a run emitted and how long it took."""

    records: int = 0
    bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    by_type: dict[str, int] = field(default_factory=dict)
    """Records per event type, invalid ones left out."""
    first_event_time: datetime | None = None
    """Earliest event time of the clean and out-of-order events."""
    last_event_time: datetime | None = None
    """Latest event time of the clean and out-of-order events."""
    elapsed_seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Records per second over the run; 0 for an empty or instant run."""
        return self.records / self.elapsed_seconds if self.elapsed_seconds else 0.0

    def __str__(self) -> str:
        kinds = ", ".join(f"{kind} {count:,}" for kind, count in self.by_kind.items())
        first = self.first_event_time.isoformat() if self.first_event_time else "-"
        last = self.last_event_time.isoformat() if self.last_event_time else "-"
        return (
            f"{self.records:,} records ({kinds}), {self.bytes:,} bytes,"
            f" event time {first} .. {last},"
            f" {self.elapsed_seconds:,.2f} s, {self.rate:,.0f} records/s"
        )


def generate(options: SimulationOptions) -> Iterator[SimulatedRecord]:
    """Yield the records of a simulated stream, lazily.

    Raises:
        SimulationError: the options are out of range (see `SimulationOptions`).
    """
    return _Simulation(options).records()


async def produce(
    records: Iterable[SimulatedRecord],
    settings: Settings,
    rate: float | None = None,
    progress: bool = False,
) -> SimulationSummary:
    """Produce records to `settings.events_topic`, keyed by their entity.

    Args:
        records: usually `generate(options)`.
        settings: Kafka bootstrap servers and topic.
        rate: records per second to keep to, `None` for as fast as possible. A
            live simulation needs one, or its events pile up in no time.
        progress: show progress on stderr while producing.

    Raises:
        ProduceError: Kafka is unreachable or did not acknowledge every record.
    """
    tally = _Tally()
    delivery = await send(
        tally.pairs(records),
        settings,
        rate=rate,
        progress=progress,
        what="simulate",
    )
    return tally.summary(delivery.elapsed_seconds)


def write_jsonl(
    records: Iterable[SimulatedRecord], target: Path | IO[bytes] | TextIO
) -> SimulationSummary:
    """Write each record's exact bytes as one line of a JSON-lines file.

    Args:
        records: usually `generate(options)`.
        target: a file path (replaced), or an open stream left open: binary, or
            text with a binary buffer underneath (`sys.stdout`).
    """
    tally = _Tally()
    started = time.monotonic()
    if isinstance(target, Path):
        with target.open("wb") as stream:
            _write_lines(tally.pairs(records), stream)
    elif isinstance(target, io.TextIOBase):
        target.flush()
        _write_lines(tally.pairs(records), target.buffer)
        target.buffer.flush()
    else:
        _write_lines(tally.pairs(records), target)  # type: ignore[arg-type]
        target.flush()
    return tally.summary(time.monotonic() - started)


def _write_lines(
    pairs: Iterable[tuple[bytes | None, bytes]], stream: IO[bytes]
) -> None:
    write = stream.write
    for _, value in pairs:
        write(value + b"\n")


class _Tally:
    """Count records as they pass on their way out."""

    def __init__(self) -> None:
        self._summary = SimulationSummary()
        self._first: int | None = None
        self._last: int | None = None

    def pairs(
        self, records: Iterable[SimulatedRecord]
    ) -> Iterator[tuple[bytes | None, bytes]]:
        """Yield the key and value of each record, counting it."""
        summary = self._summary
        by_kind = summary.by_kind
        by_type = summary.by_type
        for record in records:
            summary.records += 1
            summary.bytes += len(record.value)
            by_kind[record.kind] += 1
            if record.event_type is not None:
                by_type[record.event_type] = by_type.get(record.event_type, 0) + 1
            moment = record.event_time
            if moment is not None and record.kind in ("valid", "out_of_order"):
                if self._first is None or moment < self._first:
                    self._first = moment
                if self._last is None or moment > self._last:
                    self._last = moment
            yield record.key, record.value

    def summary(self, elapsed: float) -> SimulationSummary:
        """Return the counts so far, with the run's elapsed time."""
        return replace(
            self._summary,
            by_kind=dict(self._summary.by_kind),
            by_type=dict(sorted(self._summary.by_type.items())),
            first_event_time=_utc(self._first),
            last_event_time=_utc(self._last),
            elapsed_seconds=elapsed,
        )


def _utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


class _Pick(Generic[_T]):
    """Draw a value by weight with one uniform draw."""

    __slots__ = ("_cumulative", "_total", "_values")

    def __init__(self, weights: Mapping[_T, float]) -> None:
        self._values = list(weights)
        self._cumulative: list[float] = []
        total = 0.0
        for weight in weights.values():
            total += weight
            self._cumulative.append(total)
        self._total = total

    def __call__(self, uniform: Callable[[], float]) -> _T:
        return self._values[bisect(self._cumulative, uniform() * self._total)]


class _EventTimes:
    """Format event times as RFC 3339 strings with the offset of one zone.

    Asking the zone for every event would cost more than building the rest of
    it, so the offset is looked up once per UTC hour (per event in the rare hour
    that holds an offset change) and the local date and hour once per hour; the
    rest is arithmetic.
    """

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._utc = zone.key in ("UTC", "Etc/UTC")
        self._hours: dict[int, tuple[int, str, int, bool]] = {}
        self._prefixes: dict[int, str] = {}

    def format(self, ms: int) -> str:
        """Return `ms` (since the epoch) as local time with its offset."""
        hour = self._hours.get(ms // HOUR) or self._hour(ms // HOUR)
        offset, suffix, _, steady = hour
        if not steady:
            offset, suffix = self._offset(datetime.fromtimestamp(ms / 1000, self._zone))
        local_hour, rest = divmod(ms + offset, HOUR)
        prefix = self._prefixes.get(local_hour) or self._prefix(local_hour)
        minutes, rest = divmod(rest, MINUTE)
        return f"{prefix}{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}{suffix}"

    def hour_of_week(self, ms: int) -> int:
        """Return the local hour of the week, 0 (Monday 0 h) to 167."""
        hour = self._hours.get(ms // HOUR) or self._hour(ms // HOUR)
        return hour[2]

    def _hour(self, hour: int) -> tuple[int, str, int, bool]:
        start = datetime.fromtimestamp(hour * 3600, self._zone)
        end = datetime.fromtimestamp(hour * 3600 + 3599.999, self._zone)
        offset, suffix = self._offset(start)
        steady = start.utcoffset() == end.utcoffset()
        if len(self._hours) > 16384:
            self._hours.clear()
        found = (offset, suffix, start.weekday() * 24 + start.hour, steady)
        self._hours[hour] = found
        return found

    def _offset(self, local: datetime) -> tuple[int, str]:
        """Return the UTC offset of `local` in ms, and as written after a time."""
        delta = local.utcoffset()
        assert delta is not None
        minutes = int(delta.total_seconds()) // 60
        if self._utc:
            return 0, "Z"
        sign = "-" if minutes < 0 else "+"
        hours, rest = divmod(abs(minutes), 60)
        return minutes * MINUTE, f"{sign}{hours:02d}:{rest:02d}"

    def _prefix(self, local_hour: int) -> str:
        """Return the date and hour of a local hour, as they begin a time."""
        moment = datetime(1970, 1, 1) + timedelta(hours=local_hour)
        prefix = f"{moment.date().isoformat()}T{moment.hour:02d}:"
        if len(self._prefixes) > 16384:
            self._prefixes.clear()
        self._prefixes[local_hour] = prefix
        return prefix

    def month(self, ms: int) -> tuple[str, int]:
        """Return the local month holding `ms` (`YYYY-MM`) and when the next starts."""
        local = datetime.fromtimestamp(ms / 1000, self._zone)
        year, month = (
            (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        )
        following = datetime(year, month, 1, tzinfo=self._zone)
        return f"{local.year:04d}-{local.month:02d}", int(following.timestamp() * 1000)


def _weekly_curve() -> list[float]:
    """Return the activity factor of each hour of the week, averaging 1."""
    day = [0.25] * 7 + [0.8, 1.1] + [1.6] * 9 + [1.2, 1.0, 0.9, 0.8, 0.6, 0.4]
    week = day * 5 + [factor * 0.5 for factor in day] * 2
    mean = sum(week) / len(week)
    return [factor / mean for factor in week]


@dataclass(frozen=True)
class _Behaviour:
    """Probabilities of the business model; a scenario overrides some."""

    contact: float = 0.8
    recontact: float = 0.35
    win: float = 0.3
    deliver: float = 0.97
    hard_bounce: float = 0.35
    open: float = 0.26
    reopen_email: float = 0.15
    click: float = 0.18
    unsubscribe: float = 0.004
    first_contact_resolution: float = 0.75
    reopen_ticket: float = 0.07
    churn_weight: float = 1.0


_SCENARIO_BEHAVIOUR: dict[str, dict[str, float]] = {
    "deliverability_collapse": {"deliver": 0.3},
    "unsubscribe_spike": {"unsubscribe": 0.33},
    "support_backlog": {"first_contact_resolution": 0.15, "reopen_ticket": 0.35},
    "sales_slump": {"win": 0.03},
    "churn_wave": {"churn_weight": 10.0},
}

_LEAD_CHANNELS = _Pick(
    {
        "organic": 22,
        "paid_search": 20,
        "paid_social": 10,
        "social": 6,
        "email": 10,
        "referral": 12,
        "direct": 8,
        "events": 6,
        "partner": 5,
        "other": 1,
    }
)
_VISIT_CHANNELS = _Pick(
    {
        "organic": 30,
        "direct": 20,
        "paid_search": 15,
        "paid_social": 8,
        "social": 8,
        "email": 6,
        "referral": 8,
        "events": 2,
        "partner": 2,
        "other": 1,
    }
)
_NEWSLETTER_CHANNELS = _Pick(
    {
        "organic": 35,
        "social": 20,
        "email": 10,
        "direct": 15,
        "referral": 10,
        "paid_social": 10,
    }
)
_AD_CHANNELS = _Pick(
    {"paid_search": 45, "paid_social": 35, "social": 10, "partner": 10}
)
_CLICK_THROUGH = {
    "paid_search": 0.035,
    "paid_social": 0.012,
    "social": 0.008,
    "partner": 0.006,
}
_AD_SOURCES = {
    "paid_search": "google_ads",
    "paid_social": "meta_ads",
    "social": "meta_ads",
    "partner": "partner_network",
}
_SPEND_CHANNELS = _Pick(
    {
        "paid_search": 40,
        "paid_social": 30,
        "events": 12,
        "partner": 8,
        "social": 5,
        "referral": 5,
    }
)
_OTHER_CHANNELS = _Pick({"other": 2, "podcast": 1, "tv": 1, "Print": 1})
"""Raw channel values sources send that the contract folds into `other`."""
_TICKET_CHANNELS = _Pick({"email": 50, "direct": 25, "social": 10, "other": 15})
_ACTIVITIES = _Pick({"call": 50, "email": 35, "meeting": 15})
_LOST_REASONS = _Pick(
    {
        "price": 25,
        "competitor": 20,
        "timing": 12,
        "no_budget": 12,
        "no_decision": 15,
        "product_fit": 8,
        "communication": 3,
        "quality": 3,
        "other": 1,
        "went silent": 1,
    }
)
_COMPLAINTS = _Pick(
    {"product": 35, "service": 30, "billing": 20, "delivery": 12, "other": 3}
)
_CUSTOMER_CURRENCIES = _Pick({"EUR": 80, "USD": 12, "GBP": 8})
_SPEND_CURRENCIES = _Pick({"EUR": 85, "USD": 15})
_DISQUALIFY_REASONS = _Pick(
    {
        "": 30,
        "no budget": 20,
        "not a fit": 25,
        "student": 5,
        "duplicate": 10,
        "spam": 10,
    }
)
_CHURN_REASONS = _Pick(
    {"": 30, "price": 25, "switched provider": 20, "no longer needed": 20, "closed": 5}
)
_UNKNOWN_TYPES = ("lead.updated", "invoice.paid", "contact.merged", "Lead.Created")

_REQUIRED: dict[str, tuple[str, ...]] = {
    kind: tuple(name for name, info in model.model_fields.items() if info.is_required())
    for kind, model in zip(EVENT_TYPES, EVENT_MODELS, strict=True)
}
"""Required fields per event type, the candidates of a `missing_field` defect."""

_MONEY_FIELD = {"order.placed": "revenue", "spend.recorded": "amount"}
_EUR_RATES = {code: float(rate) for code, rate in DEFAULT_RATES.items()}
_WON_EUR_PER_EVENT = 65.0
"""Won amount in EUR per emitted event, measured on long default runs; it sizes
the first month's quotas, before the team has a month of results."""


class _Lead:
    """An opportunity: a lead in the funnel, or an upsell to a customer."""

    __slots__ = (
        "amount",
        "channel",
        "closed",
        "contacts",
        "created",
        "currency",
        "customer",
        "id",
        "quote",
        "rep",
        "version",
    )

    def __init__(self, lead_id: str | None, channel: str, currency: str, created: int):
        self.id = lead_id
        self.channel = channel
        self.currency = currency
        self.created = created
        self.rep: str | None = None
        self.contacts = 0
        self.quote: str | None = None
        self.version = 0
        self.amount = 0.0
        self.customer: str | None = None
        self.closed = False


class _Message:
    __slots__ = ("campaign", "contact", "id")

    def __init__(self, message_id: str, contact: str, campaign: str):
        self.id = message_id
        self.contact = contact
        self.campaign = campaign


class _Ticket:
    __slots__ = ("agent", "id", "reopened", "replies_left")

    def __init__(self, ticket_id: str, agent: str, replies_left: int):
        self.id = ticket_id
        self.agent = agent
        self.replies_left = replies_left
        self.reopened = False


class _Simulation:
    """The state of one simulated business and its clock."""

    def __init__(self, options: SimulationOptions) -> None:
        self._options = options
        self._rng = random.Random(options.seed)
        self._random = self._rng.random
        self._times = _EventTimes(ZoneInfo(options.timezone))
        self._format = self._times.format
        self._curve = _weekly_curve()
        self._heap: list[tuple[int, int, _Handler, Any, int]] = []
        self._seq = 0
        self._id_prefix = f"evt-{self._rng.getrandbits(32):08x}-"
        self._emitted = 0
        self._watermark: int | None = None
        self._recent: deque[SimulatedRecord] = deque(maxlen=64)

        start = options.start
        if options.live:
            start = datetime.now(UTC)
        elif start is None:
            if options.duration is not None:
                span = options.duration
            else:
                span = timedelta(seconds=(options.events or 0) / options.density)
            start = datetime.now(UTC) - span
        self._clock_ms = float(int(start.timestamp() * 1000))
        self._now = int(self._clock_ms)
        self._live = options.live
        self._density_ms = options.density / 1000
        self._rate = self._density_ms
        self._rate_until = -math.inf
        self._max_disorder_ms = options.max_disorder.total_seconds() * 1000
        self._future_at = time.time() * 1000 + DAY
        self._end = (
            math.inf
            if options.duration is None
            else self._now + options.duration.total_seconds() * 1000
        )

        self._behaviour = _Behaviour()
        self._degraded = _Behaviour()
        self._switch_at = math.inf
        if options.scenario is not None:
            self._degraded = replace(
                self._behaviour, **_SCENARIO_BEHAVIOUR[options.scenario]
            )
            at = options.scenario_start
            self._switch_at = self._now if at is None else at.timestamp() * 1000
        self._roots = self._root_pick(self._behaviour)

        month_events = options.density * MONTH / 1000
        customers = options.initial_customers
        if customers is None:
            customers = min(200_000, max(100, round(month_events * 0.25)))
        leads = options.initial_leads
        if leads is None:
            leads = min(20_000, max(20, round(month_events * 0.01)))

        self._reps = [f"rep-{n:02d}" for n in range(1, options.reps + 1)]
        self._rep_currency = {
            rep: ("GBP" if n % 8 == 6 else "USD" if n % 8 == 7 else "EUR")
            for n, rep in enumerate(self._reps)
        }
        self._agents = [f"agent-{n:02d}" for n in range(1, options.agents + 1)]
        self._counters: dict[str, int] = {}
        self._base: list[str] = []
        self._base_index: dict[str, int] = {}
        self._currency: dict[str, str] = {}
        self._contacts: list[str] = []
        self._suppressed: set[str] = set()

        for _ in range(customers):
            self._join(self._next_id("cust", 6), _CUSTOMER_CURRENCIES(self._random))
        for _ in range(max(500, customers * 2)):
            self._contacts.append(self._next_id("contact", 7))
        for _ in range(leads):
            self._open_lead()

        self._won_eur = 0.0
        self._won_since = self._now
        self._quota_eur = _WON_EUR_PER_EVENT * month_events / options.reps
        period, next_month = self._times.month(self._now)
        self._set_quotas(period)
        self._at_time(next_month, self._month_start, next_month)

    # The clock and the records

    def records(self) -> Iterator[SimulatedRecord]:
        """Yield records until the options' limits are reached."""
        options = self._options
        limit = math.inf if options.events is None else options.events
        duplicate = options.duplicate_rate
        invalid = duplicate + options.invalid_rate
        late = invalid + options.late_rate
        disorder = late + options.out_of_order_rate
        random_ = self._random
        count = 0
        while count < limit:
            draw = random_()
            record: SimulatedRecord | None
            if draw < duplicate and self._recent:
                record = self._duplicate()
            elif duplicate <= draw < invalid:
                record = self._invalid()
            elif invalid <= draw < late and self._watermark is not None:
                record = self._late()
            else:
                record = self._tick(late <= draw < disorder)
                if record is None:
                    return
            count += 1
            yield record

    def _tick(self, disorder: bool) -> SimulatedRecord | None:
        """Advance the clock and emit the next event, `None` past the end."""
        if self._live:
            self._clock_ms = max(self._clock_ms, time.time() * 1000)
        else:
            if self._clock_ms >= self._rate_until:
                hour = self._times.hour_of_week(int(self._clock_ms))
                self._rate = self._density_ms * self._curve[hour]
                self._rate_until = (self._clock_ms // HOUR + 1) * HOUR
            # An exponential gap: a Poisson process at the rate of this hour.
            self._clock_ms -= math.log(1.0 - self._random()) / self._rate
        clock = int(self._clock_ms)
        if clock >= self._end:
            return None
        if clock > self._future_at:
            self._future_at = math.inf
            logger.warning(
                "simulated event time passed the wall clock by a day at=%s;"
                " a worker rejects such events as absurd, so give a smaller"
                " span (events / density) or an earlier start",
                self._times.format(clock),
            )
        if clock >= self._switch_at:
            self._switch_at = math.inf
            self._behaviour = self._degraded
            self._roots = self._root_pick(self._degraded)

        heap = self._heap
        while True:
            if heap and heap[0][0] <= clock:
                _, _, handler, argument, after = heapq.heappop(heap)
            else:
                handler, argument, after = self._roots(self._random), None, 0

            moment = clock
            kind: Kind = "valid"
            if disorder and self._watermark is not None:
                back = int(self._random() * self._max_disorder_ms)
                moment = max(after + 1, clock - SECOND - back)
                if moment < self._watermark:
                    kind = "out_of_order"
                else:
                    moment = clock
            self._now = moment
            draft = handler(argument)
            if draft is not None:
                break

        record = self._record(draft, moment, kind)
        self._recent.append(record)
        if self._watermark is None or moment > self._watermark:
            self._watermark = moment
        return record

    def _record(self, draft: _Draft, moment: int, kind: Kind) -> SimulatedRecord:
        kind_of_event, _, fields = draft
        event = self._envelope(draft, moment)
        # The key `event_key` would read back, without its checks: drafts carry
        # their entity id as a non-empty string.
        entity = fields.get(KEY_FIELDS.get(kind_of_event, ""), event["event_id"])
        key = entity.encode()  # type: ignore[attr-defined]
        return SimulatedRecord(key, orjson.dumps(event), kind, kind_of_event, moment)

    def _envelope(self, draft: _Draft, moment: int) -> dict[str, object]:
        self._emitted += 1
        return {
            "event_id": f"{self._id_prefix}{self._emitted:08d}",
            "type": draft[0],
            "occurred_at": self._format(moment),
            "schema_version": 1,
            "source": draft[1],
            **draft[2],
        }

    def _duplicate(self) -> SimulatedRecord:
        original = self._recent[int(self._random() * len(self._recent))]
        return original._replace(kind="duplicate")

    def _late(self) -> SimulatedRecord:
        """Emit an event from before the worker's retention, a stale sync."""
        assert self._watermark is not None
        horizon = 30 * DAY + int(self._options.late_grace.total_seconds() * 1000)
        moment = self._watermark - horizon - MINUTE - int(self._random() * 7 * DAY)
        self._now = moment
        return self._record(self._loose(money=False), moment, "late")

    def _invalid(self) -> SimulatedRecord:
        """Emit a broken record: an event damaged in one of the `DEFECTS` ways."""
        defect = DEFECTS[int(self._random() * len(DEFECTS))]
        moment = int(self._clock_ms)
        self._now = moment
        draft = self._loose(money=defect in ("unknown_currency", "ill_typed"))
        event: dict[str, object] = self._envelope(draft, moment)
        kind = draft[0]
        value: bytes | None = None
        if defect == "not_json":
            whole = orjson.dumps(event)
            value = whole[: len(whole) // 3 + int(self._random() * len(whole) // 2)]
        elif defect == "not_object":
            value = orjson.dumps([event])
        elif defect == "unknown_type":
            event["type"] = self._choose(_UNKNOWN_TYPES)
        elif defect == "missing_field":
            del event[self._choose(_REQUIRED[kind])]
        elif defect == "ill_typed":
            event[_MONEY_FIELD[kind]] = "12,50"
        elif defect == "unknown_currency":
            event["currency"] = self._choose(UNKNOWN_CURRENCIES)
        elif defect == "absurd_timestamp":
            event["occurred_at"] = self._choose(ABSURD_TIMES)
        elif defect == "naive_timestamp":
            event["occurred_at"] = str(event["occurred_at"])[:23]
        else:
            event[KEY_FIELDS.get(kind, "event_id")] = ""
        if value is None:
            value = orjson.dumps(event)
        return SimulatedRecord(record_key(value), value, "invalid", defect=defect)

    # Random draws and bookkeeping

    def _choose(self, values: tuple[str, ...]) -> str:
        return values[int(self._random() * len(values))]

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self._random()

    def _lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(sigma * self._rng.gauss(0.0, 1.0))

    def _delay(self, median: int, sigma: float) -> int:
        return int(self._lognormal(median, sigma))

    def _next_id(self, prefix: str, width: int) -> str:
        number = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = number
        return f"{prefix}-{number:0{width}d}"

    def _after(self, delay: float, handler: _Handler, argument: Any) -> None:
        """Schedule a follow-up `delay` ms after the current event."""
        self._at_time(self._now + int(delay), handler, argument)

    def _at_time(self, due: int, handler: _Handler, argument: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, handler, argument, self._now))

    def _channel(self, pick: _Pick[str]) -> str:
        channel = pick(self._random)
        return _OTHER_CHANNELS(self._random) if channel == "other" else channel

    def _money(self, amount: float) -> str:
        return f"{amount:.2f}"

    def _join(self, customer: str, currency: str) -> None:
        """Add a customer to the base, paying in `currency`."""
        self._base_index[customer] = len(self._base)
        self._base.append(customer)
        self._currency[customer] = currency

    def _leave(self, customer: str) -> None:
        """Remove a customer from the base (swap with the last one)."""
        index = self._base_index.pop(customer)
        last = self._base.pop()
        if last != customer:
            self._base[index] = last
            self._base_index[last] = index

    def _any_customer(self) -> str | None:
        if not self._base:
            return None
        return self._base[int(self._random() * len(self._base))]

    def _root_pick(self, behaviour: _Behaviour) -> _Pick[_Handler]:
        weights: dict[_Handler, float] = {
            self._visits: 26,
            self._lead: 10,
            self._impressions: 9,
            self._order: 10,
            self._newsletter: 3,
            self._campaign: 0.16,
            self._ticket: 2.2,
            self._complaint: 0.8,
            self._churn: 0.7 * behaviour.churn_weight,
            self._spend: 1.6,
            self._upsell: 0.5,
        }
        return _Pick(weights)

    def _loose(self, *, money: bool) -> _Draft:
        """Draft a root event that schedules nothing, for late and invalid records."""
        if money:
            return self._order(None) if self._random() < 0.5 else self._spend(None)
        draw = self._random()
        if draw < 0.4:
            return self._visits(None)
        if draw < 0.6:
            return self._impressions(None, follow=False)
        draft = self._order(None) if draw < 0.9 else self._spend(None)
        return draft

    # Marketing: visits, ads, newsletter, spend

    def _visits(self, _: Any) -> _Draft:
        count = max(1, round(self._lognormal(20, 0.8)))
        return (
            "site.visit",
            "web_analytics",
            {
                "visitor_id": self._next_id("visitor", 7),
                "channel": self._channel(_VISIT_CHANNELS),
                "count": count,
            },
        )

    def _impressions(self, _: Any, follow: bool = True) -> _Draft:
        channel = _AD_CHANNELS(self._random)
        campaign = f"ad-{channel}-{1 + int(self._random() * 3)}"
        count = max(1, round(self._lognormal(600, 1.0)))
        if follow:
            clicks = round(count * _CLICK_THROUGH[channel] * self._uniform(0.6, 1.4))
            if clicks:
                self._after(
                    self._uniform(MINUTE, 20 * MINUTE),
                    self._clicks,
                    (campaign, channel, clicks),
                )
        return (
            "ad.impression",
            _AD_SOURCES[channel],
            {"campaign_id": campaign, "channel": channel, "count": count},
        )

    def _clicks(self, batch: tuple[str, str, int]) -> _Draft:
        campaign, channel, clicks = batch
        return (
            "ad.click",
            _AD_SOURCES[channel],
            {"campaign_id": campaign, "channel": channel, "count": clicks},
        )

    def _newsletter(self, _: Any) -> _Draft:
        contact = self._next_id("contact", 7)
        self._contacts.append(contact)
        fields: dict[str, object] = {"contact_id": contact}
        if self._random() < 0.8:
            fields["channel"] = _NEWSLETTER_CHANNELS(self._random)
        return "newsletter.subscribed", "hubspot", fields

    def _spend(self, _: Any) -> _Draft:
        currency = _SPEND_CURRENCIES(self._random)
        rate = _EUR_RATES[currency]
        fields: dict[str, object]
        if self._random() < 0.6:
            fields = {
                "category": "acquisition",
                "amount": self._money(self._lognormal(550, 0.7) / rate),
                "currency": currency,
                "channel": _SPEND_CHANNELS(self._random),
            }
        else:
            fields = {
                "category": "crm",
                "amount": self._money(self._lognormal(260, 0.6) / rate),
                "currency": currency,
            }
            if self._random() < 0.3:
                fields["channel"] = "email"
        return "spend.recorded", "finance", fields

    # Email campaigns

    def _campaign(self, _: Any) -> _Draft:
        campaign = self._next_id("campaign", 4)
        size = min(400, max(5, round(self._lognormal(60, 0.6))))
        first: _Message | None = None
        for index in range(size):
            contact = self._contacts[int(self._random() * len(self._contacts))]
            if contact in self._suppressed:
                continue
            message = _Message(self._next_id("msg", 7), contact, campaign)
            if first is None:
                first = message
            else:
                self._after(index * self._uniform(200, 2000), self._sent, message)
        if first is None:
            return self._visits(None)
        draft = self._sent(first)
        return draft

    def _email(self, kind: str, message: _Message, **extra: object) -> _Draft:
        fields: dict[str, object] = {
            "message_id": message.id,
            "contact_id": message.contact,
            "campaign_id": message.campaign,
        }
        fields.update(extra)
        return kind, "sendgrid", fields

    def _sent(self, message: _Message) -> _Draft:
        if self._random() < self._behaviour.deliver:
            self._after(self._uniform(SECOND, MINUTE), self._delivered, message)
        else:
            self._after(self._uniform(SECOND, 5 * MINUTE), self._bounced, message)
        return self._email("email.sent", message)

    def _delivered(self, message: _Message) -> _Draft:
        behaviour = self._behaviour
        if self._random() < behaviour.open:
            self._after(self._delay(2 * HOUR, 1.2), self._opened, message)
        elif self._random() < 0.0005:
            self._after(self._delay(HOUR, 1.0), self._unsubscribed, message)
        return self._email("email.delivered", message)

    def _bounced(self, message: _Message) -> _Draft:
        hard = self._random() < self._behaviour.hard_bounce
        if hard:
            self._suppressed.add(message.contact)
        bounce = "hard" if hard else "soft"
        return self._email("email.bounced", message, bounce_type=bounce)

    def _opened(self, message: _Message) -> _Draft:
        behaviour = self._behaviour
        draw = self._random()
        if draw < behaviour.click:
            self._after(self._uniform(5 * SECOND, 10 * MINUTE), self._clicked, message)
        elif draw < behaviour.click + behaviour.unsubscribe:
            self._after(
                self._uniform(5 * SECOND, 5 * MINUTE), self._unsubscribed, message
            )
        elif draw < behaviour.click + behaviour.unsubscribe + behaviour.reopen_email:
            self._after(self._delay(DAY, 1.0), self._opened_again, message)
        return self._email("email.opened", message)

    def _opened_again(self, message: _Message) -> _Draft:
        return self._email("email.opened", message)

    def _clicked(self, message: _Message) -> _Draft:
        if self._random() < 0.01:
            self._after(self._uniform(MINUTE, HOUR), self._unsubscribed, message)
        return self._email("email.clicked", message)

    def _unsubscribed(self, message: _Message) -> _Draft:
        self._suppressed.add(message.contact)
        return self._email("email.unsubscribed", message)

    # Sales: leads, quotes, deals, quotas

    def _lead(self, _: Any) -> _Draft:
        lead = _Lead(
            self._next_id("lead", 6),
            self._channel(_LEAD_CHANNELS),
            _CUSTOMER_CURRENCIES(self._random),
            self._now,
        )
        fields: dict[str, object] = {"lead_id": lead.id, "channel": lead.channel}
        if self._random() < 0.75:
            lead.rep = self._choose_rep()
            fields["rep_id"] = lead.rep

        draw = self._random()
        if draw < self._behaviour.contact:
            self._after(self._delay(3 * HOUR, 1.0), self._contacted, lead)
        elif draw < (1 + self._behaviour.contact) / 2:
            self._after(self._uniform(3 * DAY, 20 * DAY), self._disqualified, lead)
        return "lead.created", "hubspot", fields

    def _open_lead(self) -> None:
        """Put a lead created before the start in the pipeline."""
        lead = _Lead(
            self._next_id("lead", 6),
            self._channel(_LEAD_CHANNELS),
            _CUSTOMER_CURRENCIES(self._random),
            self._now - int(self._uniform(DAY, 45 * DAY)),
        )
        lead.rep = self._choose_rep()
        lead.contacts = 1
        if self._random() < 0.6:
            self._after(self._uniform(0, 5 * DAY), self._contacted, lead)
        else:
            lead.quote = self._next_id("quote", 6)
            lead.version = 1
            lead.amount = self._quote_amount(lead.currency)
            self._after(self._uniform(0, 14 * DAY), self._decided, lead)

    def _choose_rep(self) -> str:
        return self._reps[int(self._random() * len(self._reps))]

    def _quote_amount(self, currency: str) -> float:
        return round(self._lognormal(8000, 0.7) / _EUR_RATES[currency], -1)

    def _contacted(self, lead: _Lead) -> _Draft | None:
        if lead.closed:
            return None
        if lead.rep is None:
            lead.rep = self._choose_rep()
        lead.contacts += 1

        draw = self._random()
        if draw < self._behaviour.recontact and lead.contacts < 4:
            self._after(self._delay(2 * DAY, 0.6), self._contacted, lead)
        else:
            outcome = self._random()
            if outcome < 0.3:
                self._after(self._uniform(DAY, 5 * DAY), self._disqualified, lead)
            elif outcome < 0.65:
                self._after(self._delay(2 * DAY, 0.6), self._quoted, lead)
            elif outcome < 0.68:
                self._after(self._delay(3 * DAY, 0.8), self._self_converted, lead)
        return (
            "lead.contacted",
            "hubspot",
            {
                "lead_id": lead.id,
                "rep_id": lead.rep,
                "activity": _ACTIVITIES(self._random),
            },
        )

    def _disqualified(self, lead: _Lead) -> _Draft | None:
        if lead.closed:
            return None
        lead.closed = True
        fields: dict[str, object] = {"lead_id": lead.id}
        reason = _DISQUALIFY_REASONS(self._random)
        if reason:
            fields["reason"] = reason
        return "lead.disqualified", "hubspot", fields

    def _quoted(self, lead: _Lead) -> _Draft | None:
        if lead.closed:
            return None
        if lead.id is None and lead.customer not in self._base_index:
            # The customer of an upsell left: the deal is lost, not requoted.
            return self._decided(lead)
        assert lead.rep is not None
        if lead.quote is None:
            lead.quote = self._next_id("quote", 6)
            lead.amount = self._quote_amount(lead.currency)
        else:
            lead.amount = round(lead.amount * self._uniform(0.85, 1.1), -1)
        lead.version += 1

        if lead.version < 3 and self._random() < 0.3:
            self._after(self._uniform(DAY, 5 * DAY), self._quoted, lead)
        else:
            self._after(self._delay(6 * DAY, 0.6), self._decided, lead)
        fields: dict[str, object] = {
            "quote_id": lead.quote,
            "version": lead.version,
            "rep_id": lead.rep,
            "amount": self._money(lead.amount),
            "currency": lead.currency,
        }
        if lead.id is None:
            fields["customer_id"] = lead.customer
        else:
            fields["lead_id"] = lead.id
        return "quote.issued", "salesforce", fields

    def _upsell(self, _: Any) -> _Draft:
        customer = self._any_customer()
        if customer is None:
            return self._visits(None)
        currency = self._currency[customer]
        deal = _Lead(None, "other", currency, self._now)
        deal.customer = customer
        deal.rep = self._choose_rep()
        draft = self._quoted(deal)
        assert draft is not None
        return draft

    def _decided(self, lead: _Lead) -> _Draft | None:
        if lead.closed:
            return None
        lead.closed = True
        assert lead.rep is not None
        deal = self._next_id("deal", 6)
        upsell = lead.id is None
        lapsed = upsell and lead.customer not in self._base_index
        if lapsed or self._random() >= self._behaviour.win:
            fields: dict[str, object] = {
                "deal_id": deal,
                "rep_id": lead.rep,
                "reason": "no_decision" if lapsed else _LOST_REASONS(self._random),
            }
            if self._random() < 0.85:
                fields["amount"] = self._money(lead.amount)
                fields["currency"] = lead.currency
            if not upsell and self._random() < 0.9:
                fields["lead_id"] = lead.id
            return "deal.lost", "salesforce", fields

        amount = round(lead.amount * self._uniform(0.9, 1.0), 2)
        self._won_eur += amount * _EUR_RATES[lead.currency]
        if lead.customer is None:
            lead.customer = self._next_id("cust", 6)
            self._join(lead.customer, lead.currency)
            self._after(self._uniform(5 * MINUTE, HOUR), self._converted, lead)
            self._after(
                self._uniform(DAY, 5 * DAY), self._first_order, (lead.customer, True)
            )
        fields = {
            "deal_id": deal,
            "customer_id": lead.customer,
            "rep_id": lead.rep,
            "amount": self._money(amount),
            "currency": lead.currency,
        }
        if not upsell:
            link = self._random()
            if link < 0.88:
                fields["lead_id"] = lead.id
            elif link < 0.97:
                fields["lead_created_at"] = self._times.format(lead.created)
        return "deal.won", "salesforce", fields

    def _converted(self, lead: _Lead) -> _Draft:
        return (
            "lead.converted",
            "hubspot",
            {"lead_id": lead.id, "customer_id": lead.customer, "channel": lead.channel},
        )

    def _self_converted(self, lead: _Lead) -> _Draft | None:
        """A lead buys on its own, without a deal: it converts, then orders."""
        if lead.closed:
            return None
        lead.closed = True
        lead.customer = self._next_id("cust", 6)
        self._join(lead.customer, lead.currency)
        self._after(
            self._uniform(MINUTE, 2 * HOUR), self._first_order, (lead.customer, False)
        )
        return self._converted(lead)

    def _month_start(self, start: int) -> _Draft | None:
        """Size the quotas of the month starting at `start` on recent results."""
        covered = self._now - self._won_since
        if covered >= 7 * DAY and self._won_eur > 0:
            self._quota_eur = self._won_eur / len(self._reps) * MONTH / covered
        self._won_eur = 0.0
        self._won_since = self._now

        period, next_month = self._times.month(start)
        self._set_quotas(period)
        self._at_time(next_month, self._month_start, next_month)
        return None

    def _set_quotas(self, period: str) -> None:
        for rep in self._reps:
            amount = self._quota_eur * self._uniform(0.8, 1.25)
            self._after(
                self._uniform(0, 5 * MINUTE), self._quota, (rep, period, amount)
            )
            if self._random() < 0.2:
                revised = amount * self._uniform(0.8, 1.15)
                self._after(
                    self._uniform(2 * DAY, 10 * DAY),
                    self._quota,
                    (rep, period, revised),
                )

    def _quota(self, quota: tuple[str, str, float]) -> _Draft:
        rep, period, amount_eur = quota
        currency = self._rep_currency[rep]
        amount = max(500, round(amount_eur / _EUR_RATES[currency] / 500) * 500)
        return (
            "quota.set",
            "salesforce",
            {"rep_id": rep, "period": period, "amount": amount, "currency": currency},
        )

    # Customers: orders, tickets, complaints, churn

    def _order(self, _: Any) -> _Draft:
        customer = self._any_customer()
        if customer is None:
            return self._visits(None)
        return self._order_of(customer, self._random() < 0.3)

    def _first_order(self, placed: tuple[str, bool]) -> _Draft | None:
        """A new customer's first order, unless they churned in the meantime."""
        customer, attributed = placed
        if customer not in self._base_index:
            return None
        return self._order_of(customer, attributed)

    def _order_of(self, customer: str, attributed: bool) -> _Draft:
        currency = self._currency[customer]
        revenue = self._lognormal(180, 0.9) / _EUR_RATES[currency]
        cost = revenue * self._uniform(0.45, 0.8)
        return (
            "order.placed",
            "shop",
            {
                "order_id": self._next_id("order", 7),
                "customer_id": customer,
                "revenue": self._money(revenue),
                "cost": self._money(cost),
                "currency": currency,
                "crm_attributed": attributed,
            },
        )

    def _ticket(self, _: Any) -> _Draft:
        customer = self._any_customer()
        if customer is None:
            return self._visits(None)
        fcr = self._random() < self._behaviour.first_contact_resolution
        ticket = _Ticket(
            self._next_id("ticket", 6),
            self._agents[int(self._random() * len(self._agents))],
            0 if fcr else 1 + int(self._random() * 3),
        )
        if self._random() < 0.95:
            self._after(self._delay(2 * HOUR, 1.0), self._replied, ticket)
        else:
            self._after(self._delay(HOUR, 1.0), self._resolved, ticket)
        return (
            "ticket.opened",
            "zendesk",
            {
                "ticket_id": ticket.id,
                "customer_id": customer,
                "channel": _TICKET_CHANNELS(self._random),
            },
        )

    def _replied(self, ticket: _Ticket) -> _Draft:
        if ticket.replies_left > 0:
            ticket.replies_left -= 1
            self._after(self._delay(8 * HOUR, 0.8), self._replied, ticket)
        else:
            self._after(self._delay(3 * HOUR, 1.0), self._resolved, ticket)
        return (
            "ticket.replied",
            "zendesk",
            {"ticket_id": ticket.id, "agent_id": ticket.agent},
        )

    def _resolved(self, ticket: _Ticket) -> _Draft:
        if not ticket.reopened and self._random() < self._behaviour.reopen_ticket:
            ticket.reopened = True
            self._after(self._uniform(DAY, 3 * DAY), self._reopened, ticket)
        return "ticket.resolved", "zendesk", {"ticket_id": ticket.id}

    def _reopened(self, ticket: _Ticket) -> _Draft:
        self._after(self._delay(4 * HOUR, 0.8), self._replied, ticket)
        return "ticket.reopened", "zendesk", {"ticket_id": ticket.id}

    def _complaint(self, _: Any) -> _Draft:
        customer = self._any_customer()
        if customer is None:
            return self._visits(None)
        return (
            "complaint.filed",
            "zendesk",
            {
                "complaint_id": self._next_id("complaint", 6),
                "customer_id": customer,
                "category": _COMPLAINTS(self._random),
            },
        )

    def _churn(self, _: Any) -> _Draft:
        customer = self._any_customer()
        if customer is None:
            return self._visits(None)
        self._leave(customer)
        fields: dict[str, object] = {"customer_id": customer}
        reason = _CHURN_REASONS(self._random)
        if reason:
            fields["reason"] = reason
        return "customer.churned", "billing", fields
