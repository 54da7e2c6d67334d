"""Property tests of the event models against the contract's table of events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import (
    EVENT_ADAPTER,
    EVENT_TYPES,
    AdClick,
    AdImpression,
    DealLost,
    LeadCreated,
    OrderPlaced,
    SiteVisit,
    SpendRecorded,
)
from stream.errors import InvalidEventError
from stream.ingest import decode
from stream.settings import Settings

SETTINGS = Settings(
    _env_file=None,
    rates={"EUR": Decimal("1"), "USD": Decimal("0.92"), "JPY": Decimal("0.0061")},
    reporting_currency="EUR",
    earliest_year=2000,
    latest_year=2099,
    future_tolerance_seconds=86400,
    max_record_bytes=65536,
)
NOW = datetime(2031, 1, 1, tzinfo=UTC)
"""Later than every generated event time."""

# The vocabularies and field table below are copied from the contract
# (kpi-spec section 1), not imported, so that the models are checked against it.
CHANNELS = (
    "organic",
    "paid_search",
    "paid_social",
    "social",
    "email",
    "referral",
    "direct",
    "events",
    "partner",
    "other",
)
LOST_REASONS = (
    "price",
    "competitor",
    "timing",
    "no_budget",
    "no_decision",
    "product_fit",
    "communication",
    "quality",
    "other",
)
COMPLAINT_CATEGORIES = ("product", "service", "billing", "delivery", "other")

Strategy = st.SearchStrategy[Any]

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=256)
ids = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=128)
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2030, 12, 30), timezones=offsets
).map(datetime.isoformat)
money = st.builds(
    lambda units, places: Decimal(units).scaleb(-places),
    st.integers(0, 10**17 - 1),
    st.integers(0, 8),
).filter(lambda amount: amount < Decimal("1e15"))
signed_money = st.tuples(money, st.booleans()).map(
    lambda pair: -pair[0] if pair[1] else pair[0]
)
currencies = st.sampled_from(("EUR", "USD", "JPY"))
channels = st.sampled_from(CHANNELS)
counts = st.integers(1, 1_000_000_000)
periods = st.builds("{}-{:02d}".format, st.integers(2000, 2099), st.integers(1, 12))

ENVELOPE_REQUIRED = ("event_id", "occurred_at", "schema_version")
TIMESTAMP_FIELDS = ("occurred_at", "lead_created_at")
EMAIL = ({"message_id": ids, "contact_id": ids}, {"campaign_id": ids})

CONTRACT: dict[str, tuple[dict[str, Strategy], dict[str, Strategy]]] = {
    "lead.created": ({"lead_id": ids, "channel": channels}, {"rep_id": ids}),
    "lead.contacted": (
        {
            "lead_id": ids,
            "rep_id": ids,
            "activity": st.sampled_from(("call", "meeting", "email")),
        },
        {},
    ),
    "lead.converted": ({"lead_id": ids, "customer_id": ids, "channel": channels}, {}),
    "lead.disqualified": ({"lead_id": ids}, {"reason": texts}),
    "quote.issued": (
        {"quote_id": ids, "rep_id": ids, "amount": money, "currency": currencies},
        {"version": st.integers(1, 1000), "lead_id": ids, "customer_id": ids},
    ),
    "deal.won": (
        {
            "deal_id": ids,
            "customer_id": ids,
            "rep_id": ids,
            "amount": money,
            "currency": currencies,
        },
        {"lead_id": ids, "lead_created_at": timestamps},
    ),
    "deal.lost": (
        {"deal_id": ids, "rep_id": ids, "reason": st.sampled_from(LOST_REASONS)},
        {"amount": money, "currency": currencies, "lead_id": ids},
    ),
    "quota.set": (
        {
            "rep_id": ids,
            "period": periods,
            "amount": signed_money,
            "currency": currencies,
        },
        {},
    ),
    "order.placed": (
        {
            "order_id": ids,
            "customer_id": ids,
            "revenue": money,
            "cost": money,
            "currency": currencies,
        },
        {"crm_attributed": st.booleans()},
    ),
    "customer.churned": ({"customer_id": ids}, {"reason": texts}),
    "site.visit": ({"visitor_id": ids, "channel": channels}, {"count": counts}),
    "ad.impression": ({"campaign_id": ids, "channel": channels}, {"count": counts}),
    "ad.click": ({"campaign_id": ids, "channel": channels}, {"count": counts}),
    "newsletter.subscribed": ({"contact_id": ids}, {"channel": channels}),
    "spend.recorded": (
        {
            "category": st.sampled_from(("acquisition", "crm")),
            "amount": money,
            "currency": currencies,
        },
        {"channel": channels},
    ),
    "email.sent": EMAIL,
    "email.delivered": EMAIL,
    "email.opened": EMAIL,
    "email.clicked": EMAIL,
    "email.unsubscribed": EMAIL,
    "email.bounced": (
        {**EMAIL[0], "bounce_type": st.sampled_from(("hard", "soft"))},
        EMAIL[1],
    ),
    "ticket.opened": ({"ticket_id": ids, "customer_id": ids, "channel": channels}, {}),
    "ticket.replied": ({"ticket_id": ids, "agent_id": ids}, {}),
    "ticket.reopened": ({"ticket_id": ids}, {}),
    "ticket.resolved": ({"ticket_id": ids}, {}),
    "complaint.filed": (
        {
            "complaint_id": ids,
            "customer_id": ids,
            "category": st.sampled_from(COMPLAINT_CATEGORIES),
        },
        {},
    ),
}
MONEY_TYPES = ("quote.issued", "deal.won", "deal.lost", "quota.set", "spend.recorded")
COUNTED_TYPES = ("site.visit", "ad.impression", "ad.click")


@st.composite
def events(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    """Draw a valid event of a type as a dict; money stays a Decimal."""
    required, optional = CONTRACT[event_type]
    event: dict[str, Any] = {
        "event_id": draw(ids),
        "type": event_type,
        "occurred_at": draw(timestamps),
        "schema_version": 1,
    }
    if draw(st.booleans()):
        event["source"] = draw(st.text(st.characters(codec="utf-8"), max_size=64))

    for name, strategy in required.items():
        event[name] = draw(strategy)
    for name, strategy in optional.items():
        if draw(st.booleans()):
            event[name] = draw(strategy)

    # The contract: a money field without its currency is invalid.
    if "amount" in event and "currency" not in event:
        event["currency"] = draw(currencies)
    return event


any_events = st.sampled_from(sorted(CONTRACT)).flatmap(events)


def encode(event: dict[str, Any], money_as_number: bool = True) -> bytes:
    """Return an event as JSON; Decimals become JSON numbers or strings."""

    def value(item: Any) -> str:
        if isinstance(item, Decimal):
            return str(item) if money_as_number else json.dumps(str(item))
        return json.dumps(item)

    members = (f"{json.dumps(key)}: {value(item)}" for key, item in event.items())
    return ("{" + ", ".join(members) + "}").encode()


def reason_of(raw: bytes) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as caught:
        decode(raw, SETTINGS, NOW)
    return caught.value


def expected_value(name: str, value: Any) -> Any:
    return datetime.fromisoformat(value) if name in TIMESTAMP_FIELDS else value


@given(any_events, st.booleans())
def test_valid_events_validate_with_their_values_and_round_trip(
    event: dict[str, Any], money_as_number: bool
) -> None:
    model = decode(encode(event, money_as_number), SETTINGS, NOW)

    read = {name: getattr(model, name) for name in event}
    assert read == {name: expected_value(name, value) for name, value in event.items()}
    assert EVENT_ADAPTER.validate_json(model.model_dump_json()) == model


@given(any_events, st.data())
def test_dropping_a_required_field_gives_missing_field(
    event: dict[str, Any], data: st.DataObject
) -> None:
    required = (*ENVELOPE_REQUIRED, *CONTRACT[event["type"]][0])
    name = data.draw(st.sampled_from(required))
    del event[name]

    error = reason_of(encode(event))

    assert error.reason == "missing_field"
    assert error.detail == (
        f"field {name!r} of {event['type']} is missing or null; expected a value,"
        " it is required"
    )


@given(any_events, st.data())
def test_a_null_required_field_is_a_missing_one(
    event: dict[str, Any], data: st.DataObject
) -> None:
    required = (*ENVELOPE_REQUIRED, *CONTRACT[event["type"]][0])
    name = data.draw(st.sampled_from(required))
    event[name] = None

    error = reason_of(encode(event))

    assert error.reason == "missing_field"
    assert error.detail.startswith(f"field {name!r} of {event['type']} is missing")


@given(any_events, st.data())
def test_a_null_optional_field_equals_an_absent_one(
    event: dict[str, Any], data: st.DataObject
) -> None:
    optional = ["source", *CONTRACT[event["type"]][1]]
    if event["type"] == "deal.lost":
        optional.remove("currency")
    name = data.draw(st.sampled_from(optional))
    with_null = {**event, name: None}
    absent = {key: value for key, value in event.items() if key != name}

    assert decode(encode(with_null), SETTINGS, NOW) == decode(
        encode(absent), SETTINGS, NOW
    )


@pytest.mark.parametrize(
    ("event_type", "field", "vocabulary"),
    [
        ("lead.created", "channel", CHANNELS),
        ("lead.converted", "channel", CHANNELS),
        ("site.visit", "channel", CHANNELS),
        ("ad.impression", "channel", CHANNELS),
        ("ad.click", "channel", CHANNELS),
        ("newsletter.subscribed", "channel", CHANNELS),
        ("spend.recorded", "channel", CHANNELS),
        ("ticket.opened", "channel", CHANNELS),
        ("deal.lost", "reason", LOST_REASONS),
        ("complaint.filed", "category", COMPLAINT_CATEGORIES),
    ],
)
@given(data=st.data())
def test_an_unknown_value_of_a_closed_vocabulary_maps_to_other(
    event_type: str, field: str, vocabulary: tuple[str, ...], data: st.DataObject
) -> None:
    event = data.draw(events(event_type))
    unknown = data.draw(
        st.text(st.characters(codec="utf-8")).filter(
            lambda text: text.strip().lower() not in vocabulary
        )
    )
    event[field] = unknown

    assert getattr(decode(encode(event), SETTINGS, NOW), field) == "other"


@given(event=events("lead.created"), channel=st.sampled_from(CHANNELS))
def test_a_known_channel_is_read_whatever_its_case_and_surrounding_blanks(
    event: dict[str, Any], channel: str
) -> None:
    event["channel"] = f"  {channel.upper()} "

    model = decode(encode(event), SETTINGS, NOW)

    assert isinstance(model, LeadCreated)
    assert model.channel == channel


@pytest.mark.parametrize(
    ("event_type", "field", "values"),
    [
        ("lead.contacted", "activity", ("call", "meeting", "email")),
        ("email.bounced", "bounce_type", ("hard", "soft")),
        ("spend.recorded", "category", ("acquisition", "crm")),
    ],
)
@given(data=st.data())
def test_an_unknown_activity_bounce_type_or_spend_category_is_invalid(
    event_type: str, field: str, values: tuple[str, ...], data: st.DataObject
) -> None:
    event = data.draw(events(event_type))
    event[field] = data.draw(
        st.text(st.characters(codec="utf-8")).filter(lambda text: text not in values)
    )

    error = reason_of(encode(event))

    assert error.reason == "invalid_field"
    assert error.detail.startswith(f"field {field!r} of {event_type} is invalid: ")


@given(st.sampled_from(MONEY_TYPES).flatmap(events))
def test_money_as_a_json_number_or_a_decimal_string_gives_the_same_decimal(
    event: dict[str, Any],
) -> None:
    as_number = decode(encode(event, money_as_number=True), SETTINGS, NOW)
    as_string = decode(encode(event, money_as_number=False), SETTINGS, NOW)

    amounts = (getattr(as_number, "amount"), getattr(as_string, "amount"))  # noqa: B009
    assert amounts == (event.get("amount"), event.get("amount"))


@given(events("order.placed"), st.booleans())
def test_revenue_and_cost_are_read_exactly_in_both_forms(
    event: dict[str, Any], money_as_number: bool
) -> None:
    model = decode(encode(event, money_as_number), SETTINGS, NOW)

    assert isinstance(model, OrderPlaced)
    assert (model.revenue, model.cost) == (event["revenue"], event["cost"])


def test_a_money_number_beyond_double_precision_is_read_exactly() -> None:
    raw = (
        b'{"event_id": "e1", "type": "spend.recorded", "schema_version": 1,'
        b' "occurred_at": "2024-05-01T10:00:00Z", "category": "crm",'
        b' "amount": 123456789012.123456789, "currency": "EUR"}'
    )

    model = decode(raw, SETTINGS, NOW)

    assert isinstance(model, SpendRecorded)
    assert model.amount == Decimal("123456789012.123456789")


@given(
    events("lead.created"),
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2030, 12, 30)),
)
def test_a_timestamp_without_offset_is_invalid(
    event: dict[str, Any], naive: datetime
) -> None:
    event["occurred_at"] = naive.isoformat()

    error = reason_of(encode(event))

    assert error.reason == "invalid_field"
    assert error.detail == (
        "field 'occurred_at' of lead.created is invalid: input should have timezone"
        f' info; got "{naive.isoformat()}"'
    )


@pytest.mark.parametrize("occurred_at", ["1714557600", 1714557600, "2024-05-01"])
def test_unix_time_or_a_bare_date_is_not_an_rfc_3339_timestamp(
    occurred_at: Any,
) -> None:
    event = {
        "event_id": "e1",
        "type": "ticket.resolved",
        "occurred_at": occurred_at,
        "schema_version": 1,
        "ticket_id": "t1",
    }

    error = reason_of(encode(event))

    assert error.reason == "invalid_field"
    assert error.detail == (
        "field 'occurred_at' of ticket.resolved is invalid: expected an RFC 3339"
        " timestamp string with an offset, like 2024-05-01T10:00:00Z; got"
        f" {json.dumps(occurred_at)}"
    )


@pytest.mark.parametrize("event_type", COUNTED_TYPES)
@given(data=st.data())
def test_count_is_read_on_site_visits_and_ads(
    event_type: str, data: st.DataObject
) -> None:
    event = data.draw(events(event_type))
    event["count"] = data.draw(counts)

    model = decode(encode(event), SETTINGS, NOW)

    assert isinstance(model, SiteVisit | AdImpression | AdClick)
    assert model.count == event["count"]


@given(
    st.sampled_from(sorted(set(CONTRACT) - set(COUNTED_TYPES))).flatmap(events),
    counts,
)
def test_count_is_ignored_on_every_other_type(
    event: dict[str, Any], count: int
) -> None:
    without = decode(encode(event), SETTINGS, NOW)
    event["count"] = count

    model = decode(encode(event), SETTINGS, NOW)

    assert model == without
    assert "count" not in model.model_dump()


@pytest.mark.parametrize("event_type", COUNTED_TYPES)
def test_count_defaults_to_one_and_zero_is_invalid(event_type: str) -> None:
    event = {
        "event_id": "e1",
        "type": event_type,
        "occurred_at": "2024-05-01T10:00:00Z",
        "schema_version": 1,
        "campaign_id": "c1",
        "visitor_id": "v1",
        "channel": "email",
    }

    model = decode(encode(event), SETTINGS, NOW)
    assert isinstance(model, SiteVisit | AdImpression | AdClick)
    assert model.count == 1

    error = reason_of(encode({**event, "count": 0}))
    assert (error.reason, error.detail) == (
        "invalid_field",
        f"field 'count' of {event_type} is invalid: input should be greater than"
        " or equal to 1; got 0",
    )


@given(events("deal.lost"), money)
def test_a_lost_deal_amount_without_its_currency_is_invalid(
    event: dict[str, Any], amount: Decimal
) -> None:
    event["amount"] = amount
    event.pop("currency", None)

    error = reason_of(encode(event))

    assert (error.reason, error.detail) == (
        "missing_field",
        "field 'currency' of deal.lost is missing or null; expected a value, it is"
        " required when amount is given",
    )


def test_a_lost_deal_without_amount_has_none() -> None:
    event = {
        "event_id": "e1",
        "type": "deal.lost",
        "occurred_at": "2024-05-01T10:00:00Z",
        "schema_version": 1,
        "deal_id": "d1",
        "rep_id": "r1",
        "reason": "price",
    }

    model = decode(encode(event), SETTINGS, NOW)

    assert isinstance(model, DealLost)
    assert (model.amount, model.currency) == (None, None)


def test_the_models_cover_exactly_the_event_types_of_the_contract() -> None:
    assert sorted(EVENT_TYPES) == sorted(CONTRACT)
