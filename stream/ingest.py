"""Decoding of one event record: bytes in, a valid event or a dead letter out.

Nothing here touches Kafka; the agent in stream.app calls these per record.

Reason codes of `InvalidEventError`, one per class of bad input; the record:

- `empty`: has no value (a tombstone), no bytes, or only whitespace;
- `too_large`: is longer than `max_record_bytes` (checked before parsing);
- `not_json`: is not UTF-8 JSON;
- `too_deep`: nests JSON deeper than the parser's recursion limit;
- `not_an_object`: is JSON, but not an object;
- `missing_type`: has no `type`, or a null one;
- `unknown_type`: has a `type` that is not an event type of the contract;
- `missing_field`: lacks a required field, or has it null;
- `invalid_field`: has a field of the wrong type, format, range or vocabulary;
- `unsupported_schema_version`: has a `schema_version` other than 1;
- `unknown_currency`: has a `currency` missing from the rate table;
- `absurd_timestamp`: has an event time outside the configured years, or too
  far past the wall clock.
"""

from __future__ import annotations

import base64
import difflib
import json
from datetime import MAXYEAR, MINYEAR, UTC, datetime, timedelta
from decimal import Context, Decimal
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, from_json

from schemas.dead_letters import DeadLetter
from schemas.events import (
    EVENT_ADAPTER,
    EVENT_TYPES,
    MONEY_FIELDS,
    DealWon,
    Event,
    SignedMoney,
)
from stream.errors import InvalidEventError
from stream.settings import Settings, get_settings

REASONS: tuple[str, ...] = (
    "empty",
    "too_large",
    "not_json",
    "too_deep",
    "not_an_object",
    "missing_type",
    "unknown_type",
    "missing_field",
    "invalid_field",
    "unsupported_schema_version",
    "unknown_currency",
    "absurd_timestamp",
)
"""Every reason code `decode` can give, for pre-creating metric labels."""

# Conversion keeps the sign (rates are positive), so the bounds that can break
# are the magnitude and the number of digits, which both kinds of money share.
_CONVERTED_MONEY: TypeAdapter[Decimal] = TypeAdapter(SignedMoney)

VALUE_CHARS = 60
"""Longest rendering of a found value quoted in a detail."""

PREVIEW_CHARS = 200
"""Longest text preview of a record in its dead letter."""


def _shape(byte: int) -> int:
    char = chr(byte)
    if char in "0123456789.":
        return ord("0")
    if char in "eE":
        return ord("e")
    if char in "+-":
        return ord("s")
    return ord(" ")


# A JSON number whose mantissa has 16 or more significant digits, or whose
# exponent has three digits, may not survive pydantic's JSON parser, which
# reads it as a double. Once digits and the decimal point read "0", exponent
# letters "e", signs "s" and any other byte " ", such a number shows one of
# `_LONG_NUMBER_MARKS`; so may a string, which only costs a second, exact
# parse. The translation is several times faster than a regular expression.
_NUMBER_SHAPE = bytes(_shape(byte) for byte in range(256))
_LONG_NUMBER_MARKS = (b"0" * 16, b"e000", b"es000")


def decode(raw: bytes | None, settings: Settings, now: datetime) -> Event:
    """Validate one record's bytes as a CRM event.

    When a record has several faults, the first class below that applies
    decides the reason: emptiness and size (before any parsing); then what
    the JSON parser and the `type` tag report (`not_json`, `too_deep`,
    `not_an_object`, `missing_type`, `unknown_type`); then the fields, where
    an unsupported `schema_version` wins and otherwise the first error in
    pydantic's order (envelope fields, then the type's own fields, in the
    order the model declares them) decides between `missing_field` and
    `invalid_field`; then `unknown_currency`; then `absurd_timestamp`
    (`occurred_at` before `lead_created_at`).

    Args:
        raw: the record value; None for a tombstone.
        settings: the rate table, the size limit and the bounds of event time.
        now: the wall-clock time, timezone-aware; event times more than
            `future_tolerance_seconds` after it are absurd.

    Raises:
        InvalidEventError: with one of `REASONS` and a detail naming the
            field, what was expected and the value found.
    """
    if raw is None:
        raise InvalidEventError(
            "empty",
            "record has no value (a tombstone); expected a JSON object holding"
            " one CRM event",
        )

    if len(raw) > settings.max_record_bytes:
        raise InvalidEventError(
            "too_large",
            f"record is {len(raw)} bytes, more than the {settings.max_record_bytes}"
            " allowed (max_record_bytes); send smaller events or raise"
            " CRM_MAX_RECORD_BYTES",
        )

    try:
        event = EVENT_ADAPTER.validate_json(raw)
    except ValidationError as error:
        # Rounding to a double may also be what failed the record, as when
        # 999999999999999.99 reads as 1e15, the first amount out of range.
        exact = _exact_money(raw) if _may_hold_long_numbers(raw, error) else None
        if exact is None:
            raise _rejection(raw, error) from error
        event = _validate(raw, exact)
    else:
        if event.type in MONEY_FIELDS and _may_hold_long_numbers(raw, None):
            exact = _exact_money(raw)
            if exact is not None:
                event = _validate(raw, exact)

    if event.type in MONEY_FIELDS:
        _check_currency(event, settings)

    _check_times(event, settings, now)
    return event


def to_reporting(event: Event, settings: Settings) -> Event:
    """Return the event with its money in the reporting currency.

    Every money field becomes `amount * rate` with all its digits (no
    rounding) and `currency` the reporting currency. An event without money,
    or already in the reporting currency, is returned as it is.

    Raises:
        InvalidEventError: `unknown_currency` when the rate table lacks the
            event's currency (`decode` has already refused such events);
            `invalid_field` when a converted amount is beyond what an event
            may carry (1e15, or 40 digits), since the KPI stage reads the
            converted event back through the same models.
    """
    fields = MONEY_FIELDS.get(event.type)
    if fields is None:
        return event
    currency = getattr(event, "currency", None)
    if currency is None or currency == settings.reporting_currency:
        return event

    _check_currency(event, settings)
    rate = settings.rates[currency]
    update: dict[str, Any] = {"currency": settings.reporting_currency}
    for name in fields:
        amount = getattr(event, name)
        if amount is not None:
            converted = _exact_product(amount, rate)
            _check_converted(event, name, converted, settings)
            update[name] = converted
    return event.model_copy(update=update)


def dead_letter_for(
    raw: bytes | None,
    error: InvalidEventError,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    now: datetime,
    settings: Settings | None = None,
) -> DeadLetter:
    """Build the dead letter of a record that `decode` refused.

    Args:
        raw: the record value, as given to `decode`.
        error: what `decode` raised for it.
        topic, partition, offset, timestamp_ms: where the record was read.
        now: the wall-clock time of the rejection.
        settings: for `max_record_bytes`; the process-wide settings if None.
    """
    limit = (settings or get_settings()).max_record_bytes
    payload = raw or b""

    # Keep at most `max_record_bytes` of the original: a hostile record many
    # times that size must not make a dead letter larger than any valid event
    # could be. `payload_size` still tells how large it was.
    kept = payload[:limit]
    event_id, event_type = _identity(kept, error.reason)

    return DeadLetter(
        reason=error.reason,
        detail=error.detail,
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp_ms,
        event_id=event_id,
        type=event_type,
        payload_base64=base64.b64encode(kept).decode("ascii"),
        payload_size=len(payload),
        payload_truncated=len(payload) > limit,
        payload_preview=_preview(payload),
        rejected_at=now,
    )


def _may_hold_long_numbers(raw: bytes, error: ValidationError | None) -> bool:
    """Tell whether a record may hold a number a double cannot carry exactly."""
    if error is not None and error.errors()[0]["type"] == "json_invalid":
        return False
    shape = raw.translate(_NUMBER_SHAPE)
    return any(mark in shape for mark in _LONG_NUMBER_MARKS)


def _exact_money(raw: bytes) -> dict[str, Any] | None:
    """Parse a record with its JSON numbers of money as exact decimals.

    Returns None when the record is not a JSON object of an event type with
    money, where exact parsing cannot change the outcome.
    """
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_no_constant)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    event_type = data.get("type")
    money = MONEY_FIELDS.get(event_type) if isinstance(event_type, str) else None
    if money is None:
        return None

    # Other numbers go back to floats, as the fast path read them, so that
    # both paths accept and refuse the same values.
    for key, value in data.items():
        if isinstance(value, Decimal) and key not in money:
            data[key] = float(value)
    return data


def _no_constant(name: str) -> Any:
    # The standard parser reads NaN and Infinity, which are not JSON.
    raise ValueError(f"{name} is not JSON")


def _validate(raw: bytes, data: dict[str, Any]) -> Event:
    try:
        return EVENT_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise _rejection(raw, error) from error


def _rejection(raw: bytes, error: ValidationError) -> InvalidEventError:
    """Turn pydantic's report on a record into one reason and detail."""
    errors = error.errors(include_url=False)
    version = (e for e in errors if _is_version_error(e))
    first = next(version, errors[0])
    kind = first["type"]

    if kind == "json_invalid":
        return _not_json(raw, first)

    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return InvalidEventError(
            "not_an_object",
            f"record is a JSON {_json_kind(first['input'])}; expected a JSON"
            f" object holding one CRM event, got {_shown(first['input'])}",
        )

    if kind in ("union_tag_not_found", "union_tag_invalid"):
        return _bad_type(first)

    event_type, field = _location(first)
    message = first["msg"].removeprefix("Value error, ")

    if kind == "missing":
        why = message.removeprefix("Field ")
        return InvalidEventError(
            "missing_field",
            f"field {field!r} of {event_type} is missing or null; expected a"
            f" value, it is {why}",
        )

    if field == "schema_version" and kind == "literal_error":
        return InvalidEventError(
            "unsupported_schema_version",
            f"field 'schema_version' of {event_type} is {_shown(first['input'])};"
            " expected 1, the only version of the contract this worker reads",
        )

    return InvalidEventError(
        "invalid_field",
        f"field {field!r} of {event_type} is invalid: {message[:1].lower()}"
        f"{message[1:]}; got {_shown(first['input'])}",
    )


def _is_version_error(error: ErrorDetails) -> bool:
    # A record of another contract version fails for many reasons; the
    # version is the one worth reporting.
    return error["type"] == "literal_error" and error["loc"][-1:] == ("schema_version",)


def _not_json(raw: bytes, error: ErrorDetails) -> InvalidEventError:
    if not raw.strip():
        what = "has no bytes" if not raw else "holds only whitespace"
        return InvalidEventError(
            "empty", f"record {what}; expected a JSON object holding one CRM event"
        )

    parser = (error.get("ctx") or {}).get("error", "")
    if "recursion limit" in parser:
        return InvalidEventError(
            "too_deep",
            f"record nests JSON too deeply ({parser}); expected a flat JSON object"
            " holding one CRM event",
        )

    start = raw[: VALUE_CHARS * 4].decode("utf-8", "replace")
    return InvalidEventError(
        "not_json",
        f"record is not JSON ({parser}); expected a UTF-8 JSON object holding one"
        f" CRM event, got {_shown(start)}",
    )


def _bad_type(error: ErrorDetails) -> InvalidEventError:
    found = error["input"].get("type") if isinstance(error["input"], dict) else None
    expected = f"expected one of the {len(EVENT_TYPES)} event types of the contract"

    if found is None:
        return InvalidEventError(
            "missing_type",
            f"field 'type' is missing or null; {expected}, such as 'lead.created'",
        )

    close = difflib.get_close_matches(str(found), EVENT_TYPES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return InvalidEventError(
        "unknown_type", f"field 'type' is {_shown(found)}; {expected}{hint}"
    )


def _check_currency(event: Event, settings: Settings) -> None:
    currency = getattr(event, "currency", None)
    if currency is not None and currency not in settings.rates:
        known = ", ".join(sorted(settings.rates))
        raise InvalidEventError(
            "unknown_currency",
            f"field 'currency' of {event.type} is {_shown(currency)}; expected a"
            f" currency of the rate table ({known}); add its rate to CRM_RATES or"
            " convert at the source",
        )


def _check_times(event: Event, settings: Settings, now: datetime) -> None:
    first, last, ahead, newest = _time_bounds(
        settings.earliest_year,
        settings.latest_year,
        now,
        settings.future_tolerance_seconds,
    )

    if not first <= event.occurred_at <= newest:
        raise _absurd(event, "occurred_at", event.occurred_at, first, last, ahead)

    started = event.lead_created_at if isinstance(event, DealWon) else None
    if started is not None and not first <= started <= newest:
        raise _absurd(event, "lead_created_at", started, first, last, ahead)


def _absurd(
    event: Event,
    field: str,
    value: datetime,
    first: datetime,
    last: datetime,
    ahead: datetime,
) -> InvalidEventError:
    if value < first:
        expected = f"expected {first.isoformat()} or later (earliest_year)"
    elif value > last:
        expected = f"expected {last.isoformat()} or earlier (latest_year)"
    else:
        expected = (
            f"expected {ahead.isoformat()} or earlier, future_tolerance_seconds"
            " past the wall clock; check the producer's clock"
        )
    return InvalidEventError(
        "absurd_timestamp",
        f"field {field!r} of {event.type} is {value.isoformat()}; {expected}",
    )


# The agent passes one `now` for a whole batch of records, so the bounds are
# worked out once per batch.
@lru_cache(maxsize=4)
def _time_bounds(
    earliest_year: int, latest_year: int, now: datetime, tolerance_seconds: int
) -> tuple[datetime, datetime, datetime, datetime]:
    """Return the first and last instants of the years, the latest instant
    the wall clock allows, and the earlier of the last two."""
    first = datetime(min(max(earliest_year, MINYEAR), MAXYEAR), 1, 1, tzinfo=UTC)
    if latest_year >= MAXYEAR:
        last = datetime.max.replace(tzinfo=UTC)
    else:
        end = datetime(max(latest_year + 1, MINYEAR), 1, 1, tzinfo=UTC)
        last = end - timedelta(microseconds=1)
    ahead = now + timedelta(seconds=tolerance_seconds)
    return first, last, ahead, min(last, ahead)


def _check_converted(
    event: Event, field: str, converted: Decimal, settings: Settings
) -> None:
    try:
        _CONVERTED_MONEY.validate_python(converted)
    except ValidationError as error:
        message = error.errors(include_url=False)[0]["msg"]
        raise InvalidEventError(
            "invalid_field",
            f"field {field!r} of {event.type} is {_shown(str(converted))} once"
            f" converted to {settings.reporting_currency}, which is invalid:"
            f" {message[:1].lower()}{message[1:]}; check the amount and the rate"
            f" of {getattr(event, 'currency', None)}",
        ) from error


def _exact_product(amount: Decimal, rate: Decimal) -> Decimal:
    # Decimal arithmetic rounds to the context's precision (28 digits by
    # default); a precision of both operands' digits together never rounds.
    digits = len(amount.as_tuple().digits) + len(rate.as_tuple().digits)
    return Context(prec=digits).multiply(amount, rate)


def _location(error: ErrorDetails) -> tuple[str, str]:
    """Return the event type and the field path an error is located at."""
    loc = error["loc"]
    event_type = str(loc[0]) if loc else "event"
    field = ".".join(str(part) for part in loc[1:]) or "(whole event)"
    return event_type, field


def _identity(payload: bytes, reason: str) -> tuple[str | None, str | None]:
    """Read `event_id` and `type` from a refused record, where possible."""
    if reason in ("empty", "not_json", "too_deep", "not_an_object"):
        return None, None

    # A partial parse also reads them from the kept start of a record that
    # was too large.
    try:
        data = from_json(payload, allow_partial=True)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    return _short_text(data.get("event_id")), _short_text(data.get("type"))


def _short_text(value: Any) -> str | None:
    return value if isinstance(value, str) and 1 <= len(value) <= 128 else None


def _preview(payload: bytes) -> str:
    """Return the start of a record as printable text."""
    text = payload[: PREVIEW_CHARS * 4].decode("utf-8", "replace")
    cut = len(text) > PREVIEW_CHARS or len(payload) > PREVIEW_CHARS * 4
    text = "".join(_printable(char) for char in text[:PREVIEW_CHARS])
    return text + "..." if cut else text


def _printable(char: str) -> str:
    if char.isprintable():
        return char
    return " " if char.isspace() else "\ufffd"


def _shown(value: Any) -> str:
    """Render a found value as JSON, ASCII only, cut to `VALUE_CHARS`."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 3] + "..."


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
