"""Quotas and won amounts per rep and month."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from stream.state.quotas import Quotas

MARCH = 2024 * 12 + 2


def test_share_at_quota_and_mean_attainment_are_exact() -> None:
    quotas = Quotas()
    quotas.set("a", MARCH, 1, "e1", Decimal("3"))
    quotas.set("b", MARCH, 1, "e2", Decimal("300"))
    quotas.won("a", MARCH, Decimal("1"))
    quotas.won("a", MARCH, Decimal("2"))
    quotas.won("b", MARCH, Decimal("100"))

    assert quotas.figures(MARCH) == (2, Fraction(1, 2), Fraction(2, 3))


def test_the_latest_quota_wins_and_ties_go_to_the_greater_event_id() -> None:
    quotas = Quotas()
    quotas.set("a", MARCH, 20, "e9", Decimal("10"))
    quotas.set("a", MARCH, 10, "e1", Decimal("1"))
    quotas.set("b", MARCH, 10, "e2", Decimal("1"))
    quotas.set("b", MARCH, 10, "e1", Decimal("4"))
    quotas.won("a", MARCH, Decimal("5"))
    quotas.won("b", MARCH, Decimal("1"))

    assert quotas.figures(MARCH) == (2, Fraction(1, 2), Fraction(3, 4))


def test_a_quota_of_zero_or_less_is_no_quota() -> None:
    quotas = Quotas()
    quotas.set("a", MARCH, 1, "e1", Decimal("100"))
    quotas.set("a", MARCH, 2, "e2", Decimal("0"))
    quotas.set("b", MARCH, 1, "e3", Decimal("-5"))
    quotas.won("a", MARCH, Decimal("5"))

    assert quotas.figures(MARCH) == (0, None, None)


def test_months_before_last_month_are_dropped() -> None:
    quotas = Quotas()
    quotas.set("a", MARCH - 1, 1, "e1", Decimal("1"))
    quotas.set("a", MARCH, 1, "e2", Decimal("1"))
    quotas.set("b", MARCH + 3, 1, "e3", Decimal("1"))

    quotas.expire(MARCH)
    quotas.set("c", MARCH - 1, 1, "e4", Decimal("1"))

    assert quotas.figures(MARCH - 1) == (0, None, None)
    assert quotas.figures(MARCH) == (1, Fraction(0), Fraction(0))
    assert len(quotas) == 2
