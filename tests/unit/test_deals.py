"""Won deals: sales-cycle statistics per window."""

from __future__ import annotations

from fractions import Fraction

from stream.state.deals import WonDeals
from stream.windows import FAR_PAST

DAY = 86_400_000


def test_mean_median_and_nearest_rank_p90() -> None:
    deals = WonDeals([(0, None)])
    for cycle in (5, 1, 4, 2, 3, 10, 6, 7, 8, 9, 100):
        deals.won(1_000 + cycle, None, 1_000)

    # Eleven cycles 1..10 and 100: median the 6th, p90 the 10th (ceil 9.9).
    assert deals.figures(0) == (11, 0, Fraction(155, 11), Fraction(6), 10)


def test_an_even_count_takes_the_mean_of_the_middle_two() -> None:
    deals = WonDeals([(0, None)])
    for cycle in (1, 2, 4, 8):
        deals.won(100, None, 100 - cycle)

    assert deals.figures(0) == (4, 0, Fraction(15, 4), Fraction(3), 8)


def test_deals_of_unknown_start_are_counted_apart() -> None:
    deals = WonDeals([(0, None)])
    deals.won(100, "lead", None)
    deals.won(100, None, None)

    assert deals.figures(0) == (2, 2, None, None, None)


def test_a_lead_creation_applied_later_re_times_its_deals() -> None:
    deals = WonDeals([(0, None)])
    deals.won(100, "lead", None)
    deals.won(200, "lead", 150)

    deals.lead_started("lead", 40)

    assert deals.figures(0) == (2, 0, Fraction(110), Fraction(110), 160)


def test_deals_enter_and_leave_windows_as_bounds_move() -> None:
    deals = WonDeals([(FAR_PAST, None), (FAR_PAST, FAR_PAST)])
    deals.won(10 * DAY, None, 9 * DAY)
    deals.won(20 * DAY, None, None)
    deals.won(30 * DAY, None, 28 * DAY)

    deals.move_bounds([(15 * DAY, None), (15 * DAY, 30 * DAY)])

    assert deals.figures(0) == (2, 1, Fraction(2 * DAY), Fraction(2 * DAY), 2 * DAY)
    assert deals.figures(1) == (1, 1, None, None, None)

    deals.compact(15 * DAY)

    assert len(deals) == 2
