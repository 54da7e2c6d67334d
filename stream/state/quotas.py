"""Sales quotas and won amounts, per rep and local month."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

from stream.state.counters import EXACT, ZERO


class Quotas:
    """The quota and the won amount of every rep for the months still reported.

    A month before `last_month` is never reported again, so its entries are
    dropped as the watermark moves; quotas set ahead for future months are
    kept until they pass. Memory is reps x (2 + months set ahead).
    """

    def __init__(self) -> None:
        self._quotas: dict[int, dict[str, tuple[int, str, Decimal]]] = {}
        self._won: dict[int, dict[str, Decimal]] = {}
        self._first_month = -(2**62)

    def __len__(self) -> int:
        reps: set[str] = set()
        for months in (self._quotas, self._won):
            for per_rep in months.values():
                reps.update(per_rep)
        return len(reps)

    def set(
        self, rep_id: str, month: int, millis: int, event_id: str, amount: Decimal
    ) -> None:
        """Apply a `quota.set`: the latest event time wins, ties by event id."""
        if month < self._first_month:
            return

        per_rep = self._quotas.setdefault(month, {})
        current = per_rep.get(rep_id)
        if current is None or (millis, event_id) > current[:2]:
            per_rep[rep_id] = (millis, event_id, amount)

    def won(self, rep_id: str, month: int, amount: Decimal) -> None:
        """Add a `deal.won` amount to its rep and local month."""
        if month < self._first_month:
            return

        per_rep = self._won.setdefault(month, {})
        per_rep[rep_id] = EXACT.add(per_rep.get(rep_id, ZERO), amount)

    def figures(self, month: int) -> tuple[int, Fraction | None, Fraction | None]:
        """Return reps with a quota, the share at or above it, the mean attainment.

        Attainments are exact fractions; a quota <= 0 is no quota.
        """
        won = self._won.get(month, {})
        reps = 0
        reached = 0
        total = Fraction(0)
        for rep_id, (_, _, quota) in self._quotas.get(month, {}).items():
            if quota <= 0:
                continue

            amount = won.get(rep_id, ZERO)
            reps += 1
            reached += amount >= quota
            total += Fraction(amount) / Fraction(quota)

        if not reps:
            return 0, None, None
        return reps, Fraction(reached, reps), total / reps

    def expire(self, first_month: int) -> None:
        """Drop the months before `first_month`, which are never reported again."""
        self._first_month = max(self._first_month, first_month)
        for months in (self._quotas, self._won):
            for month in [month for month in months if month < self._first_month]:
                del months[month]

    def export(self) -> dict[str, Any]:
        """Return quotas and won amounts as plain structures, for checkpoints."""
        return {
            "quotas": {month: dict(reps) for month, reps in self._quotas.items()},
            "won": {month: dict(reps) for month, reps in self._won.items()},
            "first_month": self._first_month,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace quotas and won amounts with `export()` output."""
        self._quotas = {month: dict(reps) for month, reps in data["quotas"].items()}
        self._won = {month: dict(reps) for month, reps in data["won"].items()}
        self._first_month = data["first_month"]
