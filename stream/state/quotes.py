"""Quote versions: the first event of each (quote id, version) pair."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from stream.state.counters import QUOTES_ISSUED, QUOTES_VALUE, Counters
from stream.state.expiry import ExpiryQueue
from stream.windows import HOUR_MS


class Quotes:
    """Distinct (quote id, version) pairs, counted at their first applied event.

    Known shortcoming: a pair is forgotten once its first event is older than
    the cut (the older of the `last_month` start and the late limit); a repeat
    after that counts as a new quote. Such a repeat is an event more than 30
    days after the first in event time. Keeping every pair forever would fix
    this at about 150 bytes per quote version.
    """

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._first: dict[tuple[str, int], int] = {}
        self._tidy: ExpiryQueue[tuple[str, int]] = ExpiryQueue(HOUR_MS)

    def __len__(self) -> int:
        return len(self._first)

    def issued(
        self, quote_id: str, version: int, millis: int, amount: Decimal, cut: int
    ) -> None:
        """Apply a `quote.issued`: count it if its pair is new."""
        pair = (quote_id, version)
        first = self._first.get(pair)
        if first is not None and first >= cut:
            return

        self._first[pair] = millis
        self._tidy.add(pair, millis)
        self._counters.count(millis, QUOTES_ISSUED)
        self._counters.add_money(millis, QUOTES_VALUE, amount)

    def compact(self, cut: int) -> None:
        """Forget the pairs whose first event is older than `cut`."""
        for pair in self._tidy.pop_before(cut):
            first = self._first.get(pair)
            if first is not None and first < cut:
                del self._first[pair]

    def export(self) -> dict[str, Any]:
        """Return the pairs as plain structures, for checkpoints."""
        return {"first": dict(self._first), "tidy": self._tidy.export()}

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the pairs with `export()` output."""
        self._first = dict(data["first"])
        self._tidy = ExpiryQueue.restore(data["tidy"])
