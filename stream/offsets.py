"""Offset continuity: spotting records the consumer skipped, to read them again.

faust-streaming 0.15 drops, without tracking them, records it fetched while
its flow control was suspended or under an older consumer generation (a
rebalance or a table recovery in progress), and relies on seeking back to the
committed offsets afterwards. When a fetch lands between that seek and the
resumption, the dropped records are never delivered: the stream goes on past
them and, since they were never acknowledged, the committed offset stays
behind them for good. The guard notices the jump, asks for a seek back to the
offset expected, and drops what the stream still holds from beyond it until
that offset arrives again.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class Verdict(enum.Enum):
    """What to do with a record."""

    PROCESS = "process"
    DROP = "drop"
    SEEK = "seek"


RESEEK_SECONDS = 1.0
"""Least time between two seeks to the same missing offset."""


@dataclass
class _Waiting:
    target: int
    since: float
    last_seek: float


class OffsetGuard:
    """Tell, record by record, whether a partition's offsets run on unbroken.

    `strict` guards every record (a topic this project writes, whose offsets
    are contiguous); otherwise only the first record after an assignment is
    compared with the committed offset, since a topic written by transactional
    producers legitimately skips the offsets of its commit markers.
    """

    def __init__(
        self,
        strict: bool,
        patience_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._strict = strict
        self._patience = patience_seconds
        self._clock = clock
        self._next: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, _Waiting] = {}

    def forget(self, tp: Hashable) -> None:
        """Start afresh for a partition, when it is revoked or reloaded."""
        self._next.pop(tp, None)
        self._waiting.pop(tp, None)

    def knows(self, tp: Hashable) -> bool:
        """Tell whether the guard has followed `tp` since it was last forgotten."""
        return tp in self._next or tp in self._waiting

    def clear(self) -> None:
        """Start afresh for every partition."""
        self._next.clear()
        self._waiting.clear()

    def check(self, tp: Hashable, offset: int, expected: int | None) -> Verdict:
        """Judge one record.

        Args:
            tp: the record's topic partition.
            offset: the record's offset.
            expected: the offset that should come next when the guard has no
                record of its own for `tp` yet (the committed offset, or the
                offset after a checkpoint); None when unknown.

        Returns:
            PROCESS the record; DROP it (read already, or beyond a gap being
            read again); or SEEK the partition back to `target(tp)` and drop it.
        """
        waiting = self._waiting.get(tp)
        if waiting is not None:
            return self._while_waiting(tp, offset, waiting)

        wanted = self._next.get(tp, expected)
        if wanted is None or offset == wanted:
            return self._process(tp, offset)
        if offset < wanted:
            return Verdict.DROP
        if tp in self._next and not self._strict:
            return self._process(tp, offset)

        now = self._clock()
        self._waiting[tp] = _Waiting(target=wanted, since=now, last_seek=now)
        logger.warning(
            "records skipped by the consumer, reading them again"
            " partition=%s expected=%s received=%s",
            tp,
            wanted,
            offset,
        )
        return Verdict.SEEK

    def overdue(self) -> list[tuple[Hashable, int]]:
        """Return the partitions to seek again, with their targets.

        A seek undone by stale records leaves nothing to arrive once the
        stream has delivered them all, so the waiting partitions are sought
        again on a clock too, not only when a record comes.
        """
        now = self._clock()
        due = []
        for tp, waiting in self._waiting.items():
            if now - waiting.last_seek >= RESEEK_SECONDS:
                waiting.last_seek = now
                due.append((tp, waiting.target))
        return due

    def target(self, tp: Hashable) -> int:
        """Return the offset a SEEK verdict asks to seek `tp` to."""
        return self._waiting[tp].target

    def _process(self, tp: Hashable, offset: int) -> Verdict:
        self._next[tp] = offset + 1
        return Verdict.PROCESS

    def _while_waiting(self, tp: Hashable, offset: int, waiting: _Waiting) -> Verdict:
        if offset == waiting.target:
            del self._waiting[tp]
            return self._process(tp, offset)
        if offset < waiting.target:
            return Verdict.DROP

        # Records the stream still held from beyond the gap move the consumer's
        # read position past them as they are delivered, which undoes a seek
        # made before them: seek again while they keep coming.
        now = self._clock()
        if now - waiting.since < self._patience:
            if now - waiting.last_seek < RESEEK_SECONDS:
                return Verdict.DROP
            waiting.last_seek = now
            return Verdict.SEEK

        # The expected offset never came back: it no longer exists (retention
        # deleted it) or never held a record. Go on from what is there.
        logger.error(
            "expected offset never arrived, going on partition=%s expected=%s"
            " received=%s",
            tp,
            waiting.target,
            offset,
        )
        del self._waiting[tp]
        return self._process(tp, offset)
