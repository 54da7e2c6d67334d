"""The KPI engine: admission, every KPI family, checkpoints and expiry."""

from __future__ import annotations

import itertools
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.events import EVENT_ADAPTER, Event
from stream.catalogue import all_keys
from stream.errors import CheckpointError
from stream.kpis import Admission, KpiEngine
from stream.settings import Settings
from tests.unit.full_scan import admit_all, scan
from tests.unit.random_streams import random_stream

_ids = itertools.count()


def event(kind: str, at: str, event_id: str | None = None, **fields: Any) -> Event:
    """Build a valid event of type `kind` at a UTC wall time `YYYY-MM-DDTHH:MM...`."""
    body = {
        "event_id": event_id or f"event-{next(_ids)}",
        "type": kind,
        "occurred_at": at if at.endswith(("Z", "+00:00")) or "+" in at else f"{at}Z",
        "schema_version": 1,
        **fields,
    }
    return EVENT_ADAPTER.validate_python(body)


def engine_with(*events: Event, **settings: Any) -> KpiEngine:
    engine = KpiEngine(Settings(**settings))
    for item in events:
        assert engine.admit(item) is Admission.APPLIED
    return engine


def order(
    at: str,
    customer: str,
    revenue: str = "10",
    cost: str = "4",
    event_id: str | None = None,
    **more: Any,
) -> Event:
    return event(
        "order.placed",
        at,
        event_id,
        order_id="o",
        customer_id=customer,
        revenue=revenue,
        cost=cost,
        currency="EUR",
        **more,
    )


def churn(at: str, customer: str, event_id: str | None = None) -> Event:
    return event("customer.churned", at, event_id, customer_id=customer)


# Admission


def test_values_are_empty_before_any_event() -> None:
    engine = KpiEngine(Settings())

    assert engine.values() == {}
    assert engine.watermark_ms is None


def test_values_have_exactly_the_catalogue_keys_in_its_order() -> None:
    engine = engine_with(
        event("newsletter.subscribed", "2024-03-10T10:00", contact_id="k")
    )

    assert list(engine.values()) == all_keys()


def test_a_repeated_id_within_the_horizon_counts_once_and_the_first_copy_wins() -> None:
    engine = engine_with(
        event("lead.created", "2024-03-10T10:00", "a", lead_id="L", channel="email")
    )

    repeat = event(
        "lead.created", "2024-03-10T10:30", "a", lead_id="L", channel="direct"
    )

    assert engine.admit(repeat) is Admission.DUPLICATE
    values = engine.values()
    assert values[("site_visits", "1h", "all")] == 0.0
    assert values[("lead_volume", "1h", None)] == 1.0
    assert engine.watermark_ms == 1710064800000


def test_a_repeated_id_after_the_horizon_is_a_new_event() -> None:
    engine = engine_with(
        event("lead.created", "2024-03-10T10:00", "a", lead_id="L", channel="email"),
        event("site.visit", "2024-03-11T10:00:00.001", visitor_id="v", channel="email"),
    )

    again = event("lead.created", "2024-03-10T10:00", "a", lead_id="L", channel="email")

    assert engine.admit(again) is Admission.APPLIED
    assert engine.values()[("lead_volume", "7d", None)] == 2.0


def test_a_claim_exactly_at_the_horizon_still_makes_a_duplicate() -> None:
    engine = engine_with(
        event("lead.created", "2024-03-10T10:00", "a", lead_id="L", channel="email"),
        event("site.visit", "2024-03-11T10:00", visitor_id="v", channel="email"),
    )

    again = event("lead.created", "2024-03-10T10:00", "a", lead_id="L", channel="email")

    assert engine.admit(again) is Admission.DUPLICATE


def test_the_duplicate_check_uses_the_watermark_before_the_event() -> None:
    engine = engine_with(
        event("lead.created", "2024-03-10T10:00", "a", lead_id="L", channel="email")
    )

    # This copy would move the watermark past the horizon, but the check is
    # made against the watermark before it.
    far = event("lead.created", "2024-03-12T10:00", "a", lead_id="L", channel="email")

    assert engine.admit(far) is Admission.DUPLICATE
    assert engine.watermark_ms == 1710064800000


def test_a_late_event_is_not_applied_and_claims_no_id() -> None:
    engine = engine_with(
        event("site.visit", "2024-04-10T12:00", visitor_id="v", channel="email")
    )

    late = event(
        "complaint.filed",
        "2024-03-11T10:59:59.999",
        "old",
        complaint_id="c",
        customer_id="C",
        category="billing",
    )
    in_time = event(
        "complaint.filed",
        "2024-03-11T11:00",
        "old",
        complaint_id="c",
        customer_id="C",
        category="billing",
    )

    assert engine.admit(late) is Admission.LATE
    assert engine.admit(in_time) is Admission.APPLIED
    assert engine.values()[("complaints", "month", "all")] == 0.0
    assert engine.values()[("complaints", "last_month", "billing")] == 1.0


def test_late_and_duplicate_events_do_not_move_the_watermark() -> None:
    engine = engine_with(
        event("site.visit", "2024-04-10T12:00", "v1", visitor_id="v", channel="email")
    )

    assert (
        engine.admit(
            event(
                "site.visit", "2024-04-11T12:00", "v1", visitor_id="v", channel="email"
            )
        )
        is Admission.DUPLICATE
    )
    assert (
        engine.admit(
            event("site.visit", "2024-01-01T00:00", visitor_id="v", channel="email")
        )
        is Admission.LATE
    )
    assert engine.watermark_ms == 1712750400000


def test_the_late_grace_is_a_setting() -> None:
    engine = engine_with(
        event("site.visit", "2024-04-10T12:00", visitor_id="v", channel="email"),
        late_grace_seconds=0,
    )

    assert (
        engine.admit(
            event(
                "site.visit", "2024-03-11T11:59:59.999", visitor_id="v", channel="email"
            )
        )
        is Admission.LATE
    )
    assert (
        engine.admit(
            event("site.visit", "2024-03-11T12:00", visitor_id="v", channel="email")
        )
        is Admission.APPLIED
    )


# KPI families, on small hand-made streams


def test_lead_and_channel_conversion() -> None:
    engine = engine_with(
        event(
            "site.visit", "2024-03-10T09:00", visitor_id="v", channel="email", count=8
        ),
        event(
            "site.visit", "2024-03-10T09:10", visitor_id="v", channel="organic", count=2
        ),
        event("lead.created", "2024-03-10T09:20", lead_id="A", channel="email"),
        event("lead.created", "2024-03-10T09:30", lead_id="B", channel="email"),
        event(
            "lead.converted",
            "2024-03-10T09:40",
            lead_id="Z",
            customer_id="C",
            channel="partner",
        ),
        event(
            "lead.converted",
            "2024-03-10T09:50",
            lead_id="Y",
            customer_id="D",
            channel="partner",
        ),
        event(
            "lead.converted",
            "2024-03-10T09:55",
            lead_id="A",
            customer_id="E",
            channel="email",
        ),
        daily_lead_target=8,
    )

    values = engine.values()

    assert values[("lead_conversion", "24h", None)] == 1.5
    assert values[("lead_volume", "day", None)] == 2.0
    assert values[("leads_converted", "day", None)] == 3.0
    assert values[("lead_volume_target", "day", None)] == 0.25
    assert values[("channel_conversion", "1h", "email")] == 0.25
    assert values[("channel_conversion", "1h", "organic")] == 0.0
    assert values[("channel_conversion", "1h", "direct")] is None
    assert values[("channel_conversion", "1h", "all")] == 0.2
    assert values[("site_visits", "1h", "all")] == 10.0
    assert values[("newsletter_signup", "1h", None)] == 0.0


def test_one_hour_window_drops_the_minute_it_has_left() -> None:
    engine = engine_with(
        event("lead.created", "2024-03-10T09:17:59.999", lead_id="A", channel="email"),
        event("lead.created", "2024-03-10T09:18", lead_id="B", channel="email"),
        event("lead.created", "2024-03-10T10:17:42", lead_id="C", channel="email"),
    )

    assert engine.values()[("lead_volume", "1h", None)] == 2.0
    assert engine.values()[("lead_volume", "24h", None)] == 3.0


def test_ad_click_through_overall_and_per_channel() -> None:
    engine = engine_with(
        event(
            "ad.impression",
            "2024-03-10T09:00",
            campaign_id="c",
            channel="paid_search",
            count=400,
        ),
        event(
            "ad.impression",
            "2024-03-10T09:01",
            campaign_id="c",
            channel="paid_social",
            count=600,
        ),
        event(
            "ad.click",
            "2024-03-10T09:02",
            campaign_id="c",
            channel="paid_search",
            count=6,
        ),
        event(
            "ad.click",
            "2024-03-10T09:03",
            campaign_id="c",
            channel="paid_social",
            count=9,
        ),
    )

    values = engine.values()

    assert values[("ad_click_through", "day", "all")] == 15 / 1000
    assert values[("ad_click_through", "day", "paid_search")] == 6 / 400
    assert values[("ad_click_through", "day", "email")] is None
    assert values[("ad_impressions", "day", "paid_social")] == 600.0


def test_email_deliverability_unsubscribe_and_newsletter() -> None:
    mail = {"contact_id": "k"}
    engine = engine_with(
        *(
            event("email.sent", "2024-03-10T09:00", message_id=f"m{n}", **mail)
            for n in range(4)
        ),
        event("email.delivered", "2024-03-10T09:01", message_id="m0", **mail),
        event("email.delivered", "2024-03-10T09:01", message_id="m1", **mail),
        event("email.delivered", "2024-03-10T09:02", message_id="m1", **mail),
        event(
            "email.bounced",
            "2024-03-10T09:02",
            message_id="m2",
            bounce_type="hard",
            **mail,
        ),
        event("email.unsubscribed", "2024-03-10T09:03", message_id="m0", **mail),
        event(
            "site.visit", "2024-03-10T09:04", visitor_id="v", channel="direct", count=40
        ),
        event("newsletter.subscribed", "2024-03-10T09:05", contact_id="k"),
    )

    values = engine.values()

    assert values[("email_deliverability", "1h", None)] == 0.75
    assert values[("emails_delivered", "1h", None)] == 3.0
    assert values[("email_unsubscribe", "1h", None)] == 1 / 3
    assert values[("messages_delivered", "1h", None)] == 2.0
    assert values[("newsletter_signup", "1h", None)] == 0.025


def test_open_and_click_rates_count_messages_by_their_first_delivery() -> None:
    mail = {"contact_id": "k"}
    engine = engine_with(
        event("email.opened", "2024-03-10T08:00", message_id="early", **mail),
        event("email.delivered", "2024-03-10T09:00", message_id="early", **mail),
        event("email.delivered", "2024-03-10T09:00", message_id="plain", **mail),
        event("email.delivered", "2024-03-10T09:00", message_id="clicked", **mail),
        event("email.clicked", "2024-03-10T09:30", message_id="clicked", **mail),
        event("email.opened", "2024-03-10T09:31", message_id="clicked", **mail),
        event("email.opened", "2024-03-10T09:32", message_id="clicked", **mail),
        # A delivery an hour before the first one moves the message out of 1h.
        event("email.delivered", "2024-03-10T10:00", message_id="moved", **mail),
        event("email.opened", "2024-03-10T10:01", message_id="moved", **mail),
        event("email.delivered", "2024-03-10T08:30", message_id="moved", **mail),
    )

    values = engine.values()

    assert values[("messages_delivered", "day", None)] == 4.0
    assert values[("email_open", "day", None)] == 0.75
    assert values[("email_click", "day", None)] == 0.25
    assert values[("messages_delivered", "1h", None)] == 0.0
    assert values[("emails_delivered", "1h", None)] == 1.0


def test_crm_roi_margin_and_acquisition_cost() -> None:
    engine = engine_with(
        order(
            "2024-03-10T09:00",
            "C1",
            revenue="300.10",
            cost="100.05",
            crm_attributed=True,
        ),
        order("2024-03-10T09:10", "C2", revenue="99.90", cost="120"),
        order("2024-03-10T09:20", "C1", revenue="50", cost="0", crm_attributed=True),
        event(
            "spend.recorded",
            "2024-03-10T09:30",
            category="crm",
            amount="100",
            currency="EUR",
        ),
        event(
            "spend.recorded",
            "2024-03-10T09:40",
            category="acquisition",
            amount="90.5",
            currency="EUR",
        ),
    )

    values = engine.values()

    assert values[("crm_attributed_revenue", "1h", None)] == 350.10
    assert values[("crm_roi", "1h", None)] == 2.501
    assert values[("revenue", "1h", None)] == 450.0
    assert values[("margin", "1h", None)] == 229.95
    assert values[("margin_rate", "1h", None)] == 0.511
    assert values[("customers_new", "1h", None)] == 2.0
    assert values[("customer_acquisition_cost", "1h", None)] == 45.25


def test_ratios_of_money_are_rounded_once_from_the_exact_fraction() -> None:
    engine = engine_with(
        order("2024-03-10T09:00", "C1", revenue="0.3", cost="0.2", crm_attributed=True),
        event(
            "spend.recorded",
            "2024-03-10T09:30",
            category="crm",
            amount="0.1",
            currency="EUR",
        ),
    )

    # (0.3 - 0.1) / 0.1 is 2 exactly, where float arithmetic gives 1.9999999999999996.
    assert engine.values()[("crm_roi", "1h", None)] == 2.0
    assert engine.values()[("margin_rate", "1h", None)] == 1 / 3


def test_crm_roi_and_cac_have_no_value_without_a_denominator() -> None:
    engine = engine_with(
        event(
            "spend.recorded",
            "2024-03-10T09:30",
            category="acquisition",
            amount="5",
            currency="EUR",
        )
    )

    values = engine.values()

    assert values[("crm_roi", "1h", None)] is None
    assert values[("customer_acquisition_cost", "1h", None)] is None
    assert values[("margin_rate", "1h", None)] is None
    assert values[("acquisition_spend", "1h", None)] == 5.0
    assert values[("margin", "1h", None)] == 0.0


def test_lost_deals_and_complaints_by_dimension() -> None:
    engine = engine_with(
        event(
            "deal.lost",
            "2024-03-10T09:00",
            deal_id="d1",
            rep_id="r",
            reason="price",
            amount="1000",
            currency="EUR",
        ),
        event(
            "deal.lost", "2024-03-10T09:01", deal_id="d2", rep_id="r", reason="Price "
        ),
        event(
            "deal.lost",
            "2024-03-10T09:02",
            deal_id="d3",
            rep_id="r",
            reason="weather",
            amount="5",
            currency="EUR",
        ),
        event(
            "complaint.filed",
            "2024-03-10T09:03",
            complaint_id="c",
            customer_id="C",
            category="billing",
        ),
        event(
            "complaint.filed",
            "2024-03-10T09:04",
            complaint_id="c",
            customer_id="C",
            category="noise",
        ),
    )

    values = engine.values()

    assert values[("lost_deals", "1h", "price")] == 2.0
    assert values[("lost_deals_value", "1h", "price")] == 1000.0
    assert values[("lost_deals", "1h", "other")] == 1.0
    assert values[("lost_deals", "1h", "all")] == 3.0
    assert values[("lost_deals_value", "1h", "all")] == 1005.0
    assert values[("lost_deals", "1h", "timing")] == 0.0
    assert values[("complaints", "1h", "other")] == 1.0
    assert values[("complaints", "1h", "all")] == 2.0


def test_quotes_count_each_version_once_with_its_first_amount() -> None:
    quote = {"rep_id": "r", "currency": "EUR"}
    engine = engine_with(
        event(
            "quote.issued",
            "2024-03-10T09:00",
            quote_id="q",
            version=1,
            amount="100",
            **quote,
        ),
        event(
            "quote.issued",
            "2024-03-10T09:05",
            quote_id="q",
            version=2,
            amount="90",
            **quote,
        ),
        event(
            "quote.issued",
            "2024-03-10T09:10",
            quote_id="q",
            version=1,
            amount="999",
            **quote,
        ),
        # Applied later but earlier in event time: the pair still keeps the
        # time and amount of its first applied event.
        event(
            "quote.issued",
            "2024-03-09T09:00",
            quote_id="q",
            version=2,
            amount="1",
            **quote,
        ),
        event("quote.issued", "2024-03-09T09:00", quote_id="p", amount="7", **quote),
    )

    values = engine.values()

    assert values[("quotes_issued", "1h", None)] == 2.0
    assert values[("quotes_issued_value", "1h", None)] == 190.0
    assert values[("quotes_issued", "7d", None)] == 3.0
    assert values[("quotes_issued_value", "7d", None)] == 197.0


def test_first_contact_resolution_on_the_semantics_page_rules() -> None:
    engine = engine_with(
        # One reply then resolved: first contact.
        event(
            "ticket.opened",
            "2024-03-10T08:00",
            ticket_id="a",
            customer_id="C",
            channel="email",
        ),
        event("ticket.replied", "2024-03-10T08:10", ticket_id="a", agent_id="x"),
        event("ticket.resolved", "2024-03-10T08:20", ticket_id="a"),
        # Two replies: not first contact.
        event("ticket.replied", "2024-03-10T08:00", ticket_id="b", agent_id="x"),
        event("ticket.replied", "2024-03-10T08:05", ticket_id="b", agent_id="x"),
        event("ticket.resolved", "2024-03-10T08:30", ticket_id="b"),
        # Resolved, reopened, resolved: the first is, the second is not.
        event("ticket.resolved", "2024-03-10T08:40", ticket_id="c"),
        event("ticket.reopened", "2024-03-10T08:50", ticket_id="c"),
        event("ticket.resolved", "2024-03-10T09:00", ticket_id="c"),
        # A reply at the same time as the resolution is not before it.
        event("ticket.replied", "2024-03-10T08:10", ticket_id="d", agent_id="x"),
        event("ticket.replied", "2024-03-10T09:10", ticket_id="d", agent_id="x"),
        event("ticket.resolved", "2024-03-10T09:10", ticket_id="d"),
    )

    values = engine.values()

    assert values[("tickets_resolved", "day", None)] == 5.0
    assert values[("first_contact_resolution", "day", None)] == 3 / 5


def test_first_contact_resolution_only_looks_inside_the_window() -> None:
    engine = engine_with(
        event("ticket.replied", "2024-03-10T07:00", ticket_id="a", agent_id="x"),
        event("ticket.replied", "2024-03-10T08:30", ticket_id="a", agent_id="x"),
        event("ticket.resolved", "2024-03-10T08:40", ticket_id="a"),
        event("site.visit", "2024-03-10T09:25", visitor_id="v", channel="email"),
    )

    values = engine.values()

    # 1h is [08:26, 09:26): one reply inside it. day holds both replies.
    assert values[("first_contact_resolution", "1h", None)] == 1.0
    assert values[("first_contact_resolution", "day", None)] == 0.0


def test_first_contact_resolution_of_last_month_ignores_what_came_after_it() -> None:
    engine = engine_with(
        event("ticket.replied", "2024-02-29T23:00", ticket_id="a", agent_id="x"),
        event("ticket.resolved", "2024-02-29T23:30", ticket_id="a"),
        # Disqualified in February, resolved in March: counts in neither
        # month's February figure, disqualifies only in March.
        event("ticket.reopened", "2024-02-29T23:40", ticket_id="a"),
        event("ticket.resolved", "2024-03-01T00:10", ticket_id="a"),
        event("ticket.replied", "2024-03-02T10:00", ticket_id="b", agent_id="x"),
    )

    values = engine.values()

    assert values[("tickets_resolved", "last_month", None)] == 1.0
    assert values[("first_contact_resolution", "last_month", None)] == 1.0
    assert values[("tickets_resolved", "month", None)] == 1.0
    assert values[("first_contact_resolution", "month", None)] == 1.0
    assert values[("first_contact_resolution", "7d", None)] == 0.5


def test_churn_retention_and_growth_of_a_window() -> None:
    engine = engine_with(
        order("2024-03-01T10:00", "A"),
        order("2024-03-01T10:00", "B"),
        order("2024-03-01T10:00", "C"),
        order("2024-03-01T10:00", "D"),
        churn("2024-03-09T10:00", "A"),
        churn("2024-03-09T11:00", "B"),
        order("2024-03-09T12:00", "B"),
        order("2024-03-09T13:00", "E"),
        churn("2024-03-09T14:00", "Z"),
        event("site.visit", "2024-03-10T09:00", visitor_id="v", channel="email"),
    )

    values = engine.values()

    # 7d is [03-03T10:00, 03-10T10:00): S = {A, B, C, D}, E = {B, C, D, E}.
    assert values[("customer_base_start", "7d", None)] == 4.0
    assert values[("customer_base_end", "7d", None)] == 4.0
    assert values[("customer_churn", "7d", None)] == 0.25
    assert values[("customer_retention", "7d", None)] == 0.75
    assert values[("portfolio_growth", "7d", None)] == 0.0
    assert values[("customers_new", "7d", None)] == 2.0
    # 30d starts before every join: S is empty, no ratio.
    assert values[("customer_churn", "30d", None)] is None
    assert values[("customers_new", "30d", None)] == 5.0
    assert values[("customer_base_end", "30d", None)] == 4.0


def test_a_churn_applied_before_the_join_it_follows() -> None:
    engine = engine_with(
        churn("2024-03-09T12:00", "A"),
        order("2024-03-09T10:00", "A"),
        order("2024-03-05T10:00", "B"),
    )

    values = engine.values()

    # In event order: A joins at 10:00 and leaves at 12:00.
    assert values[("customer_base_end", "day", None)] == 1.0
    assert values[("customers_new", "day", None)] == 1.0
    assert values[("customer_base_start", "day", None)] == 1.0
    assert values[("customer_churn", "day", None)] == 0.0
    assert values[("active_customers", "now", None)] == 1.0


def test_active_and_dormant_customers() -> None:
    engine = engine_with(
        event(
            "lead.converted",
            "2024-01-01T00:00",
            lead_id="l",
            customer_id="won-only",
            channel="email",
        ),
        order("2023-12-12T00:00:00.001", "recent"),
        order("2023-12-12T00:00", "expired"),
        order("2024-02-01T00:00", "gone"),
        churn("2024-02-02T00:00", "gone"),
        order("2024-03-10T00:00", "rejoined"),
        churn("2024-03-10T00:01", "rejoined"),
        event(
            "deal.won",
            "2024-03-10T00:02",
            deal_id="d",
            customer_id="rejoined",
            rep_id="r",
            amount="1",
            currency="EUR",
        ),
        event("site.visit", "2024-03-11T00:00", visitor_id="v", channel="email"),
    )

    values = engine.values()

    # Horizon (wm - 90 d, wm] = (2023-12-12T00:00, 2024-03-11T00:00].
    assert values[("active_customers", "now", None)] == 2.0
    assert values[("dormant_customers", "now", None)] == 2.0


def test_quota_attainment_for_month_and_last_month() -> None:
    quota = {"currency": "EUR"}
    won = {"customer_id": "C", "currency": "EUR"}
    engine = engine_with(
        event(
            "quota.set",
            "2024-02-01T00:00",
            rep_id="ann",
            period="2024-02",
            amount="100",
            **quota,
        ),
        event(
            "quota.set",
            "2024-02-02T00:00",
            rep_id="bob",
            period="2024-02",
            amount="200",
            **quota,
        ),
        event(
            "quota.set",
            "2024-02-03T00:00",
            rep_id="cid",
            period="2024-02",
            amount="0",
            **quota,
        ),
        # The latest quota.set wins, even when it arrives first.
        event(
            "quota.set",
            "2024-03-05T00:00",
            "q2",
            rep_id="ann",
            period="2024-03",
            amount="50",
            **quota,
        ),
        event(
            "quota.set",
            "2024-03-01T00:00",
            "q1",
            rep_id="ann",
            period="2024-03",
            amount="500",
            **quota,
        ),
        event(
            "deal.won",
            "2024-02-10T00:00",
            deal_id="d",
            rep_id="ann",
            amount="100",
            **won,
        ),
        event(
            "deal.won",
            "2024-02-11T00:00",
            deal_id="d",
            rep_id="bob",
            amount="50",
            **won,
        ),
        event(
            "deal.won",
            "2024-02-12T00:00",
            deal_id="d",
            rep_id="cid",
            amount="50",
            **won,
        ),
        event(
            "deal.won",
            "2024-03-02T00:00",
            deal_id="d",
            rep_id="ann",
            amount="25",
            **won,
        ),
    )

    values = engine.values()

    assert values[("reps_with_quota", "last_month", None)] == 2.0
    assert values[("quota_attainment", "last_month", None)] == 0.5
    assert values[("quota_attainment_mean", "last_month", None)] == 0.625
    assert values[("reps_with_quota", "month", None)] == 1.0
    assert values[("quota_attainment", "month", None)] == 0.0
    assert values[("quota_attainment_mean", "month", None)] == 0.5


def test_quota_months_follow_the_configured_time_zone() -> None:
    engine = engine_with(
        event(
            "quota.set",
            "2024-03-01T00:00",
            rep_id="ann",
            period="2024-03",
            amount="10",
            currency="EUR",
        ),
        # 23:30 UTC on the last day of February is March in Paris.
        event(
            "deal.won",
            "2024-02-29T23:30",
            deal_id="d",
            customer_id="C",
            rep_id="ann",
            amount="10",
            currency="EUR",
        ),
        timezone="Europe/Paris",
    )

    assert engine.values()[("quota_attainment", "month", None)] == 1.0


def test_sales_cycle_statistics() -> None:
    won = {"customer_id": "C", "rep_id": "r", "amount": "1", "currency": "EUR"}
    engine = engine_with(
        event("lead.created", "2024-03-01T00:00", lead_id="a", channel="email"),
        event("lead.created", "2024-03-02T00:00", lead_id="b", channel="email"),
        event("deal.won", "2024-03-03T00:00", deal_id="1", lead_id="a", **won),
        event(
            "deal.won",
            "2024-03-03T00:00",
            deal_id="2",
            lead_id="b",
            lead_created_at="2024-01-01T00:00:00Z",
            **won,
        ),
        event(
            "deal.won",
            "2024-03-03T00:00",
            deal_id="3",
            lead_created_at="2024-03-02T12:00:00Z",
            **won,
        ),
        event("deal.won", "2024-03-03T00:00", deal_id="4", lead_id="unknown", **won),
        event("deal.won", "2024-03-03T00:00", deal_id="5", **won),
        # An earlier creation of lead a, applied after its deal, re-times it.
        event("lead.created", "2024-02-29T00:00", lead_id="a", channel="email"),
        event("lead.created", "2024-03-02T18:00", lead_id="unknown", channel="email"),
    )

    values = engine.values()

    # Cycles: 3 d, 1 d, 12 h, 6 h; one deal with no known start.
    assert values[("deals_won", "7d", None)] == 5.0
    assert values[("deals_won_unknown_start", "7d", None)] == 1.0
    assert (
        values[("sales_cycle_mean", "7d", None)] == (259200 + 86400 + 43200 + 21600) / 4
    )
    assert values[("sales_cycle_median", "7d", None)] == (86400 + 43200) / 2
    assert values[("sales_cycle_p90", "7d", None)] == 259200.0
    assert values[("sales_cycle_mean", "last_month", None)] is None


def test_prospect_follow_up_at_the_watermark() -> None:
    engine = engine_with(
        event("lead.created", "2024-03-01T00:00", lead_id="contacted", channel="email"),
        event(
            "lead.contacted",
            "2024-03-03T00:00",
            lead_id="contacted",
            rep_id="r",
            activity="call",
        ),
        event("lead.created", "2024-03-01T00:00", lead_id="stale", channel="email"),
        event(
            "lead.contacted",
            "2024-03-02T23:59:59.999",
            lead_id="stale",
            rep_id="r",
            activity="call",
        ),
        event(
            "lead.created", "2024-03-09T00:00:00.001", lead_id="young", channel="email"
        ),
        event("lead.created", "2024-03-01T00:00", lead_id="won", channel="email"),
        event(
            "lead.contacted",
            "2024-03-05T00:00",
            lead_id="won",
            rep_id="r",
            activity="email",
        ),
        event(
            "lead.converted",
            "2024-03-06T00:00",
            lead_id="won",
            customer_id="C",
            channel="email",
        ),
        event("lead.created", "2024-03-01T00:00", lead_id="lost", channel="email"),
        event(
            "deal.lost",
            "2024-03-06T00:00",
            deal_id="d",
            rep_id="r",
            reason="price",
            lead_id="lost",
        ),
        event(
            "lead.contacted",
            "2024-03-08T00:00",
            lead_id="early",
            rep_id="r",
            activity="meeting",
        ),
        event("lead.created", "2024-03-08T12:00", lead_id="early", channel="email"),
        event("site.visit", "2024-03-10T00:00", visitor_id="v", channel="email"),
    )

    values = engine.values()

    # wm 03-10T00:00: open leads created before 03-09T00:00 are contacted,
    # stale and early; a contact counts from 03-03T00:00 on.
    assert values[("open_leads", "now", None)] == 3.0
    assert values[("prospect_follow_up", "now", None)] == 2 / 3


# Checkpoints


@pytest.mark.parametrize(
    ("seed", "zone", "count", "days"),
    [
        (1, "UTC", 1500, 75),
        (2, "Europe/Paris", 1500, 75),
        (3, "Asia/Kolkata", 1500, 75),
        (4, "UTC", 2000, 2.5),
        (5, "Europe/Paris", 1000, 100),
    ],
)
def test_random_streams_match_a_full_scan_through_checkpoints(
    seed: int, zone: str, count: int, days: float
) -> None:
    settings = Settings(timezone=zone)
    events = random_stream(seed, count, days)
    _, _, verdicts = admit_all(events, settings)
    engine = KpiEngine(settings)
    checks = {len(events) * n // 5 - 1 for n in range(1, 6)}

    for position, item in enumerate(events):
        assert engine.admit(item).value == verdicts[position]
        if position in checks:
            assert engine.values() == scan(events[: position + 1], settings)
            engine = KpiEngine.load(engine.dump(), settings)


def test_a_checkpoint_round_trips_mid_stream() -> None:
    settings = Settings(timezone="Europe/Paris")
    events = random_stream(7, 1200, 40)
    engine = KpiEngine(settings)
    for item in events[:600]:
        engine.admit(item)

    copy = KpiEngine.load(engine.dump(), settings)

    assert copy.values() == engine.values()
    assert copy.watermark_ms == engine.watermark_ms
    assert copy.tracked_entities == engine.tracked_entities
    for item in events[600:]:
        assert copy.admit(item) is engine.admit(item)
    assert copy.values() == engine.values()


def test_load_refuses_bytes_that_are_not_a_checkpoint() -> None:
    with pytest.raises(CheckpointError, match="not a KPI state"):
        KpiEngine.load(b"{}", Settings())


def test_load_refuses_another_format_version() -> None:
    data = KpiEngine(Settings()).dump()
    header = data.index(b"\n") + 1

    with pytest.raises(CheckpointError, match="format version 999"):
        KpiEngine.load(
            data[:header] + (999).to_bytes(2, "big") + data[header + 2 :], Settings()
        )


def test_load_refuses_a_damaged_checkpoint() -> None:
    data = KpiEngine(Settings()).dump()

    with pytest.raises(CheckpointError, match="cannot be read"):
        KpiEngine.load(data[:-10], Settings())


def test_load_refuses_a_checkpoint_with_missing_state() -> None:
    data = KpiEngine(Settings()).dump()
    header = data.index(b"\n") + 3
    state = pickle.loads(data[header:])
    del state["customers"]

    with pytest.raises(CheckpointError, match="damaged"):
        KpiEngine.load(data[:header] + pickle.dumps(state), Settings())


def test_load_refuses_a_checkpoint_written_in_another_time_zone() -> None:
    data = KpiEngine(Settings(timezone="UTC")).dump()

    with pytest.raises(CheckpointError, match="Europe/Paris"):
        KpiEngine.load(data, Settings(timezone="Europe/Paris"))


# Expiry


def test_state_expires_with_event_time_and_memory_stays_bounded() -> None:
    engine = KpiEngine(Settings())
    first = datetime(2024, 1, 1, tzinfo=UTC)
    for day in range(120):
        stamp = (first + timedelta(days=day)).isoformat()
        for step, item in enumerate(
            (
                event("ticket.resolved", stamp, ticket_id=f"t{day}"),
                event("email.delivered", stamp, message_id=f"m{day}", contact_id="k"),
                event(
                    "quote.issued",
                    stamp,
                    quote_id=f"q{day}",
                    rep_id="r",
                    amount="1",
                    currency="EUR",
                ),
                # Ties in event time go by event id: the order comes first.
                order(stamp, f"c{day}", event_id=f"{day:03d}-1"),
                churn(stamp, f"c{day}", event_id=f"{day:03d}-2"),
                event(
                    "deal.won",
                    stamp,
                    deal_id="d",
                    customer_id="kept",
                    rep_id="r",
                    amount="1",
                    currency="EUR",
                ),
            )
        ):
            assert engine.admit(item) is Admission.APPLIED, (day, step)
    closing = (first + timedelta(days=119, hours=2)).isoformat()
    engine.admit(event("site.visit", closing, visitor_id="v", channel="email"))

    values = engine.values()

    # wm is 2024-04-29T02:00; the cut is the last_month start, 2024-03-01,
    # day 60. Kept: tickets, messages, quotes and won deals of days 60-119
    # (4 x 60); churned customers with events since the cut (60) or an order
    # in (wm - 90 d, wm], days 30-59 (30), and the present one; one rep; the
    # ids of the last 24 h, day 119 and the visit (7).
    assert engine.tracked_entities == 4 * 60 + 60 + 30 + 1 + 1 + 7
    assert values[("customer_base_end", "1h", None)] == 1.0
    assert values[("customers_new", "last_month", None)] == 31.0
    assert values[("dormant_customers", "now", None)] == 1.0
