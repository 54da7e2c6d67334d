"""Leads: creation times, which are still open, and when each was last contacted."""

from __future__ import annotations

from typing import Any

from sortedcontainers import SortedList

from stream.state.expiry import ExpiryQueue
from stream.windows import DAY_MS, FAR_PAST, HOUR_MS

FOLLOW_UP_AGE_MS = DAY_MS
"""An open lead counts for follow-up once strictly older than this."""

FOLLOW_UP_RECENCY_MS = 7 * DAY_MS
"""A contact this recent (inclusive) counts as follow-up."""


class _OpenLead:
    __slots__ = ("contacted", "created")

    def __init__(self, created: int, contacted: int | None) -> None:
        self.created = created
        self.contacted = contacted


class Leads:
    """Every lead's creation time, the open leads and their last contact.

    Prospect follow-up at the watermark counts the open leads created before
    X = wm - 24 h and, of those, the ones contacted at or after Y = wm - 7 d.
    Open leads are indexed by creation time and by last contact; a running
    count of the leads with created < X and contacted >= Y is kept, and when
    X and Y move only the leads whose times they pass are looked at.

    Memory, kept forever: every open lead (until closed), and the creation
    time of every closed lead, since a `deal.won` may name its lead at any
    later time and its sales cycle starts there; also the ids of leads closed
    before any creation was seen, so that a late creation does not reopen
    them. That is about 100-200 bytes per lead ever seen. A contact of a lead
    not yet created is kept only while it is within the last 7 days.
    """

    def __init__(self) -> None:
        self._open: dict[str, _OpenLead] = {}
        self._closed: dict[str, int | None] = {}
        self._waiting: dict[str, int] = {}
        self._by_created = SortedList()
        self._by_contact = SortedList()
        self._created_before = FAR_PAST
        self._contacted_since = FAR_PAST
        self._followed_up = 0
        self._tidy: ExpiryQueue[str] = ExpiryQueue(HOUR_MS)

    def __len__(self) -> int:
        return len(self._open) + len(self._closed) + len(self._waiting)

    def creation(self, lead_id: str) -> int | None:
        """Return the earliest applied `lead.created` time of a lead, if any."""
        lead = self._open.get(lead_id)
        if lead is not None:
            return lead.created
        return self._closed.get(lead_id)

    def created(self, lead_id: str, millis: int) -> int | None:
        """Apply a `lead.created`; return the lead's creation time if it changed."""
        if lead_id in self._closed:
            known = self._closed[lead_id]
            if known is not None and known <= millis:
                return None
            self._closed[lead_id] = millis
            return millis

        lead = self._open.get(lead_id)
        if lead is not None:
            if lead.created <= millis:
                return None
            self._unfile(lead_id, lead)
            lead.created = millis
            self._file(lead_id, lead)
            return millis

        contacted = self._waiting.pop(lead_id, None)
        if contacted is not None and contacted < self._contacted_since:
            contacted = None
        lead = self._open[lead_id] = _OpenLead(millis, contacted)
        self._file(lead_id, lead)
        return millis

    def contacted(self, lead_id: str, millis: int) -> None:
        """Apply a `lead.contacted`."""
        # A contact before Y can never count again: Y only moves forward.
        if millis < self._contacted_since or lead_id in self._closed:
            return

        lead = self._open.get(lead_id)
        if lead is None:
            waiting = self._waiting.get(lead_id)
            if waiting is None or waiting < millis:
                self._waiting[lead_id] = millis
                self._tidy.add(lead_id, millis)
            return

        if lead.contacted is not None and lead.contacted >= millis:
            return
        self._unfile(lead_id, lead)
        lead.contacted = millis
        self._file(lead_id, lead)

    def closed(self, lead_id: str) -> None:
        """Apply a `lead.converted`, `lead.disqualified` or `deal.lost` naming it."""
        if lead_id in self._closed:
            return

        lead = self._open.pop(lead_id, None)
        if lead is not None:
            self._unfile(lead_id, lead)
            self._closed[lead_id] = lead.created
            return
        self._waiting.pop(lead_id, None)
        self._closed[lead_id] = None

    def follow_up(self, watermark: int) -> tuple[int, int]:
        """Return the open leads older than 24 h and those contacted in 7 days."""
        self.move_to(watermark)
        older = self._by_created.bisect_left((self._created_before,))
        return older, self._followed_up

    def move_to(self, watermark: int) -> None:
        """Move X and Y to a watermark, re-counting the leads they pass."""
        created_before = watermark - FOLLOW_UP_AGE_MS
        contacted_since = watermark - FOLLOW_UP_RECENCY_MS

        if created_before > self._created_before:
            for _, lead_id in self._by_created.irange(
                (self._created_before,), (created_before,), inclusive=(True, False)
            ):
                contacted = self._open[lead_id].contacted
                if contacted is not None and contacted >= self._contacted_since:
                    self._followed_up += 1
            self._created_before = created_before

        # Contacts before Y never count again, so they are forgotten here.
        if contacted_since > self._contacted_since:
            passed = list(
                self._by_contact.irange(
                    (self._contacted_since,),
                    (contacted_since,),
                    inclusive=(True, False),
                )
            )
            for entry in passed:
                lead_id = entry[1]
                lead = self._open[lead_id]
                if lead.created < self._created_before:
                    self._followed_up -= 1
                self._by_contact.remove(entry)
                lead.contacted = None
            self._contacted_since = contacted_since

        for lead_id in self._tidy.pop_before(contacted_since):
            waiting = self._waiting.get(lead_id)
            if waiting is not None and waiting < contacted_since:
                del self._waiting[lead_id]

    def _file(self, lead_id: str, lead: _OpenLead) -> None:
        self._by_created.add((lead.created, lead_id))
        if lead.contacted is not None:
            self._by_contact.add((lead.contacted, lead_id))
        if self._counts(lead):
            self._followed_up += 1

    def _unfile(self, lead_id: str, lead: _OpenLead) -> None:
        self._by_created.remove((lead.created, lead_id))
        if lead.contacted is not None:
            self._by_contact.remove((lead.contacted, lead_id))
        if self._counts(lead):
            self._followed_up -= 1

    def _counts(self, lead: _OpenLead) -> bool:
        return (
            lead.created < self._created_before
            and lead.contacted is not None
            and lead.contacted >= self._contacted_since
        )

    def export(self) -> dict[str, Any]:
        """Return the leads as plain structures, for checkpoints."""
        return {
            "open": {
                lead_id: (lead.created, lead.contacted)
                for lead_id, lead in self._open.items()
            },
            "closed": dict(self._closed),
            "waiting": dict(self._waiting),
            "thresholds": (self._created_before, self._contacted_since),
            "followed_up": self._followed_up,
            "tidy": self._tidy.export(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the leads with `export()` output."""
        self._open = {
            lead_id: _OpenLead(created, contacted)
            for lead_id, (created, contacted) in data["open"].items()
        }
        self._closed = dict(data["closed"])
        self._waiting = dict(data["waiting"])
        self._by_created = SortedList(
            (lead.created, lead_id) for lead_id, lead in self._open.items()
        )
        self._by_contact = SortedList(
            (lead.contacted, lead_id)
            for lead_id, lead in self._open.items()
            if lead.contacted is not None
        )
        self._created_before, self._contacted_since = data["thresholds"]
        self._followed_up = data["followed_up"]
        self._tidy = ExpiryQueue.restore(data["tidy"])
