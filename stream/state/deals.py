"""Won deals: the sales cycle of each, and its statistics per window."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from sortedcontainers import SortedList

from stream.windows import Bounds


class _Deal:
    __slots__ = ("cycle", "lead_id", "won")

    def __init__(self, won: int, lead_id: str | None, cycle: int | None) -> None:
        self.won = won
        self.lead_id = lead_id
        self.cycle = cycle


class WonDeals:
    """Every applied `deal.won` still inside a window, with its cycle in ms.

    Per window, the known cycles are kept sorted with their sum, and the
    deals of unknown start are counted, so mean, median and p90 are read in
    O(log n). A deal enters and leaves windows as their bounds move (found by
    won time), and its cycle changes when its lead's creation time does.
    Memory is the deals won since the cut.
    """

    def __init__(self, bounds: Sequence[Bounds]) -> None:
        self._deals: dict[int, _Deal] = {}
        self._by_time = SortedList()
        self._by_lead: dict[str, set[int]] = {}
        self._bounds = list(bounds)
        self._cycles = [SortedList() for _ in bounds]
        self._sums = [0] * len(bounds)
        self._unknown = [0] * len(bounds)
        self._next = 0

    def __len__(self) -> int:
        return len(self._deals)

    def won(self, millis: int, lead_id: str | None, start: int | None) -> None:
        """Apply a `deal.won` whose lead started at `start` (None: unknown)."""
        number = self._next
        self._next += 1
        deal = self._deals[number] = _Deal(
            millis, lead_id, None if start is None else millis - start
        )
        self._by_time.add((millis, number))
        if lead_id is not None:
            self._by_lead.setdefault(lead_id, set()).add(number)

        for window, bounds in enumerate(self._bounds):
            if _inside(millis, bounds):
                self._tally(window, deal.cycle, 1)

    def lead_started(self, lead_id: str, start: int) -> None:
        """Re-time the deals of a lead whose creation time is now `start`."""
        for number in self._by_lead.get(lead_id, ()):
            deal = self._deals[number]
            cycle = deal.won - start
            if cycle == deal.cycle:
                continue

            for window, bounds in enumerate(self._bounds):
                if _inside(deal.won, bounds):
                    self._tally(window, deal.cycle, -1)
                    self._tally(window, cycle, 1)
            deal.cycle = cycle

    def move_bounds(self, bounds: Sequence[Bounds]) -> None:
        """Move every window to new bounds, moving the deals that cross."""
        for window, new in enumerate(bounds):
            old = self._bounds[window]
            if new == old:
                continue

            crossing = set(self._crossing(old[0], new[0]))
            if old[1] is not None and new[1] is not None:
                crossing |= set(self._crossing(old[1], new[1]))
            elif old[1] != new[1]:
                crossing = set(self._deals)

            for number in crossing:
                deal = self._deals[number]
                if _inside(deal.won, old):
                    self._tally(window, deal.cycle, -1)
                if _inside(deal.won, new):
                    self._tally(window, deal.cycle, 1)
            self._bounds[window] = new

    def compact(self, cut: int) -> None:
        """Drop the deals won before `cut`, which is before every window start."""
        passed = list(self._by_time.irange(maximum=(cut,), inclusive=(True, False)))
        for entry in passed:
            self._by_time.remove(entry)
            deal = self._deals.pop(entry[1])
            if deal.lead_id is not None:
                numbers = self._by_lead[deal.lead_id]
                numbers.discard(entry[1])
                if not numbers:
                    del self._by_lead[deal.lead_id]

    def figures(
        self, window: int
    ) -> tuple[int, int, Fraction | None, Fraction | None, int | None]:
        """Return deals won, those of unknown start, and mean, median, p90 in ms.

        The median of an even count is the mean of the middle two; p90 is the
        nearest rank, position ceil(0.9 n) counting from 1, in integers.
        """
        cycles = self._cycles[window]
        known = len(cycles)
        unknown = self._unknown[window]
        if not known:
            return unknown, unknown, None, None, None

        mean = Fraction(self._sums[window], known)
        middle = known // 2
        if known % 2:
            median = Fraction(cycles[middle])
        else:
            median = Fraction(cycles[middle - 1] + cycles[middle], 2)
        p90 = cycles[(9 * known + 9) // 10 - 1]
        return known + unknown, unknown, mean, median, p90

    def _tally(self, window: int, cycle: int | None, sign: int) -> None:
        if cycle is None:
            self._unknown[window] += sign
        elif sign > 0:
            self._cycles[window].add(cycle)
            self._sums[window] += cycle
        else:
            self._cycles[window].remove(cycle)
            self._sums[window] -= cycle

    def _crossing(self, old: int, new: int) -> list[int]:
        low, high = min(old, new), max(old, new)
        return [
            number
            for _, number in self._by_time.irange(
                (low,), (high,), inclusive=(True, False)
            )
        ]

    def export(self) -> dict[str, Any]:
        """Return the deals as plain structures, for checkpoints."""
        return {
            "deals": {
                number: (deal.won, deal.lead_id, deal.cycle)
                for number, deal in self._deals.items()
            },
            "bounds": list(self._bounds),
            "cycles": [list(cycles) for cycles in self._cycles],
            "sums": list(self._sums),
            "unknown": list(self._unknown),
            "next": self._next,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the deals with `export()` output."""
        self._deals = {
            number: _Deal(won, lead_id, cycle)
            for number, (won, lead_id, cycle) in data["deals"].items()
        }
        self._by_time = SortedList(
            (deal.won, number) for number, deal in self._deals.items()
        )
        self._by_lead = {}
        for number, deal in self._deals.items():
            if deal.lead_id is not None:
                self._by_lead.setdefault(deal.lead_id, set()).add(number)
        self._bounds = list(data["bounds"])
        self._cycles = [SortedList(cycles) for cycles in data["cycles"]]
        self._sums = list(data["sums"])
        self._unknown = list(data["unknown"])
        self._next = data["next"]


def _inside(millis: int, bounds: Bounds) -> bool:
    start, end = bounds
    return start <= millis and (end is None or millis < end)
