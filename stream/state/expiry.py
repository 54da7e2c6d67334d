"""Keys filed by event time, so that state can be dropped as the watermark moves."""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class ExpiryQueue(Generic[K]):
    """Keys filed in buckets of event time, handed back once a time passes them.

    A key may be filed more than once (each time its owner's oldest time
    changes); whoever pops it checks the key's current state and files it again
    if it still has to be kept. This keeps filing O(1) with no removal.
    """

    def __init__(self, bucket_ms: int) -> None:
        self._bucket_ms = bucket_ms
        self._buckets: dict[int, set[K]] = {}
        self._order: list[int] = []

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._buckets.values())

    def add(self, key: K, millis: int) -> None:
        """File `key` under the bucket of an event time."""
        bucket = millis // self._bucket_ms
        keys = self._buckets.get(bucket)
        if keys is None:
            keys = self._buckets[bucket] = set()
            heapq.heappush(self._order, bucket)
        keys.add(key)

    def pop_before(self, millis: int) -> list[K]:
        """Remove and return the keys of every bucket that lies wholly before a time."""
        popped: list[K] = []
        limit = millis // self._bucket_ms
        while self._order and self._order[0] < limit:
            popped.extend(self._buckets.pop(heapq.heappop(self._order)))
        return popped

    def export(self) -> tuple[int, dict[int, list[K]]]:
        """Return the queue as plain structures, for checkpoints."""
        return self._bucket_ms, {
            bucket: list(keys) for bucket, keys in self._buckets.items()
        }

    @classmethod
    def restore(cls, data: tuple[int, dict[int, list[K]]]) -> ExpiryQueue[K]:
        """Rebuild a queue from `export()` output."""
        bucket_ms, buckets = data
        queue: ExpiryQueue[K] = cls(bucket_ms)
        queue._buckets = {bucket: set(keys) for bucket, keys in buckets.items()}
        queue._order = sorted(queue._buckets)
        return queue
