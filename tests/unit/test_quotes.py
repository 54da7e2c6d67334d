"""Quote versions: counted once, at their first applied event."""

from __future__ import annotations

from decimal import Decimal

from stream.state.counters import QUOTES_ISSUED, QUOTES_VALUE, Counters
from stream.state.quotes import Quotes
from stream.windows import Calendar, Window

HOUR = 3_600_000


def test_a_repeated_pair_keeps_its_first_time_and_amount() -> None:
    counters = Counters(Calendar("UTC"))
    quotes = Quotes(counters)

    quotes.issued("q", 1, 2 * HOUR, Decimal("100.10"), cut=0)
    quotes.issued("q", 1, 1 * HOUR, Decimal("5"), cut=0)
    quotes.issued("q", 2, 1 * HOUR, Decimal("90"), cut=0)

    late = counters.totals(Window("test", 2 * HOUR, 3 * HOUR))
    early = counters.totals(Window("test", 0, 2 * HOUR))
    assert (late.counts[QUOTES_ISSUED], late.money[QUOTES_VALUE]) == (
        1,
        Decimal("100.10"),
    )
    assert (early.counts[QUOTES_ISSUED], early.money[QUOTES_VALUE]) == (
        1,
        Decimal("90"),
    )


def test_pairs_older_than_the_cut_are_forgotten() -> None:
    counters = Counters(Calendar("UTC"))
    quotes = Quotes(counters)
    quotes.issued("q", 1, 1 * HOUR, Decimal("1"), cut=0)
    quotes.issued("q", 2, 5 * HOUR, Decimal("1"), cut=0)

    quotes.compact(3 * HOUR)

    assert len(quotes) == 1
