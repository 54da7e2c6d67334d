"""Email messages: when each was first delivered, whether opened or clicked."""

from __future__ import annotations

from typing import Any

from stream.state.counters import (
    MESSAGES_CLICKED,
    MESSAGES_DELIVERED,
    MESSAGES_OPENED,
    Counters,
)
from stream.state.expiry import ExpiryQueue
from stream.windows import HOUR_MS


class _Message:
    __slots__ = ("clicked", "delivered", "opened", "seen")

    def __init__(self, seen: int) -> None:
        self.delivered: int | None = None
        self.opened = False
        self.clicked = False
        self.seen = seen


class Messages:
    """Distinct delivered messages and their opens and clicks, by delivery time.

    A message counts in `MESSAGES_DELIVERED` under its delivery time (the
    earliest applied delivery), and in `MESSAGES_OPENED` / `MESSAGES_CLICKED`
    under that same time once any open / click is applied, whatever its time.
    An earlier delivery moves all three; a first open adds one.

    Known shortcoming: a message is forgotten once its newest event is older
    than the cut (the older of the `last_month` start and the late limit).
    A delivery of that message arriving later, which can only be an event
    more than 30 days late against its first delivery, counts it as a new
    message, and an open recorded before its delivery is lost for it. Keeping
    every message id forever would fix this at about 150 bytes per message.
    """

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._messages: dict[str, _Message] = {}
        self._tidy: ExpiryQueue[str] = ExpiryQueue(HOUR_MS)

    def __len__(self) -> int:
        return len(self._messages)

    def delivered(self, message_id: str, millis: int, cut: int) -> None:
        """Apply an `email.delivered`."""
        message = self._message(message_id, millis, cut)
        old = message.delivered
        if old is not None and old <= millis:
            return

        if old is not None:
            self._file(message, old, -1)
        message.delivered = millis
        self._file(message, millis, 1)

    def opened(self, message_id: str, millis: int, cut: int) -> None:
        """Apply an `email.opened`."""
        message = self._message(message_id, millis, cut)
        if message.opened:
            return

        message.opened = True
        if message.delivered is not None:
            self._counters.count(message.delivered, MESSAGES_OPENED)

    def clicked(self, message_id: str, millis: int, cut: int) -> None:
        """Apply an `email.clicked`."""
        message = self._message(message_id, millis, cut)
        if message.clicked:
            return

        message.clicked = True
        if message.delivered is not None:
            self._counters.count(message.delivered, MESSAGES_CLICKED)

    def compact(self, cut: int) -> None:
        """Drop the messages forgotten at `cut` (see the class docstring)."""
        for message_id in self._tidy.pop_before(cut):
            message = self._messages.get(message_id)
            if message is None:
                continue
            if message.seen < cut:
                del self._messages[message_id]
            else:
                self._tidy.add(message_id, message.seen)

    def _message(self, message_id: str, millis: int, cut: int) -> _Message:
        message = self._messages.get(message_id)

        # The rule is applied on lookup, not only when memory is tidied, so
        # that figures never depend on when the tidying happened to run.
        if message is not None and message.seen < cut:
            message = None
        if message is None:
            message = self._messages[message_id] = _Message(millis)
            self._tidy.add(message_id, millis)
        elif millis > message.seen:
            message.seen = millis
        return message

    def _file(self, message: _Message, delivered: int, sign: int) -> None:
        counters = self._counters
        counters.count(delivered, MESSAGES_DELIVERED, sign)
        if message.opened:
            counters.count(delivered, MESSAGES_OPENED, sign)
        if message.clicked:
            counters.count(delivered, MESSAGES_CLICKED, sign)

    def export(self) -> dict[str, Any]:
        """Return the messages as plain structures, for checkpoints."""
        return {
            "messages": {
                message_id: (m.delivered, m.opened, m.clicked, m.seen)
                for message_id, m in self._messages.items()
            },
            "tidy": self._tidy.export(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the messages with `export()` output."""
        self._messages = {}
        for message_id, (delivered, opened, clicked, seen) in data["messages"].items():
            message = _Message(seen)
            message.delivered = delivered
            message.opened = opened
            message.clicked = clicked
            self._messages[message_id] = message
        self._tidy = ExpiryQueue.restore(data["tidy"])
