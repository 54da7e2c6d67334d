"""Bucketed sums: window totals from minute, hour and local-day buckets."""

from __future__ import annotations

from decimal import Decimal

from stream.state.counters import (
    EMAILS_SENT,
    REVENUE,
    SITE_VISITS,
    Counters,
)
from stream.windows import Calendar, Window, windows_at

MINUTE = 60_000
HOUR = 60 * MINUTE
# 2024-03-10T00:00Z
DAY_START = 1_710_028_800_000


def test_a_24h_window_adds_edge_minutes_to_whole_hours() -> None:
    counters = Counters(Calendar("UTC"))
    wm = DAY_START + 10 * HOUR + 17 * MINUTE
    # 24h at wm is [2024-03-09T10:20, 2024-03-10T10:20).
    for offset, amount in (
        (-24 * HOUR + 19 * MINUTE, 1),
        (-24 * HOUR + 20 * MINUTE, 10),
        (-13 * HOUR, 100),
        (19 * MINUTE + 59_999, 1000),
        (20 * MINUTE, 10_000),
    ):
        counters.count(DAY_START + 10 * HOUR + offset, EMAILS_SENT, amount)

    totals = counters.totals(windows_at(wm, Calendar("UTC"))[1])

    assert totals.counts[EMAILS_SENT] == 1110


def test_calendar_windows_sum_local_days() -> None:
    paris = Calendar("Europe/Paris")
    counters = Counters(paris)
    # 22:30 UTC on 2024-03-09 is already March 10 in Paris.
    counters.count(DAY_START - 90 * MINUTE, SITE_VISITS, 3)
    counters.count(DAY_START - 30 * MINUTE, SITE_VISITS, 5)
    counters.count(DAY_START + 22 * HOUR + 59 * MINUTE, SITE_VISITS, 7)
    counters.count(DAY_START + 23 * HOUR, SITE_VISITS, 11)

    day = windows_at(DAY_START + 12 * HOUR, paris)[4]

    assert counters.totals(day).counts[SITE_VISITS] == 12


def test_money_sums_are_exact_whatever_the_digits() -> None:
    counters = Counters(Calendar("UTC"))
    counters.add_money(DAY_START, REVENUE, Decimal("123456789012345.000000000000001"))
    counters.add_money(DAY_START, REVENUE, Decimal("0.000000000000000000000000000009"))

    totals = counters.totals(Window("test", DAY_START, DAY_START + HOUR))

    assert totals.money[REVENUE] == Decimal(
        "123456789012345.000000000000001000000000000009"
    )


def test_buckets_before_what_a_window_can_reach_are_dropped_and_skipped() -> None:
    counters = Counters(Calendar("UTC"))
    counters.count(DAY_START, EMAILS_SENT)
    counters.count(DAY_START + HOUR, EMAILS_SENT)
    assert len(counters) == 5

    counters.retain(DAY_START + MINUTE, DAY_START + HOUR, 0)
    counters.count(DAY_START + 30 * MINUTE, EMAILS_SENT)

    # Left: minute and hour buckets of 01:00, the minute of 00:30, one day.
    assert len(counters) == 4
    window = Window("test", DAY_START, DAY_START + 2 * HOUR)
    assert counters.totals(window).counts[EMAILS_SENT] == 1
