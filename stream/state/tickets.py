"""Support tickets: the events that decide whether a resolution was first contact."""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Any

from stream.state.counters import (
    DISQUALIFIED_ACROSS_MONTHS,
    RESOLUTIONS_DISQUALIFIED,
    TICKETS_RESOLVED,
    Counters,
)
from stream.state.expiry import ExpiryQueue
from stream.windows import HOUR_MS, Calendar


class _Ticket:
    """The recent reply, close (reopen or resolve) and resolution times of a ticket.

    `marks` holds, for each resolution, the disqualification time it is
    filed under in the counters (None when nothing disqualifies it).
    """

    __slots__ = ("closes", "marks", "replies", "resolutions")

    def __init__(self) -> None:
        self.replies: list[int] = []
        self.closes: list[int] = []
        self.resolutions: list[int] = []
        self.marks: list[int | None] = []


class Tickets:
    """First-contact resolution, kept as bucketed counts in `Counters`.

    A resolution at r is disqualified in a window starting at s when the
    ticket has, at times in `[s, r)`, a reopen or resolve or a second reply.
    That is: d < s, with d the later of the last close before r and the
    second-last reply before r. So a resolution is one point (r, d), d < r,
    counted under r in `TICKETS_RESOLVED` and under d in
    `RESOLUTIONS_DISQUALIFIED`. For any window that ends after the watermark,
    first-contact resolutions = resolved in window - disqualified in window,
    since d in the window implies r in it too. For `last_month`, which ends
    before the watermark, the points with d in it but r after it are added
    back: `DISQUALIFIED_ACROSS_MONTHS` counts, under d, the points whose r is
    in a later local month than d.

    A ticket event moves only that ticket's points. Events older than the
    cut are dropped: any d they set is before every window start, so it
    disqualifies nothing, exactly like no d at all.
    """

    def __init__(self, counters: Counters, calendar: Calendar) -> None:
        self._counters = counters
        self._calendar = calendar
        self._tickets: dict[str, _Ticket] = {}
        self._tidy: ExpiryQueue[str] = ExpiryQueue(HOUR_MS)

    def __len__(self) -> int:
        return len(self._tickets)

    def replied(self, ticket_id: str, millis: int) -> None:
        """Apply a `ticket.replied`."""
        ticket = self._ticket(ticket_id, millis)
        insort(ticket.replies, millis)
        self._refresh(ticket)

    def reopened(self, ticket_id: str, millis: int) -> None:
        """Apply a `ticket.reopened`."""
        ticket = self._ticket(ticket_id, millis)
        insort(ticket.closes, millis)
        self._refresh(ticket)

    def resolved(self, ticket_id: str, millis: int) -> None:
        """Apply a `ticket.resolved`: a resolution, and a close for later ones."""
        ticket = self._ticket(ticket_id, millis)
        insort(ticket.closes, millis)
        position = bisect_left(ticket.resolutions, millis)
        ticket.resolutions.insert(position, millis)
        ticket.marks.insert(position, None)
        self._counters.count(millis, TICKETS_RESOLVED)
        self._refresh(ticket)

    def compact(self, cut: int) -> None:
        """Drop ticket events before `cut`, which is before every window start."""
        for ticket_id in self._tidy.pop_before(cut):
            ticket = self._tickets.get(ticket_id)
            if ticket is None:
                continue

            ticket.replies = ticket.replies[bisect_left(ticket.replies, cut) :]
            ticket.closes = ticket.closes[bisect_left(ticket.closes, cut) :]
            passed = bisect_left(ticket.resolutions, cut)
            ticket.resolutions = ticket.resolutions[passed:]
            ticket.marks = ticket.marks[passed:]

            oldest = _oldest(ticket)
            if oldest is None:
                del self._tickets[ticket_id]
            else:
                self._tidy.add(ticket_id, oldest)

    def _ticket(self, ticket_id: str, millis: int) -> _Ticket:
        ticket = self._tickets.get(ticket_id)
        if ticket is None:
            ticket = self._tickets[ticket_id] = _Ticket()
            self._tidy.add(ticket_id, millis)
        else:
            oldest = _oldest(ticket)
            if oldest is None or millis < oldest:
                self._tidy.add(ticket_id, millis)
        return ticket

    def _refresh(self, ticket: _Ticket) -> None:
        for index, resolved_at in enumerate(ticket.resolutions):
            old = ticket.marks[index]
            new = self._disqualified_at(ticket, resolved_at)
            if new == old:
                continue

            if old is not None:
                self._file(old, resolved_at, -1)
            if new is not None:
                self._file(new, resolved_at, 1)
            ticket.marks[index] = new

    def _disqualified_at(self, ticket: _Ticket, resolved_at: int) -> int | None:
        closes = bisect_left(ticket.closes, resolved_at)
        replies = bisect_left(ticket.replies, resolved_at)
        close = ticket.closes[closes - 1] if closes else None
        reply = ticket.replies[replies - 2] if replies >= 2 else None
        if close is None:
            return reply
        if reply is None:
            return close
        return max(close, reply)

    def _file(self, disqualified_at: int, resolved_at: int, sign: int) -> None:
        counters = self._counters
        counters.count(disqualified_at, RESOLUTIONS_DISQUALIFIED, sign)
        month_of = self._calendar.month_of
        if month_of(disqualified_at) != month_of(resolved_at):
            counters.count(disqualified_at, DISQUALIFIED_ACROSS_MONTHS, sign)

    def export(self) -> dict[str, Any]:
        """Return the tickets as plain structures, for checkpoints."""
        return {
            "tickets": {
                ticket_id: (
                    list(t.replies),
                    list(t.closes),
                    list(t.resolutions),
                    list(t.marks),
                )
                for ticket_id, t in self._tickets.items()
            },
            "tidy": self._tidy.export(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the tickets with `export()` output."""
        self._tickets = {}
        for ticket_id, (replies, closes, resolutions, marks) in data["tickets"].items():
            ticket = _Ticket()
            ticket.replies = list(replies)
            ticket.closes = list(closes)
            ticket.resolutions = list(resolutions)
            ticket.marks = list(marks)
            self._tickets[ticket_id] = ticket
        self._tidy = ExpiryQueue.restore(data["tidy"])


def _oldest(ticket: _Ticket) -> int | None:
    firsts = [times[0] for times in (ticket.replies, ticket.closes) if times]
    return min(firsts) if firsts else None
