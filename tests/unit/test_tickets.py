"""First-contact resolution: disqualification times filed in bucketed counts."""

from __future__ import annotations

from stream.state.counters import (
    DISQUALIFIED_ACROSS_MONTHS,
    RESOLUTIONS_DISQUALIFIED,
    TICKETS_RESOLVED,
    Counters,
)
from stream.state.tickets import Tickets
from stream.windows import Calendar, windows_at

HOUR = 3_600_000
# 2024-03-10T00:00Z: the day window of a watermark that day starts here.
DAY_START = 1_710_028_800_000


def tickets_at(watermark: int) -> tuple[Tickets, Counters]:
    calendar = Calendar("UTC")
    counters = Counters(calendar)
    windows = windows_at(watermark, calendar)
    counters.retain(windows[1].start, windows[3].start, windows[6].first_day or 0)
    return Tickets(counters, calendar), counters


def first_contact(counters: Counters, watermark: int, window: int) -> tuple[int, int]:
    """(first-contact resolutions, resolutions) of one window at the watermark."""
    calendar = Calendar("UTC")
    totals = counters.totals(windows_at(watermark, calendar)[window])
    disqualified = totals.counts[RESOLUTIONS_DISQUALIFIED]
    if window == 6:
        disqualified -= totals.counts[DISQUALIFIED_ACROSS_MONTHS]
    resolved = totals.counts[TICKETS_RESOLVED]
    return resolved - disqualified, resolved


def test_a_second_reply_before_the_resolution_disqualifies_it() -> None:
    wm = DAY_START + 12 * HOUR
    tickets, counters = tickets_at(wm)

    tickets.replied("t", DAY_START + 1 * HOUR)
    tickets.replied("t", DAY_START + 2 * HOUR)
    tickets.resolved("t", DAY_START + 3 * HOUR)

    assert first_contact(counters, wm, 4) == (0, 1)


def test_a_reply_arriving_after_the_resolution_re_decides_it() -> None:
    wm = DAY_START + 12 * HOUR
    tickets, counters = tickets_at(wm)

    tickets.replied("t", DAY_START + 2 * HOUR)
    tickets.resolved("t", DAY_START + 3 * HOUR)
    assert first_contact(counters, wm, 4) == (1, 1)

    tickets.replied("t", DAY_START + 1 * HOUR)

    assert first_contact(counters, wm, 4) == (0, 1)


def test_only_events_inside_the_window_disqualify() -> None:
    wm = DAY_START + 12 * HOUR
    tickets, counters = tickets_at(wm)

    # 1h is [11:01, 12:01): the reopen at 10:00 is before it.
    tickets.resolved("t", DAY_START + 9 * HOUR)
    tickets.reopened("t", DAY_START + 10 * HOUR)
    tickets.replied("t", DAY_START + 11 * HOUR + 30 * 60_000)
    tickets.resolved("t", DAY_START + 11 * HOUR + 45 * 60_000)

    assert first_contact(counters, wm, 0) == (1, 1)
    assert first_contact(counters, wm, 4) == (1, 2)


def test_events_at_the_resolution_time_are_not_before_it() -> None:
    wm = DAY_START + 12 * HOUR
    tickets, counters = tickets_at(wm)

    tickets.resolved("t", DAY_START + 3 * HOUR)
    tickets.resolved("t", DAY_START + 3 * HOUR)
    tickets.replied("t", DAY_START + 3 * HOUR)
    tickets.replied("t", DAY_START + 3 * HOUR)

    assert first_contact(counters, wm, 4) == (2, 2)


def test_last_month_keeps_resolutions_disqualified_only_after_it() -> None:
    # wm on 2024-03-10: last_month is February.
    wm = DAY_START + 12 * HOUR
    tickets, counters = tickets_at(wm)
    march = 1_709_251_200_000

    tickets.resolved("t", march - 2 * HOUR)
    tickets.reopened("t", march - 1 * HOUR)
    tickets.resolved("t", march + 1 * HOUR)
    tickets.replied("u", march - 3 * HOUR)
    tickets.replied("u", march - 2 * HOUR)
    tickets.resolved("u", march - 1 * HOUR)

    assert first_contact(counters, wm, 6) == (1, 2)
    assert first_contact(counters, wm, 5) == (1, 1)


def test_dropping_events_before_the_cut_changes_no_figure() -> None:
    # wm on 2024-04-19: last_month is March, the oldest window start, and the
    # cut may be there. The replies of February 28 are dropped; any d they
    # set was before every window start, disqualifying nothing.
    march = 1_709_251_200_000
    wm = march + 49 * 24 * HOUR
    tickets, counters = tickets_at(wm)
    tickets.replied("t", march - 3 * HOUR)
    tickets.replied("t", march - 2 * HOUR)
    tickets.resolved("t", march - 1 * HOUR)
    tickets.replied("u", march - 1 * HOUR)
    tickets.resolved("u", march + 1 * HOUR)
    assert first_contact(counters, wm, 6) == (1, 1)

    tickets.compact(march)
    tickets.resolved("t", march + 2 * HOUR)
    tickets.replied("u", march + 3 * HOUR)
    tickets.resolved("u", march + 4 * HOUR)

    assert len(tickets) == 2
    assert first_contact(counters, wm, 6) == (2, 3)
