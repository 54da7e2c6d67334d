"""Event time in epoch milliseconds and the bounds of every KPI window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stream.errors import SettingsError

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

ROLLING: dict[str, tuple[int, int]] = {
    "1h": (HOUR_MS, MINUTE_MS),
    "24h": (DAY_MS, 5 * MINUTE_MS),
    "7d": (7 * DAY_MS, HOUR_MS),
    "30d": (30 * DAY_MS, HOUR_MS),
}
"""Size and step of each rolling window, in milliseconds."""

LONGEST_ROLLING_MS = 30 * DAY_MS
"""The largest rolling window: with the grace, it decides when an event is late."""

FAR_PAST = -(2**62)
"""A time before every event, for bounds that are not set yet."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

# Local midnights looked up once are kept; a year of days is a few kilobytes,
# and the cache is cleared past this many entries so it stays small.
_MIDNIGHT_CACHE_SIZE = 4096


def epoch_ms(moment: datetime) -> int:
    """Return an aware datetime as whole milliseconds since the Unix epoch.

    The arithmetic is exact on integers; digits below the millisecond are
    dropped by flooring, so an instant just before the epoch stays before it.

    Raises:
        ValueError: `moment` has no time zone.
    """
    if moment.utcoffset() is None:
        raise ValueError(f"event time {moment.isoformat()} has no UTC offset")
    return (moment - _EPOCH) // _ONE_MS


def from_epoch_ms(millis: int) -> datetime:
    """Return the UTC datetime of an epoch-millisecond time."""
    return _EPOCH + timedelta(milliseconds=millis)


def rolling_bounds(watermark: int, size: int, step: int) -> tuple[int, int]:
    """Return `[b - size + step, b + step)` with `b` the watermark floored to `step`."""
    floor = watermark // step * step
    return floor - size + step, floor + step


def month_number(year: int, month: int) -> int:
    """Return a month as one integer (`year * 12 + month - 1`), so months subtract."""
    return year * 12 + month - 1


def period_month(period: str) -> int:
    """Return the month number of a `YYYY-MM` period."""
    year, month = period.split("-")
    return month_number(int(year), int(month))


Bounds = tuple[int, int | None]
"""A window's start and end for entity state; an end of None means "after every
applied event", which holds for every window whose end is past the watermark."""


@dataclass(frozen=True, slots=True)
class Window:
    """One window at one watermark: `[start, end)` in epoch milliseconds.

    A calendar window also names its local days, `[first_day, end_day)` as
    proleptic Gregorian ordinals, because its figures are summed per day.
    """

    name: str
    start: int
    end: int
    first_day: int | None = None
    end_day: int | None = None


class Calendar:
    """Local days and months of one time zone, as bounds in epoch milliseconds.

    A day runs from its local midnight to the next one, both converted to UTC
    with the earlier reading of an ambiguous wall time; a midnight that does
    not exist (a clock change at 00:00) starts the day at the change itself.
    Days are named by their proleptic Gregorian ordinal.
    """

    def __init__(self, timezone: str) -> None:
        try:
            self._zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise SettingsError(
                f"CRM_TIMEZONE={timezone!r} is not an IANA time zone; use a name"
                " such as 'UTC' or 'Europe/Paris'"
            ) from error

        self._midnights: dict[int, int] = {}
        self._hour_days: dict[int, int] = {}
        self._windows: tuple[Window, Window, Window] | None = None
        self._day = 0
        self._day_start = 0
        self._day_end = 0

    def midnight(self, day: int) -> int:
        """Return the start of a local day in epoch milliseconds."""
        start = self._midnights.get(day)
        if start is not None:
            return start

        local = date.fromordinal(day)
        start = epoch_ms(
            datetime(local.year, local.month, local.day, tzinfo=self._zone)
        )
        if len(self._midnights) >= _MIDNIGHT_CACHE_SIZE:
            self._midnights.clear()
        self._midnights[day] = start
        return start

    def day_of(self, millis: int) -> int:
        """Return the local day whose bounds contain an epoch-millisecond time."""
        if self._day_start <= millis < self._day_end:
            return self._day

        # Times away from the current day (late events, disqualification
        # times) are looked up by UTC hour, for hours inside one local day.
        hour = millis // HOUR_MS
        day = self._hour_days.get(hour)
        if day is not None:
            return day

        day = self._find_day(millis)
        hour_start = hour * HOUR_MS
        if self.midnight(day) <= hour_start and hour_start + HOUR_MS <= self.midnight(
            day + 1
        ):
            if len(self._hour_days) >= _MIDNIGHT_CACHE_SIZE:
                self._hour_days.clear()
            self._hour_days[hour] = day
        return day

    def _find_day(self, millis: int) -> int:
        local = from_epoch_ms(millis).astimezone(self._zone)
        day = local.date().toordinal()

        # The local date and the midnight bounds disagree only inside a clock
        # change that crosses midnight; the bounds decide, as documented.
        while millis < self.midnight(day):
            day -= 1
        while millis >= self.midnight(day + 1):
            day += 1

        # The day of the newest lookup answers the next ones without a dict:
        # most events are near the watermark.
        self._day, self._day_start, self._day_end = (
            day,
            self.midnight(day),
            self.midnight(day + 1),
        )
        return day

    def month_of(self, millis: int) -> int:
        """Return the month number of the local month containing a time."""
        local = date.fromordinal(self.day_of(millis))
        return month_number(local.year, local.month)

    def first_day(self, month: int) -> int:
        """Return the ordinal of the first local day of a month number."""
        year, index = divmod(month, 12)
        return date(year, index + 1, 1).toordinal()

    def windows_of(self, day: int) -> tuple[Window, Window, Window]:
        """Return the `day`, `month` and `last_month` windows of a local day."""
        if self._windows is not None and self._windows[0].first_day == day:
            return self._windows

        local = date.fromordinal(day)
        month = month_number(local.year, local.month)
        windows = tuple(
            Window(name, self.midnight(first), self.midnight(end), first, end)
            for name, first, end in (
                ("day", day, day + 1),
                ("month", self.first_day(month), self.first_day(month + 1)),
                ("last_month", self.first_day(month - 1), self.first_day(month)),
            )
        )
        self._windows = (windows[0], windows[1], windows[2])
        return self._windows


def windows_at(watermark: int, calendar: Calendar) -> tuple[Window, ...]:
    """Return every windowed KPI's window at a watermark, in catalogue order."""
    # The catalogue lists the rolling windows first, in the order of ROLLING,
    # then day, month and last_month; the tests hold the two together.
    rolling = tuple(
        Window(name, *rolling_bounds(watermark, size, step))
        for name, (size, step) in ROLLING.items()
    )
    return rolling + calendar.windows_of(calendar.day_of(watermark))
