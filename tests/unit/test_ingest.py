"""Tests of decoding records: reasons, money conversion, bounds, dead letters."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from schemas.dead_letters import DeadLetter
from schemas.events import (
    EVENT_ADAPTER,
    DealLost,
    DealWon,
    OrderPlaced,
    QuotaSet,
    SpendRecorded,
)
from stream.errors import InvalidEventError
from stream.ingest import REASONS, dead_letter_for, decode, to_reporting
from stream.settings import Settings

RATES = {
    "EUR": Decimal("1"),
    "USD": Decimal("0.92"),
    "GBP": Decimal("1.17"),
    "JPY": Decimal("0.0061"),
}
SETTINGS = Settings(
    _env_file=None,
    rates=RATES,
    reporting_currency="EUR",
    earliest_year=2000,
    latest_year=2099,
    future_tolerance_seconds=86400,
    max_record_bytes=65536,
)
SMALL = SETTINGS.model_copy(update={"max_record_bytes": 256})
NOW = datetime(2024, 6, 1, tzinfo=UTC)
DROP = object()
"""Marks a field to leave out of a record."""

TYPES_HINT = "expected one of the 26 event types of the contract"
OBJECT = "expected a JSON object holding one CRM event"


def record(event_type: str = "lead.created", **fields: Any) -> bytes:
    """Return the bytes of a valid event of a type, with fields replaced."""
    event: dict[str, Any] = {
        "event_id": "e1",
        "type": event_type,
        "occurred_at": "2024-05-01T10:00:00Z",
        "schema_version": 1,
    }
    event.update(
        {
            "lead.created": {"lead_id": "l1", "channel": "organic"},
            "deal.won": {
                "deal_id": "d1",
                "customer_id": "c1",
                "rep_id": "r1",
                "amount": "100.50",
                "currency": "USD",
            },
        }.get(event_type, {})
    )
    event.update(fields)
    return json.dumps(
        {key: value for key, value in event.items() if value is not DROP}
    ).encode()


def rejection(raw: bytes | None, settings: Settings = SETTINGS) -> tuple[str, str]:
    with pytest.raises(InvalidEventError) as caught:
        decode(raw, settings, NOW)
    return caught.value.reason, caught.value.detail


BAD_RECORDS: list[tuple[str, bytes | None, str, str]] = [
    (
        "tombstone",
        None,
        "empty",
        f"record has no value (a tombstone); {OBJECT}",
    ),
    ("no bytes", b"", "empty", f"record has no bytes; {OBJECT}"),
    ("whitespace", b" \r\n\t", "empty", f"record holds only whitespace; {OBJECT}"),
    (
        "not utf-8",
        b"\xff\xfe{}",
        "not_json",
        "record is not JSON (expected value at line 1 column 1); expected a UTF-8"
        ' JSON object holding one CRM event, got "\\ufffd\\ufffd{}"',
    ),
    (
        "invalid utf-8 in a string",
        b'{"event_id": "\xc3\x28"}',
        "not_json",
        "record is not JSON (invalid unicode code point at line 1 column 15);"
        " expected a UTF-8 JSON object holding one CRM event, got"
        ' "{\\"event_id\\": \\"\\ufffd(\\"}"',
    ),
    (
        "cut short",
        b'{"event_id": "e1",',
        "not_json",
        "record is not JSON (EOF while parsing a value at line 1 column 18);"
        " expected a UTF-8 JSON object holding one CRM event, got"
        ' "{\\"event_id\\": \\"e1\\","',
    ),
    (
        "nested too deeply",
        b'{"a":' * 300 + b"1" + b"}" * 300,
        "too_deep",
        "record nests JSON too deeply (recursion limit exceeded at line 1 column"
        " 1006); expected a flat JSON object holding one CRM event",
    ),
    (
        "array",
        b'[{"type": "lead.created"}]',
        "not_an_object",
        f'record is a JSON array; {OBJECT}, got [{{"type": "lead.created"}}]',
    ),
    (
        "string",
        b'"lead.created"',
        "not_an_object",
        f'record is a JSON string; {OBJECT}, got "lead.created"',
    ),
    ("number", b"42", "not_an_object", f"record is a JSON number; {OBJECT}, got 42"),
    ("null", b"null", "not_an_object", f"record is a JSON null; {OBJECT}, got null"),
    (
        "boolean",
        b"true",
        "not_an_object",
        f"record is a JSON boolean; {OBJECT}, got true",
    ),
    (
        "no type",
        record(type=DROP),
        "missing_type",
        f"field 'type' is missing or null; {TYPES_HINT}, such as 'lead.created'",
    ),
    (
        "null type",
        record(type=None),
        "missing_type",
        f"field 'type' is missing or null; {TYPES_HINT}, such as 'lead.created'",
    ),
    (
        "misspelt type",
        record("lead.create"),
        "unknown_type",
        f"field 'type' is \"lead.create\"; {TYPES_HINT} (did you mean 'lead.created'?)",
    ),
    (
        "type of another kind",
        record(type=42),
        "unknown_type",
        f"field 'type' is 42; {TYPES_HINT}",
    ),
    (
        "no lead_id",
        record(lead_id=DROP),
        "missing_field",
        "field 'lead_id' of lead.created is missing or null; expected a value, it"
        " is required",
    ),
    (
        "null occurred_at",
        record(occurred_at=None),
        "missing_field",
        "field 'occurred_at' of lead.created is missing or null; expected a value,"
        " it is required",
    ),
    (
        "empty id",
        record(event_id=""),
        "invalid_field",
        "field 'event_id' of lead.created is invalid: string should have at least 1"
        ' character; got ""',
    ),
    (
        "long id, the value cut",
        record(event_id="x" * 200),
        "invalid_field",
        "field 'event_id' of lead.created is invalid: string should have at most"
        ' 128 characters; got "' + "x" * 56 + "...",
    ),
    (
        "amount with a comma",
        record("deal.won", amount="12,50"),
        "invalid_field",
        "field 'amount' of deal.won is invalid: input should be a valid decimal;"
        ' got "12,50"',
    ),
    (
        "negative amount",
        record("deal.won", amount=-5),
        "invalid_field",
        "field 'amount' of deal.won is invalid: input should be greater than or"
        " equal to 0; got -5",
    ),
    (
        "currency in lower case",
        record("deal.won", currency="usd"),
        "invalid_field",
        "field 'currency' of deal.won is invalid: string should match pattern"
        " '^[A-Z]{3}$'; got \"usd\"",
    ),
    (
        "channel of another kind",
        record(channel=7),
        "invalid_field",
        "field 'channel' of lead.created is invalid: input should be 'organic',"
        " 'paid_search', 'paid_social', 'social', 'email', 'referral', 'direct',"
        " 'events', 'partner' or 'other'; got 7",
    ),
    (
        "the first field in the model's order decides",
        record(event_id="", lead_id=DROP),
        "invalid_field",
        "field 'event_id' of lead.created is invalid: string should have at least 1"
        ' character; got ""',
    ),
    (
        "schema version 2",
        record(schema_version=2),
        "unsupported_schema_version",
        "field 'schema_version' of lead.created is 2; expected 1, the only version"
        " of the contract this worker reads",
    ),
    (
        "the schema version wins over other faults",
        record(event_id="", lead_id=DROP, schema_version="2.0"),
        "unsupported_schema_version",
        "field 'schema_version' of lead.created is \"2.0\"; expected 1, the only"
        " version of the contract this worker reads",
    ),
    (
        "currency without a rate",
        record("deal.won", currency="XYZ"),
        "unknown_currency",
        "field 'currency' of deal.won is \"XYZ\"; expected a currency of the rate"
        " table (EUR, GBP, JPY, USD); add its rate to CRM_RATES or convert at the"
        " source",
    ),
    (
        "event time before 2000",
        record(occurred_at="1970-01-01T00:00:00Z"),
        "absurd_timestamp",
        "field 'occurred_at' of lead.created is 1970-01-01T00:00:00+00:00; expected"
        " 2000-01-01T00:00:00+00:00 or later (earliest_year)",
    ),
    (
        "lead start after the wall clock",
        record("deal.won", lead_created_at="2025-01-01T00:00:00+02:00"),
        "absurd_timestamp",
        "field 'lead_created_at' of deal.won is 2025-01-01T00:00:00+02:00; expected"
        " 2024-06-02T00:00:00+00:00 or earlier, future_tolerance_seconds past the"
        " wall clock; check the producer's clock",
    ),
    (
        "larger than the limit",
        record(lead_id="l" * 70000),
        "too_large",
        "record is 70139 bytes, more than the 65536 allowed (max_record_bytes); send"
        " smaller events or raise CRM_MAX_RECORD_BYTES",
    ),
]


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_RECORDS],
)
def test_each_class_of_bad_record_gives_its_reason_and_detail(
    raw: bytes | None, reason: str, detail: str
) -> None:
    assert rejection(raw) == (reason, detail)


def test_the_bad_records_cover_every_reason() -> None:
    assert sorted({case[2] for case in BAD_RECORDS}) == sorted(REASONS)


def test_a_valid_record_decodes_to_its_event() -> None:
    event = decode(record("deal.won", lead_id="l9"), SETTINGS, NOW)

    assert event == DealWon(
        event_id="e1",
        type="deal.won",
        occurred_at=datetime(2024, 5, 1, 10, tzinfo=UTC),
        schema_version=1,
        deal_id="d1",
        customer_id="c1",
        rep_id="r1",
        amount=Decimal("100.50"),
        currency="USD",
        lead_id="l9",
    )


def padded_to(size: int) -> bytes:
    """Return a valid record of exactly `size` bytes."""
    short = record(note="")
    return record(note="n" * (size - len(short)))


def test_a_record_of_exactly_the_size_limit_is_read() -> None:
    raw = padded_to(256)

    assert len(raw) == 256
    assert decode(raw, SMALL, NOW).event_id == "e1"


def test_a_record_one_byte_over_the_size_limit_is_too_large() -> None:
    assert rejection(padded_to(257), SMALL) == (
        "too_large",
        "record is 257 bytes, more than the 256 allowed (max_record_bytes); send"
        " smaller events or raise CRM_MAX_RECORD_BYTES",
    )


def test_the_size_limit_is_checked_before_parsing() -> None:
    assert rejection(b"\xff" * 257, SMALL)[0] == "too_large"


@pytest.mark.parametrize(
    ("occurred_at", "now", "valid"),
    [
        ("2000-01-01T00:00:00Z", NOW, True),
        ("1999-12-31T23:59:59.999Z", NOW, False),
        ("2000-01-01T01:00:00+01:00", NOW, True),
        ("2000-01-01T00:59:59.999+01:00", NOW, False),
        ("1999-12-31T19:00:00-05:00", NOW, True),
        ("2099-12-31T23:59:59.999999Z", datetime(2100, 6, 1, tzinfo=UTC), True),
        ("2100-01-01T00:00:00Z", datetime(2100, 6, 1, tzinfo=UTC), False),
        ("2024-06-02T00:00:00Z", NOW, True),
        ("2024-06-02T00:00:00.001Z", NOW, False),
        ("2024-06-02T02:00:00+02:00", NOW, True),
        ("2024-06-02T02:00:00.001+02:00", NOW, False),
    ],
)
def test_event_times_at_the_bounds(
    occurred_at: str, now: datetime, valid: bool
) -> None:
    raw = record(occurred_at=occurred_at)

    try:
        decode(raw, SETTINGS, now)
    except InvalidEventError as error:
        assert (valid, error.reason) == (False, "absurd_timestamp")
    else:
        assert valid


def test_the_lead_start_of_a_won_deal_is_bounded_too() -> None:
    raw = record("deal.won", lead_created_at="1999-12-31T23:59:59Z")

    assert rejection(raw) == (
        "absurd_timestamp",
        "field 'lead_created_at' of deal.won is 1999-12-31T23:59:59+00:00; expected"
        " 2000-01-01T00:00:00+00:00 or later (earliest_year)",
    )


def test_the_year_bounds_follow_the_settings() -> None:
    narrow = SETTINGS.model_copy(update={"earliest_year": 2020, "latest_year": 2023})

    assert rejection(record(occurred_at="2024-01-01T00:00:00Z"), narrow) == (
        "absurd_timestamp",
        "field 'occurred_at' of lead.created is 2024-01-01T00:00:00+00:00; expected"
        " 2023-12-31T23:59:59.999999+00:00 or earlier (latest_year)",
    )
    assert decode(record(occurred_at="2020-01-01T00:00:00Z"), narrow, NOW)


def reported(raw: bytes) -> Any:
    return to_reporting(decode(raw, SETTINGS, NOW), SETTINGS)


def test_money_converts_to_the_reporting_currency_exactly() -> None:
    event = reported(record("deal.won", amount="100.50", currency="USD"))

    assert isinstance(event, DealWon)
    assert (event.amount, event.currency) == (Decimal("92.46"), "EUR")


def test_revenue_and_cost_both_convert() -> None:
    raw = record(
        "order.placed",
        order_id="o1",
        customer_id="c1",
        revenue="1000.10",
        cost="333.33",
        currency="GBP",
    )

    event = reported(raw)

    assert isinstance(event, OrderPlaced)
    assert (event.revenue, event.cost, event.currency) == (
        Decimal("1170.117"),
        Decimal("389.9961"),
        "EUR",
    )


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("123456789", "JPY", "753086.4129"),
        ("123456789012.123456789", "USD", "113580245891.15358024588"),
        (
            "999999999999999.999999999999999999",
            "USD",
            "919999999999999.99999999999999999908",
        ),
    ],
)
def test_conversion_keeps_every_digit(
    amount: str, currency: str, expected: str
) -> None:
    raw = record("spend.recorded", category="crm", amount=amount, currency=currency)

    event = reported(raw)

    assert isinstance(event, SpendRecorded)
    assert event.amount == Decimal(expected)
    assert EVENT_ADAPTER.validate_json(event.model_dump_json()) == event


def test_an_amount_beyond_the_bounds_once_converted_is_refused() -> None:
    raw = record(
        "spend.recorded", category="crm", amount="900000000000000", currency="GBP"
    )
    event = decode(raw, SETTINGS, NOW)

    with pytest.raises(InvalidEventError) as caught:
        to_reporting(event, SETTINGS)

    assert (caught.value.reason, caught.value.detail) == (
        "invalid_field",
        "field 'amount' of spend.recorded is \"1053000000000000.00\" once converted"
        " to EUR, which is invalid: input should be less than 1E+15; check the"
        " amount and the rate of GBP",
    )


def test_a_negative_quota_converts_too() -> None:
    raw = record(
        "quota.set", rep_id="r1", period="2024-05", amount="-100", currency="USD"
    )

    event = reported(raw)

    assert isinstance(event, QuotaSet)
    assert (event.amount, event.currency) == (Decimal("-92.00"), "EUR")


def test_a_lost_deal_without_amount_only_changes_currency() -> None:
    raw = record("deal.lost", deal_id="d1", rep_id="r1", reason="price", currency="USD")

    event = reported(raw)

    assert isinstance(event, DealLost)
    assert (event.amount, event.currency) == (None, "EUR")


def test_events_without_money_or_in_the_reporting_currency_are_kept() -> None:
    lead = decode(record(), SETTINGS, NOW)
    won = decode(record("deal.won", currency="EUR"), SETTINGS, NOW)

    assert to_reporting(lead, SETTINGS) is lead
    assert to_reporting(won, SETTINGS) is won


def test_converting_a_currency_without_a_rate_is_refused() -> None:
    event = decode(record("deal.won", currency="GBP"), SETTINGS, NOW)
    without_gbp = SETTINGS.model_copy(update={"rates": {"EUR": Decimal("1")}})

    with pytest.raises(InvalidEventError) as caught:
        to_reporting(event, without_gbp)

    assert caught.value.reason == "unknown_currency"


UNKNOWN_CURRENCY = (
    b'{"event_id": "e-17", "type": "deal.won", "occurred_at": "2024-05-01T10:00:00Z",'
    b' "schema_version": 1, "deal_id": "d1", "customer_id": "c1", "rep_id": "r1",'
    b' "amount": "250.00", "currency": "XYZ"}'
)


def test_the_dead_letter_of_a_bad_record() -> None:
    with pytest.raises(InvalidEventError) as caught:
        decode(UNKNOWN_CURRENCY, SETTINGS, NOW)

    letter = dead_letter_for(
        UNKNOWN_CURRENCY,
        caught.value,
        "crm-events",
        3,
        1042,
        1714557600123,
        datetime(2024, 6, 1, 12, 30, tzinfo=UTC),
        SETTINGS,
    )

    assert letter == DeadLetter(
        reason="unknown_currency",
        detail="field 'currency' of deal.won is \"XYZ\"; expected a currency of the"
        " rate table (EUR, GBP, JPY, USD); add its rate to CRM_RATES or convert at"
        " the source",
        topic="crm-events",
        partition=3,
        offset=1042,
        timestamp_ms=1714557600123,
        event_id="e-17",
        type="deal.won",
        payload_base64=(
            "eyJldmVudF9pZCI6ICJlLTE3IiwgInR5cGUiOiAiZGVhbC53b24iLCAib2NjdXJyZWRfYX"
            "QiOiAiMjAyNC0wNS0wMVQxMDowMDowMFoiLCAic2NoZW1hX3ZlcnNpb24iOiAxLCAiZGVh"
            "bF9pZCI6ICJkMSIsICJjdXN0b21lcl9pZCI6ICJjMSIsICJyZXBfaWQiOiAicjEiLCAiYW"
            "1vdW50IjogIjI1MC4wMCIsICJjdXJyZW5jeSI6ICJYWVoifQ=="
        ),
        payload_size=193,
        payload_truncated=False,
        payload_preview=UNKNOWN_CURRENCY.decode(),
        rejected_at=datetime(2024, 6, 1, 12, 30, tzinfo=UTC),
    )


def test_a_dead_letter_travels_as_json_with_the_bytes_in_base64() -> None:
    error = InvalidEventError("not_json", "record is not JSON")
    letter = dead_letter_for(b"\x00\xffhi", error, "t", 0, 7, None, NOW, SETTINGS)

    sent = json.loads(letter.model_dump_json())

    assert sent == {
        "reason": "not_json",
        "detail": "record is not JSON",
        "topic": "t",
        "partition": 0,
        "offset": 7,
        "timestamp_ms": None,
        "event_id": None,
        "type": None,
        "payload_base64": "AP9oaQ==",
        "payload_size": 4,
        "payload_truncated": False,
        "payload_preview": "\ufffd\ufffdhi",
        "rejected_at": "2024-06-01T00:00:00Z",
    }
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


def test_a_dead_letter_keeps_at_most_the_size_limit_of_the_record() -> None:
    raw = record(lead_id="l" * 300)
    error = InvalidEventError("too_large", "record is 439 bytes")

    letter = dead_letter_for(raw, error, "crm-events", 0, 1, 2, NOW, SMALL)

    assert len(raw) == 439
    assert (letter.payload_size, letter.payload_truncated) == (439, True)
    assert base64.b64decode(letter.payload_base64) == raw[:256]
    assert (letter.event_id, letter.type) == ("e1", "lead.created")
    assert letter.payload_preview == raw[:200].decode() + "..."


def test_a_dead_letter_preview_shows_no_control_characters() -> None:
    error = InvalidEventError("not_json", "x")

    letter = dead_letter_for(b"\x1b[31m{\n\x00", error, "t", 0, 0, 0, NOW, SETTINGS)

    assert letter.payload_preview == "\ufffd[31m{ \ufffd"


def test_a_dead_letter_of_a_tombstone_is_empty() -> None:
    error = InvalidEventError("empty", "record has no value")

    letter = dead_letter_for(None, error, "t", 0, 0, 0, NOW, SETTINGS)

    assert (letter.payload_base64, letter.payload_size, letter.payload_preview) == (
        "",
        0,
        "",
    )


def test_a_dead_letter_names_event_id_and_type_only_when_they_are_text() -> None:
    raw = record(event_id=12, type=["lead.created"])
    error = InvalidEventError("unknown_type", "x")

    letter = dead_letter_for(raw, error, "t", 0, 0, 0, NOW, SETTINGS)

    assert (letter.event_id, letter.type) == (None, None)
