"""Event ids claimed by applied events, remembered for the dedupe horizon."""

from __future__ import annotations

from typing import Any

from stream.state.expiry import ExpiryQueue
from stream.windows import MINUTE_MS


class EventClaims:
    """The ids of applied events whose event time is within the dedupe horizon.

    An id is a duplicate while its claim's event time is `>= wm - horizon`.
    Claims are filed by minute of event time and forgotten once the whole
    minute has left the horizon; memory is the ids of one horizon of events.
    """

    def __init__(self, horizon_ms: int) -> None:
        self._horizon_ms = horizon_ms
        self._claims: dict[str, int] = {}
        self._expiry: ExpiryQueue[str] = ExpiryQueue(MINUTE_MS)

    def __len__(self) -> int:
        return len(self._claims)

    def is_claimed(self, event_id: str, watermark: int) -> bool:
        """Tell whether an applied event claimed this id within the horizon."""
        claimed_at = self._claims.get(event_id)
        return claimed_at is not None and claimed_at >= watermark - self._horizon_ms

    def claim(self, event_id: str, millis: int, watermark: int) -> None:
        """Record the id of an event applied at `millis`, the watermark now set."""
        # A claim already outside the horizon could never make a duplicate,
        # since the watermark only grows; keeping it would only cost memory.
        if millis < watermark - self._horizon_ms:
            return

        self._claims[event_id] = millis
        self._expiry.add(event_id, millis)

    def expire(self, watermark: int) -> None:
        """Forget the claims that left the horizon."""
        floor = watermark - self._horizon_ms
        for event_id in self._expiry.pop_before(floor):
            claimed_at = self._claims.get(event_id)
            if claimed_at is not None and claimed_at < floor:
                del self._claims[event_id]

    def export(self) -> dict[str, Any]:
        """Return the claims as plain structures, for checkpoints."""
        return {"claims": dict(self._claims), "expiry": self._expiry.export()}

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the claims with `export()` output."""
        self._claims = dict(data["claims"])
        self._expiry = ExpiryQueue.restore(data["expiry"])
