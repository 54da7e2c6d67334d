"""Leads: creation times, open leads and prospect follow-up at the watermark."""

from __future__ import annotations

from stream.state.leads import Leads

HOUR = 3_600_000
DAY = 24 * HOUR


def test_follow_up_counts_open_leads_older_than_a_day_contacted_within_a_week() -> None:
    wm = 100 * DAY
    leads = Leads()
    leads.created("old-contacted", wm - 3 * DAY)
    leads.contacted("old-contacted", wm - 7 * DAY)
    leads.created("old-silent", wm - 3 * DAY)
    leads.contacted("old-silent", wm - 7 * DAY - 1)
    leads.created("exactly-a-day", wm - DAY)
    leads.contacted("exactly-a-day", wm)
    leads.created("closed", wm - 3 * DAY)
    leads.contacted("closed", wm - DAY)
    leads.closed("closed")

    assert leads.follow_up(wm) == (2, 1)


def test_thresholds_move_with_the_watermark() -> None:
    leads = Leads()
    leads.created("a", 10 * DAY)
    leads.contacted("a", 10 * DAY + HOUR)
    assert leads.follow_up(10 * DAY + 2 * HOUR) == (0, 0)

    assert leads.follow_up(11 * DAY + 1) == (1, 1)
    assert leads.follow_up(17 * DAY + HOUR) == (1, 1)
    assert leads.follow_up(17 * DAY + HOUR + 1) == (1, 0)


def test_a_contact_before_the_creation_is_kept_for_the_lead() -> None:
    leads = Leads()
    leads.contacted("a", 10 * DAY)
    leads.created("a", 11 * DAY)

    assert leads.follow_up(12 * DAY + 1) == (1, 1)


def test_a_lead_closed_before_it_was_created_stays_closed() -> None:
    leads = Leads()
    leads.closed("a")
    leads.created("a", 10 * DAY)

    assert leads.follow_up(20 * DAY) == (0, 0)
    assert leads.creation("a") == 10 * DAY


def test_the_earliest_creation_wins_and_is_reported_when_it_changes() -> None:
    leads = Leads()

    assert leads.created("a", 10 * DAY) == 10 * DAY
    assert leads.created("a", 12 * DAY) is None
    assert leads.created("a", 9 * DAY) == 9 * DAY
    assert leads.creation("a") == 9 * DAY
    assert leads.creation("unknown") is None


def test_a_closed_lead_keeps_its_creation_time_for_later_deals() -> None:
    leads = Leads()
    leads.created("a", 10 * DAY)
    leads.closed("a")

    assert leads.creation("a") == 10 * DAY
    assert leads.created("a", 8 * DAY) == 8 * DAY


def test_contacts_of_leads_never_created_are_forgotten_after_a_week() -> None:
    leads = Leads()
    leads.contacted("ghost", 10 * DAY)
    leads.follow_up(17 * DAY)
    assert len(leads) == 1

    leads.follow_up(17 * DAY + 2 * HOUR)

    assert len(leads) == 0
