"""Event-time bucketed sums: the simple windowed figures, per minute, hour and day."""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

from stream.catalogue import CHANNELS, COMPLAINT_CATEGORIES, LOST_REASONS
from stream.windows import FAR_PAST, HOUR_MS, MINUTE_MS, Calendar, Window

EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.Overflow, decimal.DivisionByZero],
)
"""Decimal context for money sums: additions at this precision never round."""

ZERO = Decimal(0)

CHANNEL_INDEX = {channel: index for index, channel in enumerate(CHANNELS)}
REASON_INDEX = {reason: index for index, reason in enumerate(LOST_REASONS)}
CATEGORY_INDEX = {
    category: index for index, category in enumerate(COMPLAINT_CATEGORIES)
}

# Count slots of a bucket. A dimensioned figure takes one slot per value of its
# vocabulary, starting at its base slot; the overall value is their sum.
LEADS_CREATED = 0
LEADS_CONVERTED = LEADS_CREATED + len(CHANNELS)
SITE_VISITS = LEADS_CONVERTED + 1
AD_IMPRESSIONS = SITE_VISITS + len(CHANNELS)
AD_CLICKS = AD_IMPRESSIONS + len(CHANNELS)
NEWSLETTER_SIGNUPS = AD_CLICKS + len(CHANNELS)
EMAILS_SENT = NEWSLETTER_SIGNUPS + 1
EMAILS_DELIVERED = EMAILS_SENT + 1
EMAILS_UNSUBSCRIBED = EMAILS_DELIVERED + 1
LOST_DEALS = EMAILS_UNSUBSCRIBED + 1
COMPLAINTS = LOST_DEALS + len(LOST_REASONS)
QUOTES_ISSUED = COMPLAINTS + len(COMPLAINT_CATEGORIES)
TICKETS_RESOLVED = QUOTES_ISSUED + 1
RESOLUTIONS_DISQUALIFIED = TICKETS_RESOLVED + 1
"""Resolutions, filed at their disqualification time (see `stream.state.tickets`)."""
DISQUALIFIED_ACROSS_MONTHS = RESOLUTIONS_DISQUALIFIED + 1
"""Those of them resolved in a later local month than their disqualification."""
MESSAGES_DELIVERED = DISQUALIFIED_ACROSS_MONTHS + 1
MESSAGES_OPENED = MESSAGES_DELIVERED + 1
MESSAGES_CLICKED = MESSAGES_OPENED + 1
COUNT_SLOTS = MESSAGES_CLICKED + 1

# Money slots, in the reporting currency.
CRM_REVENUE = 0
CRM_SPEND = CRM_REVENUE + 1
ACQUISITION_SPEND = CRM_SPEND + 1
REVENUE = ACQUISITION_SPEND + 1
MARGIN = REVENUE + 1
LOST_VALUE = MARGIN + 1
QUOTES_VALUE = LOST_VALUE + len(LOST_REASONS)
MONEY_SLOTS = QUOTES_VALUE + 1


class Bucket:
    """The sums of every count and money slot over one span of event time."""

    __slots__ = ("counts", "money")

    def __init__(self) -> None:
        self.counts = [0] * COUNT_SLOTS
        self.money = [ZERO] * MONEY_SLOTS


class Totals:
    """The sums of every slot over one window."""

    __slots__ = ("counts", "money")

    def __init__(self, buckets: list[Bucket]) -> None:
        if not buckets:
            self.counts = [0] * COUNT_SLOTS
            self.money = [ZERO] * MONEY_SLOTS
            return

        self.counts = [
            sum(column) for column in zip(*(b.counts for b in buckets), strict=True)
        ]
        with decimal.localcontext(EXACT):
            self.money = [
                sum(column, ZERO)
                for column in zip(*(b.money for b in buckets), strict=True)
            ]

    def count_all(self, slot: int, values: int) -> int:
        """Return the overall value of a dimensioned count slot."""
        return sum(self.counts[slot : slot + values])

    def money_all(self, slot: int, values: int) -> Decimal:
        """Return the overall value of a dimensioned money slot."""
        with decimal.localcontext(EXACT):
            return sum(self.money[slot : slot + values], ZERO)


class Counters:
    """Sums of every simple windowed figure, in three families of buckets.

    Every window bound is a bucket bound: minute buckets serve `1h` and the
    edges of `24h`, hour buckets the rest of `24h` and all of `7d` and `30d`,
    and local-day buckets the calendar windows, whatever the zone's offset.
    A family keeps only the buckets a window can still cover: minutes from the
    `24h` start, hours from the `30d` start, days from the `last_month` start.
    So at most about 1,445 minute, 721 hour and 62 day buckets are kept,
    whatever the event rate. An event updates one bucket per family; a window
    sum adds at most 720 buckets column by column.
    """

    def __init__(self, calendar: Calendar) -> None:
        self._calendar = calendar
        self._minutes: dict[int, Bucket] = {}
        self._hours: dict[int, Bucket] = {}
        self._days: dict[int, Bucket] = {}
        self._first_minute = FAR_PAST
        self._first_hour = FAR_PAST
        self._first_day = FAR_PAST

    def __len__(self) -> int:
        return len(self._minutes) + len(self._hours) + len(self._days)

    def buckets_at(self, millis: int) -> list[Bucket]:
        """Return the buckets an event at `millis` counts in, created if needed.

        A family whose kept buckets all lie after `millis` is left out: no
        window can cover that time any more.
        """
        buckets: list[Bucket] = []

        minute = millis // MINUTE_MS
        if minute >= self._first_minute:
            bucket = self._minutes.get(minute)
            if bucket is None:
                bucket = self._minutes[minute] = Bucket()
            buckets.append(bucket)

        hour = millis // HOUR_MS
        if hour >= self._first_hour:
            bucket = self._hours.get(hour)
            if bucket is None:
                bucket = self._hours[hour] = Bucket()
            buckets.append(bucket)

        day = self._calendar.day_of(millis)
        if day >= self._first_day:
            bucket = self._days.get(day)
            if bucket is None:
                bucket = self._days[day] = Bucket()
            buckets.append(bucket)

        return buckets

    def count(self, millis: int, slot: int, amount: int = 1) -> None:
        """Add `amount` to a count slot at an event time."""
        for bucket in self.buckets_at(millis):
            bucket.counts[slot] += amount

    def add_money(self, millis: int, slot: int, amount: Decimal) -> None:
        """Add `amount` to a money slot at an event time, exactly."""
        add = EXACT.add
        for bucket in self.buckets_at(millis):
            money = bucket.money
            money[slot] = add(money[slot], amount)

    def add_money_many(
        self, millis: int, amounts: tuple[tuple[int, Decimal], ...]
    ) -> None:
        """Add several (slot, amount) pairs of one event, exactly."""
        add = EXACT.add
        for bucket in self.buckets_at(millis):
            money = bucket.money
            for slot, amount in amounts:
                money[slot] = add(money[slot], amount)

    def retain(self, first_minute_ms: int, first_hour_ms: int, first_day: int) -> None:
        """Drop the buckets before the oldest time each family must still serve."""
        first_minute = first_minute_ms // MINUTE_MS
        if first_minute > self._first_minute:
            _drop_before(self._minutes, self._first_minute, first_minute)
            self._first_minute = first_minute

        first_hour = first_hour_ms // HOUR_MS
        if first_hour > self._first_hour:
            _drop_before(self._hours, self._first_hour, first_hour)
            self._first_hour = first_hour

        if first_day > self._first_day:
            _drop_before(self._days, self._first_day, first_day)
            self._first_day = first_day

    def totals(self, window: Window) -> Totals:
        """Return the sums of every slot over a window."""
        if window.first_day is not None and window.end_day is not None:
            return Totals(_pick(self._days, window.first_day, window.end_day))

        first_minute, end_minute = window.start // MINUTE_MS, window.end // MINUTE_MS
        first_hour, end_hour = -(-window.start // HOUR_MS), window.end // HOUR_MS
        if first_hour >= end_hour:
            return Totals(_pick(self._minutes, first_minute, end_minute))

        minutes_per_hour = HOUR_MS // MINUTE_MS
        return Totals(
            _pick(self._minutes, first_minute, first_hour * minutes_per_hour)
            + _pick(self._hours, first_hour, end_hour)
            + _pick(self._minutes, end_hour * minutes_per_hour, end_minute)
        )

    def export(self) -> dict[str, Any]:
        """Return the buckets as plain structures, for checkpoints."""
        return {
            "first": (self._first_minute, self._first_hour, self._first_day),
            "minutes": _export_family(self._minutes),
            "hours": _export_family(self._hours),
            "days": _export_family(self._days),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the buckets with `export()` output."""
        self._first_minute, self._first_hour, self._first_day = data["first"]
        self._minutes = _restore_family(data["minutes"])
        self._hours = _restore_family(data["hours"])
        self._days = _restore_family(data["days"])


def _drop_before(family: dict[int, Bucket], old_first: int, first: int) -> None:
    # The oldest kept key moves by one bucket at a time in a steady stream:
    # pop just those, and scan the family only after a jump.
    if first - old_first <= len(family):
        for key in range(old_first, first):
            family.pop(key, None)
        return
    for key in [key for key in family if key < first]:
        del family[key]


def _pick(family: dict[int, Bucket], first: int, end: int) -> list[Bucket]:
    if end - first > len(family):
        return [bucket for key, bucket in family.items() if first <= key < end]
    return [bucket for key in range(first, end) if (bucket := family.get(key))]


def _export_family(
    family: dict[int, Bucket],
) -> dict[int, tuple[list[int], list[Decimal]]]:
    return {key: (list(b.counts), list(b.money)) for key, b in family.items()}


def _restore_family(
    data: dict[int, tuple[list[int], list[Decimal]]],
) -> dict[int, Bucket]:
    family: dict[int, Bucket] = {}
    for key, (counts, money) in data.items():
        if len(counts) != COUNT_SLOTS or len(money) != MONEY_SLOTS:
            raise ValueError(f"bucket {key} has the wrong number of slots")
        bucket = Bucket()
        bucket.counts = list(counts)
        bucket.money = list(money)
        family[key] = bucket
    return family
