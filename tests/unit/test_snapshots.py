"""Snapshots: keys, catalogue fields, change detection and the rate limit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.kpis import KpiSnapshot
from stream.errors import CatalogueError
from stream.snapshots import Snapshotter, build_snapshot, watermark_datetime

WATERMARK_MS = 1_767_225_600_123
"""2026-01-01T00:00:00.123Z."""

COMPUTED_AT = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def snapshotter(clock: FakeClock, interval: float = 1.0) -> Snapshotter:
    return Snapshotter("EUR", interval, clock=clock, wall_clock=lambda: COMPUTED_AT)


def keys_of(snapshots: list[KpiSnapshot]) -> list[str]:
    return [s.key for s in snapshots]


def test_watermark_is_exact_to_the_millisecond() -> None:
    assert watermark_datetime(WATERMARK_MS) == datetime(
        2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC
    )


def test_key_of_a_series_without_dimension_ends_with_an_empty_field() -> None:
    snapshot = build_snapshot(
        ("lead_conversion", "1h", None), 0.25, COMPUTED_AT, COMPUTED_AT, "EUR"
    )

    assert snapshot.key == "lead_conversion|1h|"
    assert snapshot.dimension is None
    assert snapshot.dimension_value is None


def test_key_of_a_dimensioned_series_names_its_value() -> None:
    snapshot = build_snapshot(
        ("site_visits", "24h", "paid_search"), 40.0, COMPUTED_AT, COMPUTED_AT, "EUR"
    )

    assert snapshot.key == "site_visits|24h|paid_search"
    assert snapshot.kpi == "channel_conversion"
    assert snapshot.dimension == "channel"
    assert snapshot.dimension_value == "paid_search"
    assert snapshot.unit == "count"
    assert snapshot.currency is None


def test_money_series_carry_the_reporting_currency() -> None:
    snapshot = build_snapshot(
        ("lost_deals_value", "month", "all"), 1200.5, COMPUTED_AT, COMPUTED_AT, "SEK"
    )

    assert snapshot.kpi == "lost_deals"
    assert snapshot.unit == "money"
    assert snapshot.currency == "SEK"
    assert snapshot.definition_version == 1


def test_an_unknown_series_names_itself_in_the_error() -> None:
    with pytest.raises(CatalogueError, match="'no_such_series'"):
        build_snapshot(
            ("no_such_series", "1h", None), 1.0, COMPUTED_AT, COMPUTED_AT, "EUR"
        )


def test_first_offer_emits_every_key_with_its_fields() -> None:
    feed = snapshotter(FakeClock())

    due = feed.offer(
        {("lead_conversion", "1h", None): 0.5, ("complaints", "day", "billing"): 3.0},
        WATERMARK_MS,
    )

    assert [s.model_dump(mode="json") for s in due] == [
        {
            "key": "lead_conversion|1h|",
            "kpi": "lead_conversion",
            "series": "lead_conversion",
            "window": "1h",
            "dimension": None,
            "dimension_value": None,
            "value": 0.5,
            "unit": "ratio",
            "currency": None,
            "watermark": "2026-01-01T00:00:00.123000Z",
            "definition_version": 1,
            "computed_at": "2026-01-01T00:00:05Z",
        },
        {
            "key": "complaints|day|billing",
            "kpi": "complaints",
            "series": "complaints",
            "window": "day",
            "dimension": "category",
            "dimension_value": "billing",
            "value": 3.0,
            "unit": "count",
            "currency": None,
            "watermark": "2026-01-01T00:00:00.123000Z",
            "definition_version": 1,
            "computed_at": "2026-01-01T00:00:05Z",
        },
    ]


def test_a_missing_value_is_emitted_as_none() -> None:
    feed = snapshotter(FakeClock())

    due = feed.offer({("email_open", "24h", None): None}, WATERMARK_MS)

    assert [(s.key, s.value) for s in due] == [("email_open|24h|", None)]


def test_an_unchanged_value_is_not_emitted_again() -> None:
    clock = FakeClock()
    feed = snapshotter(clock)
    feed.offer({("complaints", "1h", "all"): 2.0}, WATERMARK_MS)
    clock.now += 10

    assert feed.offer({("complaints", "1h", "all"): 2.0}, WATERMARK_MS + 5000) == []


def test_an_unchanged_value_takes_the_watermark_once_it_settles() -> None:
    clock = FakeClock()
    feed = snapshotter(clock, interval=1.0)
    key = ("complaints", "1h", "all")
    feed.offer({key: 2.0}, WATERMARK_MS)

    clock.now += 1.0
    moving = feed.offer({key: 2.0}, WATERMARK_MS + 7000)
    clock.now += 0.75
    still_too_soon = feed.offer({key: 2.0}, WATERMARK_MS + 7000)
    clock.now += 0.25
    settled = feed.offer({key: 2.0}, WATERMARK_MS + 7000)
    clock.now += 5.0
    again = feed.offer({key: 2.0}, WATERMARK_MS + 7000)

    assert moving == []
    assert still_too_soon == []
    assert [(s.value, s.watermark) for s in settled] == [
        (2.0, watermark_datetime(WATERMARK_MS + 7000))
    ]
    assert again == []


def test_an_unchanged_value_takes_a_moving_watermark_once_a_minute() -> None:
    clock = FakeClock()
    feed = snapshotter(clock, interval=1.0)
    key = ("margin", "last_month", None)
    emitted_at: list[float] = []

    # The watermark moves at every offer, four a second, for 150 s.
    for step in range(601):
        clock.now = 100.0 + step / 4
        if feed.offer({key: 10.0}, WATERMARK_MS + step * 250):
            emitted_at.append(clock.now - 100.0)

    assert emitted_at == [0.0, 60.0, 120.0]


def test_only_the_changed_keys_are_emitted() -> None:
    clock = FakeClock()
    feed = snapshotter(clock)
    feed.offer(
        {("complaints", "1h", "all"): 2.0, ("complaints", "1h", "other"): 1.0},
        WATERMARK_MS,
    )
    clock.now += 1.0

    due = feed.offer(
        {("complaints", "1h", "all"): 3.0, ("complaints", "1h", "other"): 1.0},
        WATERMARK_MS + 1000,
    )

    assert [(s.key, s.value) for s in due] == [("complaints|1h|all", 3.0)]


def test_a_value_turning_to_none_is_a_change() -> None:
    clock = FakeClock()
    feed = snapshotter(clock)
    feed.offer({("crm_roi", "7d", None): 1.5}, WATERMARK_MS)
    clock.now += 2

    due = feed.offer({("crm_roi", "7d", None): None}, WATERMARK_MS)

    assert [(s.key, s.value) for s in due] == [("crm_roi|7d|", None)]


def test_a_change_inside_the_interval_waits_for_its_end() -> None:
    clock = FakeClock()
    feed = snapshotter(clock, interval=1.0)
    key = ("quotes_issued", "day", None)
    feed.offer({key: 1.0}, WATERMARK_MS)

    clock.now += 0.25
    held = feed.offer({key: 2.0}, WATERMARK_MS + 250)
    clock.now += 0.5
    still_held = feed.offer({key: 3.0}, WATERMARK_MS + 750)
    clock.now += 0.25
    released = feed.offer({key: 3.0}, WATERMARK_MS + 1000)

    assert held == []
    assert still_held == []
    assert [(s.value, s.watermark) for s in released] == [
        (3.0, watermark_datetime(WATERMARK_MS + 1000))
    ]


def test_a_key_is_emitted_at_most_once_per_interval_under_constant_change() -> None:
    clock = FakeClock()
    feed = snapshotter(clock, interval=1.0)
    key = ("lead_volume", "1h", None)
    emitted_at: list[float] = []

    # Steps of 1/8 s add up exactly in binary floating point.
    for step in range(33):
        clock.now = 100.0 + step / 8
        if feed.offer({key: float(step)}, WATERMARK_MS + step * 125):
            emitted_at.append(clock.now - 100.0)

    assert emitted_at == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_change_reverted_inside_the_interval_is_not_emitted() -> None:
    clock = FakeClock()
    feed = snapshotter(clock, interval=1.0)
    key = ("complaints", "24h", "all")
    feed.offer({key: 5.0}, WATERMARK_MS)

    clock.now += 0.5
    feed.offer({key: 6.0}, WATERMARK_MS)
    clock.now += 0.5

    assert feed.offer({key: 5.0}, WATERMARK_MS) == []


def test_keys_are_rate_limited_independently() -> None:
    clock = FakeClock()
    feed = snapshotter(clock, interval=1.0)
    first, second = ("complaints", "1h", "all"), ("complaints", "24h", "all")
    feed.offer({first: 1.0}, WATERMARK_MS)
    clock.now += 0.5

    due = feed.offer({first: 2.0, second: 7.0}, WATERMARK_MS)

    assert keys_of(due) == ["complaints|24h|all"]


def test_latest_holds_every_key_of_the_last_offer_even_when_held_back() -> None:
    clock = FakeClock()
    feed = snapshotter(clock, interval=1.0)
    feed.offer({("margin", "month", None): 10.0}, WATERMARK_MS)
    clock.now += 0.1

    feed.offer(
        {("margin", "month", None): 12.0, ("revenue", "month", None): 40.0},
        WATERMARK_MS + 100,
    )
    latest = feed.latest()

    assert {key: s.value for key, s in latest.items()} == {
        "margin|month|": 12.0,
        "revenue|month|": 40.0,
    }
    assert latest["margin|month|"].currency == "EUR"
    assert latest["margin|month|"].watermark == watermark_datetime(WATERMARK_MS + 100)


def test_latest_is_empty_before_the_first_offer() -> None:
    assert dict(snapshotter(FakeClock()).latest()) == {}


def test_reset_emits_every_key_again() -> None:
    clock = FakeClock()
    feed = snapshotter(clock)
    feed.offer({("complaints", "1h", "all"): 2.0}, WATERMARK_MS)
    feed.reset()

    due = feed.offer({("complaints", "1h", "all"): 2.0}, WATERMARK_MS)

    assert keys_of(due) == ["complaints|1h|all"]
    assert dict(feed.latest()).keys() == {"complaints|1h|all"}


def test_ticks_are_a_quarter_of_the_interval() -> None:
    assert snapshotter(FakeClock(), interval=2.0).tick_seconds == 0.5
