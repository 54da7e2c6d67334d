"""The customer base: timelines, window figures, out-of-order events, compaction."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.state.customers import JOIN, LEAVE, CustomerBase
from stream.windows import DAY_MS, FAR_PAST, Bounds

OPEN = (0, None)
"""A window from time 0 to after every event."""


def base_with(
    *events: tuple[str, int, str, int], bounds: list[Bounds] | None = None
) -> CustomerBase:
    """Apply (customer, time, event id, kind) events in the order given."""
    customers = CustomerBase(bounds or [OPEN], active_horizon_ms=90 * DAY_MS)
    for customer, millis, event_id, kind in events:
        if kind == JOIN:
            customers.join(customer, millis, event_id, order=False)
        else:
            customers.churn(customer, millis, event_id)
    return customers


def test_a_churn_of_a_customer_not_in_the_base_changes_nothing() -> None:
    customers = base_with(("a", 5, "e1", LEAVE), ("a", 10, "e2", JOIN))

    assert customers.present == 1
    assert customers.window_figures(0) == (0, 1, 0, 1)


def test_a_churn_applied_before_the_join_it_follows() -> None:
    customers = base_with(
        ("a", 20, "e2", LEAVE),
        ("a", 10, "e1", JOIN),
        bounds=[(15, None), (25, None), (0, 15)],
    )

    assert customers.present == 0
    # [15, ..): present at 15, gone at the end.
    assert customers.window_figures(0) == (1, 0, 0, 0)
    assert customers.window_figures(1) == (0, 0, 0, 0)
    # [0, 15): joined inside, present at its end.
    assert customers.window_figures(2) == (0, 1, 0, 1)


def test_a_rejoin_is_a_join_and_a_customer_is_new_once_per_window() -> None:
    customers = base_with(
        ("a", 10, "e1", JOIN),
        ("a", 20, "e2", LEAVE),
        ("a", 30, "e3", JOIN),
        bounds=[OPEN, (25, None), (15, None)],
    )

    assert customers.window_figures(0) == (0, 1, 0, 1)
    assert customers.window_figures(1) == (0, 1, 0, 1)
    # Present at 15 and at the end, with a gap: retained all the same.
    assert customers.window_figures(2) == (1, 1, 1, 1)


def test_the_base_at_a_time_holds_the_events_strictly_before_it() -> None:
    customers = base_with(("a", 10, "e1", JOIN), bounds=[(10, None), (11, None)])

    assert customers.window_figures(0)[0] == 0
    assert customers.window_figures(1)[0] == 1


def test_events_at_the_same_time_go_by_event_id() -> None:
    churned_last = base_with(("a", 10, "b", LEAVE), ("a", 10, "a", JOIN))
    joined_last = base_with(("a", 10, "a", LEAVE), ("a", 10, "b", JOIN))

    assert churned_last.present == 0
    assert churned_last.window_figures(0) == (0, 0, 0, 1)
    assert joined_last.present == 1


def test_churn_retention_figures_of_a_window() -> None:
    customers = base_with(
        ("kept", 1, "e1", JOIN),
        ("back", 1, "e2", JOIN),
        ("back", 12, "e3", LEAVE),
        ("back", 14, "e4", JOIN),
        ("gone", 1, "e5", JOIN),
        ("gone", 13, "e6", LEAVE),
        ("new", 15, "e7", JOIN),
        bounds=[(10, None)],
    )

    # S = {kept, back, gone}, E = {kept, back, new}, retained = 2, new: back, new.
    assert customers.window_figures(0) == (3, 3, 2, 2)


def test_a_window_ending_before_the_watermark_reads_the_base_at_its_end() -> None:
    customers = base_with(
        ("a", 1, "e1", JOIN),
        ("a", 25, "e2", LEAVE),
        ("b", 5, "e3", JOIN),
        ("b", 15, "e4", LEAVE),
        ("c", 20, "e5", JOIN),
        bounds=[(3, 20)],
    )

    # S = {a}, E = base at 20 = {a}; b joined inside [3, 20); c at its end.
    assert customers.window_figures(0) == (1, 1, 1, 1)


def test_moving_a_bound_recounts_the_customers_it_passes() -> None:
    customers = base_with(
        ("a", 1, "e1", JOIN),
        ("b", 5, "e2", JOIN),
        ("b", 8, "e3", LEAVE),
        ("c", 9, "e4", JOIN),
        bounds=[(0, None)],
    )

    customers.move_bounds([(6, None)])

    # At 6: {a, b}; now: {a, c}; c joined after 6.
    assert customers.window_figures(0) == (2, 2, 1, 1)


def test_folding_old_events_changes_no_figure_and_drops_the_gone() -> None:
    hour = 3_600_000
    customers = base_with(
        ("a", 1 * hour, "e1", JOIN),
        ("b", 2 * hour, "e2", JOIN),
        ("b", 3 * hour, "e3", LEAVE),
        ("c", 4 * hour, "e4", JOIN),
        ("c", 12 * hour, "e5", LEAVE),
        bounds=[(10 * hour, None)],
    )
    before = customers.window_figures(0)

    customers.compact(cut=10 * hour, watermark=100 * DAY_MS)
    customers.move_bounds([(12 * hour + 1, None)])

    # At 10 h: {a, c}; at the end {a}. At 12 h + 1 ms, c is gone too.
    assert before == (2, 1, 1, 0)
    assert customers.window_figures(0) == (1, 1, 1, 0)
    assert len(customers) == 2
    assert customers.present == 1


def test_an_event_after_folding_still_sees_the_folded_state() -> None:
    customers = base_with(("a", 1, "e1", JOIN), bounds=[(10 * 3_600_000, None)])
    customers.compact(cut=5 * 3_600_000, watermark=100 * DAY_MS)

    customers.churn("a", 6 * 3_600_000, "e2")
    customers.join("a", 11 * 3_600_000, "e3", order=False)

    assert customers.window_figures(0) == (0, 1, 0, 1)


def test_active_customers_have_an_order_in_the_horizon() -> None:
    horizon = 90 * DAY_MS
    wm = 200 * DAY_MS
    customers = CustomerBase([OPEN], active_horizon_ms=horizon)
    customers.join("edge", wm - horizon, "e1", order=True)
    customers.join("inside", wm - horizon + 1, "e2", order=True)
    customers.join("deal-only", wm - 10, "e3", order=False)
    customers.join("churned", wm - 10, "e4", order=True)
    customers.churn("churned", wm - 5, "e5")
    customers.join("late-order", wm - 20, "e6", order=False)
    customers.join("late-order", wm - horizon - 5, "e7", order=True)
    customers.join("late-order", wm, "e8", order=True)

    assert customers.active(wm) == 2
    assert customers.present == 4
    assert customers.active(wm + 2) == 1


# Random histories against a plain walk


def walk_figures(
    events: list[tuple[str, int, str, int]], start: int, end: int | None
) -> tuple[int, int, int, int]:
    """The figures of a window by walking each customer's sorted events."""
    per_customer: dict[str, list[tuple[int, str, int]]] = {}
    for customer, millis, event_id, kind in events:
        per_customer.setdefault(customer, []).append((millis, event_id, kind))

    figures = [0, 0, 0, 0]
    for history in per_customer.values():
        present = False
        states = []
        for millis, _, kind in sorted(history):
            if (kind == JOIN) != present:
                present = kind == JOIN
                states.append((millis, present))

        def at(moment: int | None, states: list[tuple[int, bool]] = states) -> bool:
            state = False
            for millis, now in states:
                if moment is None or millis < moment:
                    state = now
            return state

        in_start, in_end = at(start), at(end)
        joined = any(
            now and start <= millis and (end is None or millis < end)
            for millis, now in states
        )
        figures[0] += in_start
        figures[1] += in_end
        figures[2] += in_start and in_end
        figures[3] += joined
    return figures[0], figures[1], figures[2], figures[3]


histories = st.lists(
    st.tuples(
        st.sampled_from("abcd"),
        st.integers(0, 40),
        st.sampled_from(["x", "y", "z"]),
        st.sampled_from([JOIN, LEAVE]),
    ),
    max_size=30,
)


@given(histories, st.integers(0, 40), st.integers(0, 40), st.integers(0, 40))
@settings(max_examples=300, deadline=None)
def test_any_arrival_order_gives_the_figures_of_a_plain_walk(
    events: list[tuple[str, int, str, int]], first: int, second: int, end: int
) -> None:
    early, late = sorted((first, second))
    customers = base_with(*events, bounds=[(FAR_PAST, None), (FAR_PAST, FAR_PAST)])

    customers.move_bounds([(early, None), (early, end)])
    customers.move_bounds([(late, None), (late, max(end, late))])

    assert customers.window_figures(0) == walk_figures(events, late, None)
    assert customers.window_figures(1) == walk_figures(events, late, max(end, late))
    assert customers.present == walk_figures(events, 0, None)[1]
