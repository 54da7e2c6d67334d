"""Tests of the offset guard that reads again records the consumer skipped."""

from __future__ import annotations

from stream.offsets import OffsetGuard, Verdict

TP = ("crm-events", 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_contiguous_records_are_processed() -> None:
    guard = OffsetGuard(strict=True)

    verdicts = [guard.check(TP, offset, expected=5) for offset in (5, 6, 7)]

    assert verdicts == [Verdict.PROCESS] * 3


def test_a_first_record_beyond_the_committed_offset_asks_for_a_seek() -> None:
    guard = OffsetGuard(strict=False)

    assert guard.check(TP, 183, expected=172) is Verdict.SEEK
    assert guard.target(TP) == 172


def test_records_beyond_the_gap_are_dropped_until_the_expected_one_comes() -> None:
    guard = OffsetGuard(strict=False)
    guard.check(TP, 183, expected=172)

    stale = [guard.check(TP, offset, expected=172) for offset in (184, 185)]
    again = [guard.check(TP, offset, expected=172) for offset in range(172, 186)]

    assert stale == [Verdict.DROP, Verdict.DROP]
    assert again == [Verdict.PROCESS] * 14


def test_records_read_already_are_dropped() -> None:
    guard = OffsetGuard(strict=True)
    for offset in (0, 1, 2):
        guard.check(TP, offset, expected=0)

    assert guard.check(TP, 1, expected=0) is Verdict.DROP


def test_a_lenient_guard_lets_later_gaps_through() -> None:
    # Transactional producers leave the offsets of commit markers empty.
    guard = OffsetGuard(strict=False)
    guard.check(TP, 10, expected=10)

    assert guard.check(TP, 12, expected=None) is Verdict.PROCESS


def test_a_strict_guard_seeks_on_any_gap() -> None:
    guard = OffsetGuard(strict=True)
    guard.check(TP, 10, expected=10)

    assert guard.check(TP, 12, expected=None) is Verdict.SEEK
    assert guard.target(TP) == 11


def test_stale_records_after_a_second_ask_for_the_seek_again() -> None:
    clock = FakeClock()
    guard = OffsetGuard(strict=True, clock=clock)
    guard.check(TP, 50, expected=40)

    clock.now = 0.5
    soon = guard.check(TP, 51, expected=40)
    clock.now = 1.5
    later = guard.check(TP, 52, expected=40)
    clock.now = 1.7
    after_that = guard.check(TP, 53, expected=40)

    assert (soon, later, after_that) == (Verdict.DROP, Verdict.SEEK, Verdict.DROP)
    assert guard.target(TP) == 40


def test_an_expected_offset_that_never_comes_is_given_up_after_the_patience() -> None:
    clock = FakeClock()
    guard = OffsetGuard(strict=True, patience_seconds=30, clock=clock)
    guard.check(TP, 50, expected=40)

    clock.now = 0.5
    before = guard.check(TP, 51, expected=40)
    clock.now = 31.0
    after = guard.check(TP, 52, expected=40)

    assert (before, after) == (Verdict.DROP, Verdict.PROCESS)
    assert guard.check(TP, 53, expected=40) is Verdict.PROCESS


def test_an_unknown_expectation_takes_the_first_record_as_the_start() -> None:
    guard = OffsetGuard(strict=True)

    assert guard.check(TP, 900, expected=None) is Verdict.PROCESS
    assert guard.check(TP, 901, expected=None) is Verdict.PROCESS


def test_forgetting_a_partition_starts_it_afresh() -> None:
    guard = OffsetGuard(strict=True)
    guard.check(TP, 7, expected=7)
    guard.forget(TP)

    assert guard.check(TP, 3, expected=3) is Verdict.PROCESS


def test_the_guard_knows_a_partition_once_it_has_judged_a_record_of_it() -> None:
    guard = OffsetGuard(strict=False)
    before = guard.knows(TP)
    guard.check(TP, 0, expected=0)

    assert (before, guard.knows(TP)) == (False, True)


def test_a_waiting_partition_is_sought_again_on_the_clock() -> None:
    clock = FakeClock()
    guard = OffsetGuard(strict=True, clock=clock)
    guard.check(TP, 50, expected=40)

    clock.now = 0.5
    early = guard.overdue()
    clock.now = 1.2
    due = guard.overdue()
    clock.now = 1.5
    again = guard.overdue()

    assert (early, due, again) == ([], [(TP, 40)], [])
