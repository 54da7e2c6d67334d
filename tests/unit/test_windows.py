"""Event time in milliseconds and the bounds of rolling and calendar windows."""

from __future__ import annotations

import calendar as utc_calendar
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from stream.catalogue import WINDOWED
from stream.errors import SettingsError
from stream.windows import (
    Calendar,
    epoch_ms,
    month_number,
    period_month,
    rolling_bounds,
    windows_at,
)


def utc(text: str) -> int:
    """Epoch ms of a `YYYY-MM-DDTHH:MM[:SS]` UTC wall time, via the stdlib."""
    moment = datetime.fromisoformat(text)
    return utc_calendar.timegm(moment.timetuple()) * 1000 + moment.microsecond // 1000


def test_epoch_ms_is_exact_milliseconds_since_the_epoch() -> None:
    moment = datetime(
        2024, 3, 1, 5, 30, 0, 123_000, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )

    assert epoch_ms(moment) == utc_calendar.timegm((2024, 3, 1, 0, 0, 0)) * 1000 + 123


def test_epoch_ms_drops_sub_millisecond_digits_by_flooring() -> None:
    assert epoch_ms(datetime(2024, 1, 1, 0, 0, 0, 999, tzinfo=UTC)) == utc(
        "2024-01-01T00:00"
    )
    assert epoch_ms(datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)) == -1


def test_epoch_ms_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        epoch_ms(datetime(2024, 1, 1))


def test_rolling_bounds_cover_the_filling_bucket_and_the_window_before_it() -> None:
    watermark = utc("2024-03-10T10:17:42.123")

    assert rolling_bounds(watermark, 3_600_000, 60_000) == (
        utc("2024-03-10T09:18"),
        utc("2024-03-10T10:18"),
    )
    assert rolling_bounds(watermark, 86_400_000, 300_000) == (
        utc("2024-03-09T10:20"),
        utc("2024-03-10T10:20"),
    )


def test_rolling_bound_on_a_step_starts_a_new_bucket() -> None:
    watermark = utc("2024-03-10T10:00")

    assert rolling_bounds(watermark, 7 * 86_400_000, 3_600_000) == (
        utc("2024-03-03T11:00"),
        utc("2024-03-10T11:00"),
    )


def test_windows_at_gives_every_window_in_catalogue_order_in_utc() -> None:
    windows = windows_at(utc("2024-03-10T10:17:42.123"), Calendar("UTC"))

    assert [window.name for window in windows] == list(WINDOWED)
    assert [(window.start, window.end) for window in windows] == [
        (utc("2024-03-10T09:18"), utc("2024-03-10T10:18")),
        (utc("2024-03-09T10:20"), utc("2024-03-10T10:20")),
        (utc("2024-03-03T11:00"), utc("2024-03-10T11:00")),
        (utc("2024-02-09T11:00"), utc("2024-03-10T11:00")),
        (utc("2024-03-10T00:00"), utc("2024-03-11T00:00")),
        (utc("2024-03-01T00:00"), utc("2024-04-01T00:00")),
        (utc("2024-02-01T00:00"), utc("2024-03-01T00:00")),
    ]


def test_calendar_windows_name_their_local_days() -> None:
    day, month, last_month = windows_at(utc("2024-03-10T10:00"), Calendar("UTC"))[4:]

    assert (day.first_day, day.end_day) == (
        datetime(2024, 3, 10).toordinal(),
        datetime(2024, 3, 11).toordinal(),
    )
    assert (month.first_day, month.end_day) == (
        datetime(2024, 3, 1).toordinal(),
        datetime(2024, 4, 1).toordinal(),
    )
    assert (last_month.first_day, last_month.end_day) == (
        datetime(2024, 2, 1).toordinal(),
        datetime(2024, 3, 1).toordinal(),
    )


def test_last_month_of_january_is_december_of_the_year_before() -> None:
    last_month = windows_at(utc("2024-01-15T00:00"), Calendar("UTC"))[6]

    assert (last_month.start, last_month.end) == (
        utc("2023-12-01T00:00"),
        utc("2024-01-01T00:00"),
    )


def test_paris_day_of_the_spring_change_lasts_23_hours() -> None:
    day = windows_at(utc("2024-03-31T12:00"), Calendar("Europe/Paris"))[4]

    assert (day.start, day.end) == (utc("2024-03-30T23:00"), utc("2024-03-31T22:00"))


def test_paris_day_of_the_autumn_change_lasts_25_hours() -> None:
    day = windows_at(utc("2024-10-27T12:00"), Calendar("Europe/Paris"))[4]

    assert (day.start, day.end) == (utc("2024-10-26T22:00"), utc("2024-10-27T23:00"))


def test_paris_months_across_the_spring_change() -> None:
    windows = windows_at(utc("2024-04-01T00:30"), Calendar("Europe/Paris"))
    month, last_month = windows[5], windows[6]

    assert (month.start, month.end) == (
        utc("2024-03-31T22:00"),
        utc("2024-04-30T22:00"),
    )
    assert (last_month.start, last_month.end) == (
        utc("2024-02-29T23:00"),
        utc("2024-03-31T22:00"),
    )


def test_paris_late_evening_utc_is_already_the_next_local_day() -> None:
    paris = Calendar("Europe/Paris")

    assert (
        paris.day_of(utc("2024-03-31T21:59:59.999"))
        == datetime(2024, 3, 31).toordinal()
    )
    assert paris.day_of(utc("2024-03-31T22:00")) == datetime(2024, 4, 1).toordinal()
    assert paris.month_of(utc("2024-03-31T22:00")) == month_number(2024, 4)


def test_kolkata_days_start_at_half_past_six_in_the_evening_utc() -> None:
    windows = windows_at(utc("2024-03-10T20:00"), Calendar("Asia/Kolkata"))
    day, month, last_month = windows[4], windows[5], windows[6]

    assert (day.start, day.end) == (utc("2024-03-10T18:30"), utc("2024-03-11T18:30"))
    assert (month.start, month.end) == (
        utc("2024-02-29T18:30"),
        utc("2024-03-31T18:30"),
    )
    assert (last_month.start, last_month.end) == (
        utc("2024-01-31T18:30"),
        utc("2024-02-29T18:30"),
    )


def test_a_midnight_that_does_not_exist_starts_the_day_at_the_clock_change() -> None:
    # America/Santiago went from -04 to -03 at local midnight on 2022-09-11.
    day = windows_at(utc("2022-09-11T12:00"), Calendar("America/Santiago"))[4]

    assert (day.start, day.end) == (utc("2022-09-11T04:00"), utc("2022-09-12T03:00"))


def test_day_lookups_agree_whichever_order_they_come_in() -> None:
    paris = Calendar("Europe/Paris")
    zone = ZoneInfo("Europe/Paris")
    times = [utc("2024-03-31T12:00") + step * 1_234_567 for step in range(-200, 200)]
    expected = [
        datetime.fromtimestamp(millis / 1000, zone).date().toordinal()
        for millis in reversed(times)
    ]

    assert [paris.day_of(millis) for millis in reversed(times)] == expected


def test_period_month_reads_a_quota_period() -> None:
    assert period_month("2024-03") == month_number(2024, 3) == 2024 * 12 + 2


def test_unknown_time_zone_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="CRM_TIMEZONE"):
        Calendar("Mars/Olympus_Mons")
