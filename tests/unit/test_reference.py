"""Checks of the reference KPI computation against values worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any

from schemas.events import EVENT_ADAPTER, Event
from stream.catalogue import all_keys
from stream.settings import Settings
from tests.reference import ReferenceResult, reference_kpis, window_bounds

_serial = count(1)


def ev(kind: str, at: str, event_id: str | None = None, **fields: Any) -> Event:
    """Build a valid event of a type at an RFC 3339 time."""
    return EVENT_ADAPTER.validate_python(
        {
            "event_id": event_id or f"{kind}-{next(_serial)}",
            "type": kind,
            "occurred_at": at,
            "schema_version": 1,
            **fields,
        }
    )


def ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 time, worked out with integers only."""
    delta = datetime.fromisoformat(text) - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def settings(**overrides: Any) -> Settings:
    """Settings of these tests: the defaults, spelled out, plus `overrides`."""
    base: dict[str, Any] = {
        "timezone": "UTC",
        "reporting_currency": "EUR",
        "rates": {"EUR": Decimal("1"), "USD": Decimal("0.92"), "GBP": Decimal("1.17")},
        "dedupe_horizon_seconds": 86400,
        "late_grace_seconds": 3600,
        "active_horizon_days": 90,
        "daily_lead_target": 100,
    }
    return Settings(_env_file=None, **(base | overrides))


def run(events: list[Event], **overrides: Any) -> ReferenceResult:
    """Run the reference on a log with the test settings plus `overrides`."""
    return reference_kpis(events, settings(**overrides))


def at(
    result: ReferenceResult, series: str, window: str, value: str | None = None
) -> float | None:
    """Return the value of one series key."""
    return result.values[(series, window, value)]


D = "2024-05-15T"
"""Most logs below end at the watermark 2024-05-15T12:00Z (UTC), where
1h = [11:01, 12:01), 24h = [05-14 12:05, 05-15 12:05), day = May 15,
month = May, last_month = April."""


def lead(time: str, channel: str = "organic", **fields: Any) -> Event:
    """Build a lead.created, with a fresh lead id unless one is given."""
    fields.setdefault("lead_id", f"lead-{next(_serial)}")
    return ev("lead.created", time, channel=channel, **fields)


def order(
    time: str, customer: str, revenue: str = "10", cost: str = "0", **f: Any
) -> Event:
    """Build an order.placed in EUR unless a currency is given."""
    return ev(
        "order.placed",
        time,
        order_id=f"o-{next(_serial)}",
        customer_id=customer,
        revenue=revenue,
        cost=cost,
        currency=f.pop("currency", "EUR"),
        **f,
    )


def churn(time: str, customer: str, event_id: str | None = None) -> Event:
    """Build a customer.churned."""
    return ev("customer.churned", time, event_id, customer_id=customer)


def visit(
    time: str, channel: str = "organic", n: int = 1, event_id: str | None = None
) -> Event:
    """Build a site.visit weighing `n` visits."""
    return ev("site.visit", time, event_id, visitor_id="v", channel=channel, count=n)


# Admission, keys and time


def test_no_event_gives_no_watermark_and_no_value() -> None:
    result = run([])

    assert result.values == {}
    assert result.watermark_ms is None
    assert (result.applied, result.duplicates, result.late) == (0, 0, 0)


def test_one_event_gives_every_catalogue_key() -> None:
    result = run([lead(D + "12:00:00Z")])

    assert list(result.values) == all_keys()
    assert at(result, "lead_volume", "1h") == 1.0
    assert at(result, "lead_conversion", "1h") == 0.0  # 0 converted / 1 created
    assert at(result, "lead_volume_target", "day") == 0.01  # 1 / 100
    assert at(result, "emails_sent", "30d") == 0.0  # counts always have a value
    assert at(result, "email_open", "30d") is None  # 0 messages delivered
    assert at(result, "customer_acquisition_cost", "7d") is None  # 0 new
    assert at(result, "sales_cycle_mean", "7d") is None
    assert at(result, "quota_attainment", "month") is None
    assert at(result, "reps_with_quota", "month") == 0.0
    assert at(result, "active_customers", "now") == 0.0
    assert at(result, "prospect_follow_up", "now") is None  # the lead is 0 h old
    assert at(result, "complaints", "day", "delivery") == 0.0


def test_event_time_is_floored_to_milliseconds_and_read_with_its_offset() -> None:
    result = run(
        [
            ev(
                "site.visit",
                "2024-03-10T07:34:56.789999-05:00",
                visitor_id="v",
                channel="x",
            ),
            visit("2024-03-10T12:00:00Z"),  # older: the watermark stays
        ]
    )

    # 07:34:56.789999 at -05:00 is 12:34:56.789999Z, floored to .789
    assert result.watermark_ms == ms("2024-03-10T12:34:56.789+00:00")
    assert result.applied == 2
    assert at(result, "site_visits", "1h", "other") == 1.0  # "x" maps to other


def test_window_bounds_at_a_watermark() -> None:
    wm = ms("2024-03-10T12:34:56.789+00:00")

    bounds = window_bounds(wm, settings())

    # 1h: b = 12:34 -> [12:34 - 60 min + 1 min, 12:35)
    assert bounds["1h"] == (ms("2024-03-10T11:35:00Z"), ms("2024-03-10T12:35:00Z"))
    # 24h: b = 12:30 -> [12:30 - 24 h + 5 min, 12:35)
    assert bounds["24h"] == (ms("2024-03-09T12:35:00Z"), ms("2024-03-10T12:35:00Z"))
    # 7d: b = 12:00 -> [13:00 seven days back, 13:00)
    assert bounds["7d"] == (ms("2024-03-03T13:00:00Z"), ms("2024-03-10T13:00:00Z"))
    # 30d: 2024 is a leap year, March 10 - 30 d = February 9
    assert bounds["30d"] == (ms("2024-02-09T13:00:00Z"), ms("2024-03-10T13:00:00Z"))
    assert bounds["day"] == (ms("2024-03-10T00:00:00Z"), ms("2024-03-11T00:00:00Z"))
    assert bounds["month"] == (ms("2024-03-01T00:00:00Z"), ms("2024-04-01T00:00:00Z"))
    assert bounds["last_month"] == (
        ms("2024-02-01T00:00:00Z"),
        ms("2024-03-01T00:00:00Z"),
    )


def test_calendar_bounds_are_local_midnights_across_a_dst_change() -> None:
    # New York switched to daylight time on 2024-03-10 at 02:00 EST, so that
    # day starts at 00:00 EST = 05:00Z and ends at 00:00 EDT = 04:00Z: 23 h.
    wm = ms("2024-03-10T12:00:00Z")

    bounds = window_bounds(wm, settings(timezone="America/New_York"))

    assert bounds["day"] == (ms("2024-03-10T05:00:00Z"), ms("2024-03-11T04:00:00Z"))
    assert bounds["month"] == (ms("2024-03-01T05:00:00Z"), ms("2024-04-01T04:00:00Z"))
    assert bounds["last_month"] == (
        ms("2024-02-01T05:00:00Z"),
        ms("2024-03-01T05:00:00Z"),
    )


def test_each_window_counts_the_events_inside_its_bounds() -> None:
    # Watermark 2024-03-10T12:34:56.789Z (bounds as in the test above).
    result = run(
        [
            lead("2024-02-09T12:59:59.999Z"),  # e1: before 30d; last_month
            lead("2024-02-09T13:00:00Z"),  # e2: 30d; last_month
            lead("2024-03-03T12:59:59.999Z"),  # e3: 30d; month
            lead("2024-03-03T13:00:00Z"),  # e4: 7d, 30d; month
            lead("2024-03-09T12:34:59.999Z"),  # e5: 7d, 30d; month
            lead("2024-03-09T12:35:00Z"),  # e6: 24h, 7d, 30d; month
            lead("2024-03-10T11:34:59.999Z"),  # e7: 24h, 7d, 30d; day, month
            lead("2024-03-10T11:35:00Z"),  # e8: all rolling; day, month
            lead("2024-03-10T12:34:56.789Z"),  # e9: all rolling; day, month
        ]
    )

    assert at(result, "lead_volume", "1h") == 2.0  # e8, e9
    assert at(result, "lead_volume", "24h") == 4.0  # e6..e9
    assert at(result, "lead_volume", "7d") == 6.0  # e4..e9
    assert at(result, "lead_volume", "30d") == 8.0  # e2..e9
    assert at(result, "lead_volume", "day") == 3.0  # e7, e8, e9
    assert at(result, "lead_volume", "month") == 7.0  # e3..e9
    assert at(result, "lead_volume", "last_month") == 2.0  # e1, e2


def test_calendar_windows_use_the_configured_zone() -> None:
    # America/New_York, watermark 2024-03-10T12:00Z; bounds as tested above.
    result = run(
        [
            lead("2024-02-01T04:59:59Z"),  # A: Jan 31 23:59:59 EST -> none
            lead("2024-02-01T05:00:00Z"),  # B: Feb 1 00:00 EST -> last_month
            lead("2024-03-01T04:59:59Z"),  # C: Feb 29 23:59:59 -> last_month
            lead("2024-03-01T05:00:00Z"),  # D: Mar 1 00:00 -> month
            lead("2024-03-10T04:59:59.999Z"),  # E: Mar 9 23:59:59.999 -> month
            lead("2024-03-10T05:00:00Z"),  # F: Mar 10 00:00 -> day, month
            lead("2024-03-10T12:00:00Z"),  # G: watermark -> day, month
        ],
        timezone="America/New_York",
        daily_lead_target=4,
    )

    assert at(result, "lead_volume", "day") == 2.0  # F, G
    assert at(result, "lead_volume_target", "day") == 0.5  # 2 / 4
    assert at(result, "lead_volume", "month") == 4.0  # D, E, F, G
    assert at(result, "lead_volume", "last_month") == 2.0  # B, C


def test_repeat_within_the_horizon_is_a_duplicate_and_the_first_copy_wins() -> None:
    result = run(
        [
            lead("2024-05-15T10:00:00Z", "organic", event_id="a"),
            # Claim 05-15 10:00 >= wm 10:00 - 24 h: duplicate, body ignored.
            lead("2024-05-15T11:00:00Z", "paid_search", event_id="a"),
            visit("2024-05-16T11:00:00Z", "organic", 4, event_id="b"),
            visit("2024-05-16T11:00:00Z", "paid_search", 4, event_id="c"),
            # Claim 05-15 10:00 < wm 05-16 11:00 - 24 h: forgotten, applied,
            # and the id is claimed again at 05-16 11:00.
            lead("2024-05-16T11:00:00Z", "paid_search", event_id="a"),
            # Claim 05-16 11:00 >= wm - 24 h: duplicate again.
            lead("2024-05-16T11:30:00Z", "paid_search", event_id="a"),
        ]
    )

    assert (result.applied, result.duplicates, result.late) == (4, 2, 0)
    assert result.duplicate_event_ids == ["a", "a"]
    assert result.watermark_ms == ms(
        "2024-05-16T11:00:00Z"
    )  # duplicates do not move it
    assert at(result, "lead_volume", "30d") == 2.0
    assert at(result, "channel_conversion", "30d", "organic") == 0.25  # 1 / 4
    assert at(result, "channel_conversion", "30d", "paid_search") == 0.25  # 1 / 4


def test_dedupe_horizon_bound_is_inclusive() -> None:
    result = run(
        [
            visit("2024-05-15T12:00:00Z", "organic", event_id="x"),
            visit("2024-05-15T12:01:00Z", "organic", event_id="y"),
            # Claim 12:00:00 >= 12:01:00 - 60 s: duplicate.
            visit("2024-05-15T12:01:00Z", "paid_search", event_id="x"),
            visit("2024-05-15T12:01:00.001Z", "organic", event_id="z"),
            # Claim 12:00:00 < 12:01:00.001 - 60 s: applied.
            visit("2024-05-15T12:01:00.001Z", "email", event_id="x"),
        ],
        dedupe_horizon_seconds=60,
    )

    assert (result.applied, result.duplicates) == (4, 1)
    assert at(result, "site_visits", "1h", "organic") == 3.0  # x, y, z
    assert at(result, "site_visits", "1h", "paid_search") == 0.0  # the duplicate
    assert at(result, "site_visits", "1h", "email") == 1.0  # x once forgotten


def test_late_events_are_counted_not_applied_and_claim_no_id() -> None:
    # Watermark 2024-05-15T12:00Z; late when older than wm - 30 d - 1 h,
    # that is 2024-04-15T11:00Z.
    result = run(
        [
            lead(D + "12:00:00Z", event_id="now"),
            lead("2024-04-15T11:00:00Z", event_id="edge"),  # on the bound: applied
            lead("2024-04-15T10:59:59.999Z", event_id="old"),  # 1 ms older: late
            lead(D + "11:00:00Z", event_id="old"),  # "old" was not claimed
            lead("2020-01-01T00:00:00Z", event_id="older"),  # late
        ]
    )

    assert (result.applied, result.duplicates, result.late) == (3, 0, 2)
    assert result.late_event_ids == ["old", "older"]
    assert result.watermark_ms == ms(D + "12:00:00Z")
    assert (
        at(result, "lead_volume", "30d") == 2.0
    )  # now, old@11:00; 30d starts 04-15 13:00
    assert at(result, "lead_volume", "last_month") == 1.0  # edge


def test_duplicate_check_comes_before_late_check() -> None:
    result = run(
        [
            lead("2024-04-10T00:00:00Z", event_id="o"),
            lead(D + "12:00:00Z", event_id="n"),
            # Older than wm - 30 d - 1 h, but its claim 04-10 is within the
            # 40-day horizon (>= 04-05 12:00): a duplicate, not late.
            lead("2024-04-10T00:00:00Z", event_id="o"),
            lead("2024-04-10T00:00:00Z", event_id="p"),  # late
        ],
        dedupe_horizon_seconds=40 * 86400,
    )

    assert (result.applied, result.duplicates, result.late) == (2, 1, 1)
    assert result.duplicate_event_ids == ["o"]
    assert result.late_event_ids == ["p"]


# Simple windowed figures


def test_lead_channel_ad_and_newsletter_figures() -> None:
    events = [
        lead(D + "11:30:00Z", "organic"),
        lead(D + "11:31:00Z", "organic"),
        lead(D + "11:32:00Z", "paid_search"),
        lead(D + "11:33:00Z", "email"),
        lead(D + "10:00:00Z", "organic"),  # outside 1h, inside 24h
        *(
            ev(
                "lead.converted",
                D + f"11:4{i}:00Z",
                lead_id=f"conv-{i}",
                customer_id=f"c{i}",
                channel="organic",
            )
            for i in range(5)
        ),
        visit(D + "11:10:00Z", "organic", 10),
        visit(D + "11:15:00Z", "paid_search", 30),
        visit(D + "10:00:00Z", "organic", 5),  # outside 1h
        *(
            ev("newsletter.subscribed", D + f"11:2{i}:00Z", contact_id="k")
            for i in range(3)
        ),
        ev(
            "ad.impression",
            D + "11:05:00Z",
            campaign_id="a",
            channel="paid_social",
            count=1000,
        ),
        ev(
            "ad.impression",
            D + "11:06:00Z",
            campaign_id="a",
            channel="paid_search",
            count=500,
        ),
        ev(
            "ad.click",
            D + "11:50:00Z",
            campaign_id="a",
            channel="paid_social",
            count=25,
        ),
        ev(
            "ad.click", D + "11:51:00Z", campaign_id="a", channel="paid_search", count=5
        ),
        ev("ad.click", D + "12:00:00Z", campaign_id="a", channel="organic", count=2),
    ]

    result = run(events)

    assert at(result, "lead_volume", "1h") == 4.0
    assert at(result, "leads_converted", "1h") == 5.0
    assert at(result, "lead_conversion", "1h") == 1.25  # 5 / 4, never clamped
    assert at(result, "lead_conversion", "24h") == 1.0  # 5 / 5
    assert at(result, "lead_volume_target", "day") == 0.05  # 5 / 100
    assert at(result, "lead_conversion", "last_month") is None  # 0 / 0
    assert at(result, "lead_volume", "last_month") == 0.0

    assert at(result, "site_visits", "1h", "all") == 40.0  # 10 + 30
    assert at(result, "site_visits", "1h", "organic") == 10.0
    assert at(result, "site_visits", "1h", "email") == 0.0
    assert at(result, "site_visits", "24h", "all") == 45.0  # 10 + 30 + 5
    assert at(result, "channel_conversion", "1h", "all") == 0.1  # 4 / 40
    assert at(result, "channel_conversion", "1h", "organic") == 0.2  # 2 / 10
    assert at(result, "channel_conversion", "1h", "paid_search") == 1 / 30
    assert at(result, "channel_conversion", "1h", "email") is None  # 1 / 0
    assert at(result, "channel_conversion", "24h", "organic") == 0.2  # 3 / 15
    assert at(result, "channel_conversion", "24h", "all") == 5 / 45

    assert at(result, "ad_impressions", "1h", "all") == 1500.0  # 1000 + 500
    assert at(result, "ad_impressions", "1h", "paid_social") == 1000.0
    assert at(result, "ad_impressions", "1h", "organic") == 0.0
    assert at(result, "ad_click_through", "1h", "all") == 32 / 1500  # 25 + 5 + 2
    assert at(result, "ad_click_through", "1h", "paid_social") == 0.025  # 25 / 1000
    assert at(result, "ad_click_through", "1h", "paid_search") == 0.01  # 5 / 500
    assert at(result, "ad_click_through", "1h", "organic") is None  # 2 / 0

    assert at(result, "newsletter_signups", "1h") == 3.0
    assert at(result, "newsletter_signup", "1h") == 0.075  # 3 / 40
    assert at(result, "newsletter_signup", "24h") == 3 / 45


def test_daily_target_zero_leaves_the_ratio_out() -> None:
    result = run([lead(D + "12:00:00Z")], daily_lead_target=0)

    assert at(result, "lead_volume_target", "day") is None
    assert at(result, "lead_volume", "day") == 1.0


def test_email_deliverability_unsubscribes_opens_and_clicks() -> None:
    def email(kind: str, time: str, message: str, **fields: Any) -> Event:
        return ev(kind, D + time, message_id=message, contact_id="k", **fields)

    events = [
        *(email("email.sent", "11:10:00Z", f"m{i}") for i in range(1, 6)),
        email("email.delivered", "10:50:00Z", "m0"),  # m0 delivered before 1h
        email("email.delivered", "11:20:00Z", "m0"),
        email("email.delivered", "11:20:00Z", "m1"),
        email("email.delivered", "11:25:00Z", "m1"),
        email("email.delivered", "11:30:00Z", "m2"),
        email("email.bounced", "11:30:00Z", "m3", bounce_type="hard"),
        email("email.opened", "11:40:00Z", "m1"),
        email("email.opened", "11:45:00Z", "m0"),
        email("email.clicked", "11:28:00Z", "m2"),  # before its delivery: counts
        email("email.unsubscribed", "12:00:00Z", "m1"),
    ]

    result = run(events)

    assert at(result, "emails_sent", "1h") == 5.0
    assert at(result, "emails_delivered", "1h") == 4.0  # m0, m1, m1, m2 events
    assert at(result, "email_deliverability", "1h") == 0.8  # 4 / 5
    assert at(result, "email_unsubscribe", "1h") == 0.25  # 1 / 4
    assert at(result, "messages_delivered", "1h") == 2.0  # m1, m2 (m0 first at 10:50)
    assert at(result, "email_open", "1h") == 0.5  # m1 / {m1, m2}
    assert at(result, "email_click", "1h") == 0.5  # m2 / {m1, m2}

    assert at(result, "emails_delivered", "24h") == 5.0
    assert at(result, "email_deliverability", "24h") == 1.0  # 5 / 5
    assert at(result, "email_unsubscribe", "24h") == 0.2  # 1 / 5
    assert at(result, "messages_delivered", "24h") == 3.0  # m0, m1, m2
    assert at(result, "email_open", "24h") == 2 / 3  # m0, m1
    assert at(result, "email_click", "24h") == 1 / 3  # m2
    assert at(result, "email_deliverability", "last_month") is None


def test_crm_roi_margin_and_spends_in_the_reporting_currency() -> None:
    events = [
        order(D + "11:10:00Z", "c1", "1000", "600", crm_attributed=True),
        # 100.10 USD * 0.92 = 92.092 EUR, 50 USD * 0.92 = 46 EUR
        order(
            D + "11:20:00Z", "c2", "100.10", "50", currency="USD", crm_attributed=True
        ),
        order(D + "11:30:00Z", "c3", "500", "200"),
        order(D + "10:00:00Z", "c1", "250", "300", crm_attributed=True),  # outside 1h
        ev(
            "spend.recorded",
            D + "11:40:00Z",
            category="crm",
            amount="400",
            currency="EUR",
        ),
        # 100 GBP * 1.17 = 117 EUR, outside 1h
        ev(
            "spend.recorded",
            D + "10:30:00Z",
            category="crm",
            amount="100",
            currency="GBP",
        ),
        ev(
            "spend.recorded",
            D + "12:00:00Z",
            category="acquisition",
            amount="300",
            currency="EUR",
            channel="paid_search",
        ),
    ]

    result = run(events)

    assert at(result, "crm_attributed_revenue", "1h") == 1092.092  # 1000 + 92.092
    assert at(result, "crm_spend", "1h") == 400.0
    assert at(result, "crm_roi", "1h") == 692092 / 400000  # (1092.092 - 400) / 400
    assert at(result, "revenue", "1h") == 1592.092  # 1000 + 92.092 + 500
    assert at(result, "margin", "1h") == 746.092  # 400 + 46.092 + 300
    assert at(result, "margin_rate", "1h") == 746092 / 1592092
    assert at(result, "acquisition_spend", "1h") == 300.0
    # c1 joined at 10:00, so new in 1h are c2 and c3: 300 / 2
    assert at(result, "customer_acquisition_cost", "1h") == 150.0

    assert at(result, "crm_attributed_revenue", "24h") == 1342.092  # + 250
    assert at(result, "crm_spend", "24h") == 517.0  # 400 + 117
    assert at(result, "crm_roi", "24h") == 825092 / 517000  # (1342.092 - 517) / 517
    assert at(result, "margin", "24h") == 696.092  # 746.092 - 50
    assert at(result, "margin_rate", "24h") == 696092 / 1842092
    assert at(result, "customer_acquisition_cost", "24h") == 100.0  # 300 / 3

    assert at(result, "crm_roi", "last_month") is None  # no CRM spend
    assert at(result, "margin_rate", "last_month") is None  # no revenue
    assert at(result, "margin", "last_month") == 0.0


def test_lost_deals_complaints_and_quotes() -> None:
    def lost(time: str, reason: str, **fields: Any) -> Event:
        return ev(
            "deal.lost",
            D + time,
            deal_id=f"d-{next(_serial)}",
            rep_id="r",
            reason=reason,
            **fields,
        )

    def complaint(time: str, category: str) -> Event:
        return ev(
            "complaint.filed",
            D + time,
            complaint_id=f"p-{next(_serial)}",
            customer_id="c",
            category=category,
        )

    def quote(
        time: str, quote_id: str, version: int, amount: str, currency: str = "EUR"
    ) -> Event:
        return ev(
            "quote.issued",
            D + time,
            quote_id=quote_id,
            version=version,
            rep_id="r",
            amount=amount,
            currency=currency,
        )

    events = [
        lost("11:10:00Z", "price", amount="100", currency="EUR"),
        lost("11:20:00Z", "price", amount="50", currency="USD"),  # 46 EUR
        lost("11:30:00Z", "competitor"),  # no amount: adds 0
        lost("11:40:00Z", "Weather", amount="10", currency="GBP"),  # other, 11.7 EUR
        lost("10:00:00Z", "price", amount="1000", currency="EUR"),  # outside 1h
        complaint("11:10:00Z", "product"),
        complaint("11:15:00Z", "product"),
        complaint("11:20:00Z", "billing"),
        complaint("11:30:00Z", "Shipping"),  # other
        complaint("10:00:00Z", "service"),  # outside 1h
        quote("11:10:00Z", "q1", 1, "100"),
        quote("11:15:00Z", "q1", 1, "999"),  # repeated pair: ignored
        quote("11:20:00Z", "q1", 2, "120"),
        quote("11:30:00Z", "q2", 1, "50", "GBP"),  # 58.5 EUR
        quote("10:00:00Z", "q3", 1, "80"),  # pair first seen outside 1h
        quote("11:50:00Z", "q3", 1, "70"),  # ignored
        quote("11:40:00Z", "q4", 1, "10"),
        quote("10:30:00Z", "q4", 1, "20"),  # applied later: ignored
        quote("12:00:00Z", "q5", 1, "1.5", "USD"),  # 1.38 EUR
    ]

    result = run(events)

    assert at(result, "lost_deals", "1h", "all") == 4.0
    assert at(result, "lost_deals", "1h", "price") == 2.0
    assert at(result, "lost_deals", "1h", "competitor") == 1.0
    assert at(result, "lost_deals", "1h", "other") == 1.0
    assert at(result, "lost_deals", "1h", "timing") == 0.0
    assert at(result, "lost_deals_value", "1h", "all") == 157.7  # 100 + 46 + 0 + 11.7
    assert at(result, "lost_deals_value", "1h", "price") == 146.0
    assert at(result, "lost_deals_value", "1h", "competitor") == 0.0
    assert at(result, "lost_deals_value", "1h", "other") == 11.7
    assert at(result, "lost_deals", "24h", "price") == 3.0
    assert at(result, "lost_deals_value", "24h", "all") == 1157.7

    assert at(result, "complaints", "1h", "all") == 4.0
    assert at(result, "complaints", "1h", "product") == 2.0
    assert at(result, "complaints", "1h", "billing") == 1.0
    assert at(result, "complaints", "1h", "other") == 1.0
    assert at(result, "complaints", "1h", "service") == 0.0
    assert at(result, "complaints", "24h", "all") == 5.0
    assert at(result, "complaints", "24h", "service") == 1.0

    # 1h: q1v1 100, q1v2 120, q2v1 58.5, q4v1 10 (at 11:40), q5v1 1.38
    assert at(result, "quotes_issued", "1h") == 5.0
    assert at(result, "quotes_issued_value", "1h") == 289.88
    # 24h adds q3v1 80
    assert at(result, "quotes_issued", "24h") == 6.0
    assert at(result, "quotes_issued_value", "24h") == 369.88


# The customer base


def test_customer_base_walks_each_customer_in_event_time_order() -> None:
    events = [
        order(D + "10:00:00Z", "c1"),
        order(D + "10:00:00Z", "c2"),
        churn(D + "11:30:00Z", "c2"),
        order(D + "11:30:00Z", "c3"),
        order(D + "10:00:00Z", "c4"),
        churn(D + "10:30:00Z", "c4"),
        order(D + "11:40:00Z", "c4"),  # rejoin
        churn(D + "11:10:00Z", "c5"),  # arrives before the order it follows
        order(D + "10:05:00Z", "c5"),
        churn(D + "11:20:00Z", "c6"),  # never in the base: nothing
        order(D + "10:00:00Z", "c7"),
        order(D + "11:50:00Z", "c7"),  # arrives before the churn it follows
        churn(D + "11:45:00Z", "c7"),
        order(D + "10:00:00Z", "c8"),
        # Same event time: event-id order puts the order first, then the churn
        # (arrival order would give the opposite result).
        churn(D + "11:55:00Z", "c8", event_id="c8-z-churn"),
        order(D + "11:55:00Z", "c8", event_id="c8-a-order"),
        ev(
            "spend.recorded",
            D + "11:00:00Z",
            category="acquisition",
            amount="700",
            currency="EUR",
        ),
        ev(
            "spend.recorded",
            D + "11:30:00Z",
            category="acquisition",
            amount="300",
            currency="EUR",
        ),
        visit(D + "12:00:00Z"),
    ]

    result = run(events)

    # 1h = [11:01, 12:01). S = {c1, c2, c5, c7, c8}; E = {c1, c3, c4, c7}.
    assert at(result, "customer_base_start", "1h") == 5.0
    assert at(result, "customer_base_end", "1h") == 4.0
    assert at(result, "customer_churn", "1h") == 0.6  # (5 - |{c1, c7}|) / 5
    assert at(result, "customer_retention", "1h") == 0.4  # 2 / 5
    assert at(result, "portfolio_growth", "1h") == -0.2  # (4 - 5) / 5
    assert at(result, "customers_new", "1h") == 3.0  # c3, c4 and c7 (rejoins)
    assert at(result, "customer_acquisition_cost", "1h") == 100.0  # 300 / 3

    # 24h starts 05-14 12:05: empty at start; every join is inside.
    assert at(result, "customer_base_start", "24h") == 0.0
    assert at(result, "customer_base_end", "24h") == 4.0
    assert at(result, "customer_churn", "24h") is None
    assert at(result, "customer_retention", "24h") is None
    assert at(result, "portfolio_growth", "24h") is None
    assert at(result, "customers_new", "24h") == 7.0  # c1..c5, c7, c8 (not c6)
    assert at(result, "acquisition_spend", "24h") == 1000.0
    assert at(result, "customer_acquisition_cost", "24h") == 1000 / 7

    # last_month (April): empty at both ends, nobody new.
    assert at(result, "customer_base_end", "last_month") == 0.0
    assert at(result, "customers_new", "last_month") == 0.0
    assert at(result, "customer_acquisition_cost", "last_month") is None


def test_active_and_dormant_customers_at_the_watermark() -> None:
    events = [
        order("2024-05-14T12:00:00Z", "a1"),  # exactly wm - 1 d: not recent
        order("2024-05-14T12:00:00.001Z", "a2"),
        order(D + "09:00:00Z", "a3"),
        churn(D + "10:00:00Z", "a3"),  # not in the base
        ev(
            "lead.converted",
            D + "11:00:00Z",
            lead_id="l4",
            customer_id="a4",
            channel="x",
        ),
        order(D + "10:00:00Z", "a6"),
        churn(D + "10:30:00Z", "a6"),
        ev(
            "deal.won",
            D + "11:00:00Z",
            deal_id="d6",
            customer_id="a6",
            rep_id="r",
            amount="1",
            currency="EUR",
        ),  # rejoins; its order at 10:00 is within the horizon
        order(D + "12:00:00Z", "a5"),  # at the watermark: recent
    ]

    short = run(events, active_horizon_days=1)
    default = run(events)

    # Horizon (05-14 12:00, 05-15 12:00]: active a2, a5, a6; dormant a1, a4.
    assert at(short, "active_customers", "now") == 3.0
    assert at(short, "dormant_customers", "now") == 2.0
    # 90 days: a1 is active too.
    assert at(default, "active_customers", "now") == 4.0
    assert at(default, "dormant_customers", "now") == 1.0


# First-contact resolution


def test_first_contact_resolution_counts_only_events_inside_the_window() -> None:
    def ticket(kind: str, time: str, ticket_id: str) -> Event:
        extra = {"agent_id": "a"} if kind == "ticket.replied" else {}
        if kind == "ticket.opened":
            extra = {"customer_id": "c", "channel": "email"}
        return ev(kind, D + time, ticket_id=ticket_id, **extra)

    events = [
        ticket("ticket.opened", "11:05:00Z", "t1"),
        ticket("ticket.replied", "11:10:00Z", "t1"),
        ticket("ticket.resolved", "11:20:00Z", "t1"),  # 1 reply: first contact
        ticket("ticket.replied", "11:10:00Z", "t2"),
        ticket("ticket.replied", "11:15:00Z", "t2"),
        ticket("ticket.resolved", "11:20:00Z", "t2"),  # 2 replies: no
        ticket("ticket.replied", "10:50:00Z", "t3"),  # before 1h, inside 24h
        ticket("ticket.replied", "11:10:00Z", "t3"),
        ticket("ticket.resolved", "11:20:00Z", "t3"),  # 1h: yes; 24h: no
        ticket("ticket.resolved", "11:10:00Z", "t4"),  # yes
        ticket("ticket.reopened", "11:15:00Z", "t4"),
        ticket("ticket.resolved", "11:30:00Z", "t4"),  # reopened and resolved: no
        ticket("ticket.replied", "11:19:00Z", "t5"),
        ticket("ticket.replied", "11:20:00Z", "t5"),  # not strictly before
        ticket("ticket.resolved", "11:20:00Z", "t5"),  # yes
        ticket("ticket.resolved", "10:30:00Z", "t6"),  # 24h: yes
        ticket("ticket.reopened", "10:40:00Z", "t6"),
        ticket("ticket.resolved", "11:30:00Z", "t6"),  # 1h: yes; 24h: no
        ticket("ticket.resolved", "11:11:00Z", "t8"),  # yes
        ticket("ticket.resolved", "11:41:00Z", "t8"),  # resolved before: no
        ticket("ticket.reopened", "11:12:00Z", "t9"),
        ticket("ticket.resolved", "11:42:00Z", "t9"),  # reopened before: no
        ticket("ticket.opened", "12:00:00Z", "t7"),
    ]

    result = run(events)

    # 1h: t1, t2, t3, t4 x2, t5, t6@11:30, t8 x2, t9 = 10 resolutions; yes
    # for t1, t3, t4@11:10, t5, t6@11:30 and t8@11:11.
    assert at(result, "tickets_resolved", "1h") == 10.0
    assert at(result, "first_contact_resolution", "1h") == 0.6  # 6 / 10
    # 24h adds t6@10:30 (yes); t3 and t6@11:30 turn to no: 5 of 11.
    assert at(result, "tickets_resolved", "24h") == 11.0
    assert at(result, "first_contact_resolution", "24h") == 5 / 11
    assert at(result, "first_contact_resolution", "last_month") is None


# Quota attainment


def test_quota_attainment_by_local_month_with_tie_breaks() -> None:
    # Europe/Paris (UTC+2 in April and May 2024): May is
    # [04-30 22:00Z, 05-31 22:00Z), April is [03-31 22:00Z, 04-30 22:00Z).
    def quota(time: str, rep: str, period: str, amount: str, **f: Any) -> Event:
        return ev(
            "quota.set",
            time,
            f.pop("event_id", None),
            rep_id=rep,
            period=period,
            amount=amount,
            currency=f.pop("currency", "EUR"),
        )

    def won(time: str, rep: str, amount: str) -> Event:
        return ev(
            "deal.won",
            time,
            deal_id=f"d-{next(_serial)}",
            customer_id=f"k-{rep}",
            rep_id=rep,
            amount=amount,
            currency="EUR",
        )

    events = [
        quota("2024-04-01T08:00:00Z", "r1", "2024-04", "400"),
        quota("2024-04-01T08:00:00Z", "r6", "2024-04", "1000"),
        quota("2024-04-01T08:00:00Z", "r7", "2024-04", "-5"),  # no quota
        won("2024-04-10T10:00:00Z", "r1", "100"),
        won("2024-04-12T10:00:00Z", "r7", "50"),
        quota("2024-04-25T08:00:00Z", "r1", "2024-05", "1000"),
        won("2024-04-30T21:30:00Z", "r6", "1000"),  # April 30 23:30 in Paris
        won("2024-04-30T22:30:00Z", "r6", "200"),  # May 1 00:30 in Paris
        quota("2024-05-03T10:00:00Z", "r2", "2024-05", "500"),  # latest: wins
        quota("2024-05-02T10:00:00Z", "r2", "2024-05", "2000"),
        quota("2024-05-02T09:00:00Z", "r3", "2024-05", "400", event_id="quota-r3-b"),
        quota("2024-05-02T09:00:00Z", "r3", "2024-05", "100", event_id="quota-r3-a"),
        quota("2024-05-02T09:00:00Z", "r4", "2024-05", "0"),  # no quota
        quota(
            "2024-05-02T09:00:00Z", "r5", "2024-05", "300", currency="USD"
        ),  # 276 EUR
        quota("2024-05-02T09:00:00Z", "r6", "2024-05", "200"),
        # Same event time again, the greater id arriving last this time.
        quota("2024-05-02T09:00:00Z", "r8", "2024-05", "100", event_id="quota-r8-a"),
        quota("2024-05-02T09:00:00Z", "r8", "2024-05", "50", event_id="quota-r8-b"),
        won("2024-05-05T10:00:00Z", "r1", "600"),
        won("2024-05-06T10:00:00Z", "r1", "500"),
        won("2024-05-07T10:00:00Z", "r2", "250"),
        won("2024-05-08T10:00:00Z", "r3", "400"),
        won("2024-05-09T10:00:00Z", "r4", "100"),
        won("2024-05-10T10:00:00Z", "r8", "50"),
        visit(D + "12:00:00Z"),
    ]

    result = run(events, timezone="Europe/Paris")

    # May: r1 1100/1000 = 1.1, r2 250/500 = 0.5, r3 400/400 = 1 (tie: id
    # "quota-r3-b" > "quota-r3-a"), r5 0/276 = 0, r6 200/200 = 1, r8 50/50 = 1
    # (tie: "quota-r8-b" wins); r4 has no quota.
    assert at(result, "reps_with_quota", "month") == 6.0
    assert at(result, "quota_attainment", "month") == 4 / 6  # r1, r3, r6, r8
    assert at(result, "quota_attainment_mean", "month") == 23 / 30  # 4.6 / 6
    # April: r1 100/400 = 0.25, r6 1000/1000 = 1; r7's quota is negative.
    assert at(result, "reps_with_quota", "last_month") == 2.0
    assert at(result, "quota_attainment", "last_month") == 0.5  # 1 / 2
    assert at(result, "quota_attainment_mean", "last_month") == 0.625  # 1.25 / 2


# Sales cycle


def test_sales_cycle_mean_median_p90_and_unknown_starts() -> None:
    def won(time: str, **fields: Any) -> Event:
        return ev(
            "deal.won",
            time,
            deal_id=f"d-{next(_serial)}",
            customer_id=f"k-{next(_serial)}",
            rep_id="r",
            amount="1",
            currency="EUR",
            **fields,
        )

    events = [
        lead(D + "10:30:00Z", lead_id="L1"),
        lead(D + "11:20:00Z", lead_id="L3"),
        lead(D + "09:30:00Z", lead_id="L4"),
        lead(D + "08:30:00Z", lead_id="L4"),  # earliest creation wins
        lead(D + "11:40:00Z", lead_id="L7"),
        lead("2024-05-14T19:00:00Z", lead_id="L9"),
        won(D + "11:30:00Z", lead_id="L1"),  # 3600 s
        won(D + "11:30:00Z", lead_id="L2", lead_created_at=D + "11:00:00Z"),  # 1800 s
        # A seen lead.created wins over lead_created_at: 11:30 - 11:20 = 600 s
        won(D + "11:30:00Z", lead_id="L3", lead_created_at=D + "09:00:00Z"),
        won(D + "11:30:00Z", lead_id="L4"),  # 3 h = 10800 s
        won(D + "11:30:00Z"),  # unknown start
        won(D + "11:30:00Z", lead_id="L6"),  # unknown start
        won(D + "11:35:00Z", lead_id="L7"),  # created after: -300 s
        # 11:29:59.9995 floors to 11:29:59.999: 0.001 s
        won(D + "11:30:00Z", lead_created_at=D + "11:29:59.9995Z"),
        won("2024-05-14T20:00:00Z", lead_id="L9"),  # 3600 s, 24h only
        visit(D + "12:00:00Z"),
    ]

    result = run(events)

    # 1h, ascending: -300, 0.001, 600, 1800, 3600, 10800 (n = 6)
    assert at(result, "deals_won", "1h") == 8.0
    assert at(result, "deals_won_unknown_start", "1h") == 2.0
    assert at(result, "sales_cycle_mean", "1h") == 16500001 / 6000  # 16500.001 / 6
    assert at(result, "sales_cycle_median", "1h") == 1200.0  # (600 + 1800) / 2
    assert at(result, "sales_cycle_p90", "1h") == 10800.0  # rank ceil(5.4) = 6
    # 24h adds 3600 (n = 7)
    assert at(result, "deals_won", "24h") == 9.0
    assert at(result, "sales_cycle_mean", "24h") == 20100001 / 7000  # 20100.001 / 7
    assert at(result, "sales_cycle_median", "24h") == 1800.0  # 4th of 7
    assert at(result, "sales_cycle_p90", "24h") == 10800.0  # rank ceil(6.3) = 7
    assert at(result, "sales_cycle_mean", "last_month") is None
    assert at(result, "deals_won", "last_month") == 0.0


def test_sales_cycle_p90_is_nearest_rank() -> None:
    events = [
        ev(
            "deal.won",
            D + "11:30:00Z",
            deal_id=f"d{hours}",
            customer_id="k",
            rep_id="r",
            amount="1",
            currency="EUR",
            lead_created_at=(
                datetime(2024, 5, 15, 11, 30, tzinfo=UTC) - timedelta(hours=hours)
            ).isoformat(),
        )
        for hours in range(1, 11)
    ]

    result = run(events)

    # Cycles 1 h .. 10 h: rank ceil(0.9 * 10) = 9 -> 9 h = 32400 s;
    # median (5 h + 6 h) / 2 = 19800 s; mean 55 h / 10 = 19800 s.
    assert at(result, "sales_cycle_p90", "1h") == 32400.0
    assert at(result, "sales_cycle_median", "1h") == 19800.0
    assert at(result, "sales_cycle_mean", "1h") == 19800.0


# Prospect follow-up


def test_prospect_follow_up_bounds_and_closed_leads() -> None:
    def contact(time: str, lead_id: str) -> Event:
        return ev("lead.contacted", time, lead_id=lead_id, rep_id="r", activity="call")

    events = [
        lead("2024-05-14T11:00:00Z", lead_id="L1"),
        contact("2024-05-08T12:00:00Z", "L1"),  # exactly wm - 7 d: counts
        lead("2024-05-14T11:00:00Z", lead_id="L2"),
        contact("2024-05-08T11:59:59.999Z", "L2"),  # 1 ms too early
        lead("2024-05-14T12:00:00Z", lead_id="L3"),  # exactly 24 h old: too young
        lead("2024-05-14T11:59:59.999Z", lead_id="L4"),  # old enough, no contact
        lead("2024-05-10T10:00:00Z", lead_id="L5"),
        ev(
            "lead.converted",
            "2024-05-11T10:00:00Z",
            lead_id="L5",
            customer_id="c5",
            channel="x",
        ),
        lead("2024-05-10T10:00:00Z", lead_id="L6"),
        ev("lead.disqualified", "2024-05-12T10:00:00Z", lead_id="L6"),
        lead("2024-05-10T10:00:00Z", lead_id="L7"),
        ev(
            "deal.lost",
            "2024-05-12T10:00:00Z",
            deal_id="d7",
            rep_id="r",
            reason="price",
            lead_id="L7",
        ),
        lead("2024-05-10T10:00:00Z", lead_id="L8"),
        # A won deal does not close the lead (only converted, disqualified
        # and lost do).
        ev(
            "deal.won",
            "2024-05-13T10:00:00Z",
            deal_id="d8",
            customer_id="c8",
            rep_id="r",
            amount="1",
            currency="EUR",
            lead_id="L8",
        ),
        lead(D + "10:00:00Z", lead_id="L9"),
        lead("2024-05-13T10:00:00Z", lead_id="L9"),  # earliest creation counts
        contact(D + "11:00:00Z", "L9"),
        contact(D + "09:00:00Z", "L10"),  # never created: ignored
        contact(D + "12:00:00Z", "L8"),  # at the watermark: counts
    ]

    result = run(events)

    # Open and older than 24 h: L1, L2, L4, L8, L9; contacted: L1, L8, L9.
    assert at(result, "open_leads", "now") == 5.0
    assert at(result, "prospect_follow_up", "now") == 0.6  # 3 / 5
