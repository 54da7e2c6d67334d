"""Email messages: distinct deliveries and their opens and clicks."""

from __future__ import annotations

from stream.state.counters import (
    MESSAGES_CLICKED,
    MESSAGES_DELIVERED,
    MESSAGES_OPENED,
    Counters,
)
from stream.state.messages import Messages
from stream.windows import Calendar, Window

HOUR = 3_600_000


def figures(counters: Counters, start: int, end: int) -> tuple[int, int, int]:
    totals = counters.totals(Window("test", start, end))
    return (
        totals.counts[MESSAGES_DELIVERED],
        totals.counts[MESSAGES_OPENED],
        totals.counts[MESSAGES_CLICKED],
    )


def test_a_message_counts_once_at_its_earliest_delivery() -> None:
    counters = Counters(Calendar("UTC"))
    messages = Messages(counters)

    messages.delivered("m", 5 * HOUR, cut=0)
    messages.opened("m", 6 * HOUR, cut=0)
    messages.delivered("m", 7 * HOUR, cut=0)
    messages.delivered("m", 2 * HOUR, cut=0)

    assert figures(counters, 0, 4 * HOUR) == (1, 1, 0)
    assert figures(counters, 4 * HOUR, 8 * HOUR) == (0, 0, 0)


def test_opens_and_clicks_count_whenever_they_happened() -> None:
    counters = Counters(Calendar("UTC"))
    messages = Messages(counters)

    messages.clicked("m", 1 * HOUR, cut=0)
    messages.opened("m", 1 * HOUR, cut=0)
    messages.opened("m", 2 * HOUR, cut=0)
    messages.delivered("m", 3 * HOUR, cut=0)
    messages.delivered("n", 3 * HOUR, cut=0)

    assert figures(counters, 0, 4 * HOUR) == (2, 1, 1)


def test_a_message_older_than_the_cut_is_forgotten() -> None:
    counters = Counters(Calendar("UTC"))
    messages = Messages(counters)
    messages.delivered("m", 1 * HOUR, cut=0)

    messages.compact(3 * HOUR)
    messages.delivered("m", 4 * HOUR, cut=3 * HOUR)

    assert len(messages) == 1
    assert figures(counters, 0, 5 * HOUR) == (2, 0, 0)
