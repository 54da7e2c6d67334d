"""Tests of the committed JSON Schema files: up to date, and true to the contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas.api import api_json_schemas
from schemas.dead_letters import DeadLetter
from schemas.kpis import KpiSnapshot
from schemas.publish import DEFAULT_DIRECTORY, write_json_schemas
from stream.ingest import decode
from stream.settings import Settings

COMMITTED = DEFAULT_DIRECTORY
NOW = datetime(2024, 6, 1, tzinfo=UTC)
SETTINGS = Settings(
    _env_file=None,
    rates={"EUR": Decimal("1"), "USD": Decimal("0.92"), "GBP": Decimal("1.17")},
    earliest_year=2000,
    latest_year=2099,
    future_tolerance_seconds=86400,
    max_record_bytes=65536,
)
ENVELOPE = {
    "event_id": "e1",
    "occurred_at": "2024-05-01T10:00:00Z",
    "schema_version": 1,
}
EMAIL = {"message_id": "m1", "contact_id": "k1", "campaign_id": "c1"}

# One valid event per type, with a required field of its own to drop.
SAMPLES: dict[str, tuple[dict[str, Any], str]] = {
    "lead.created": (
        {"lead_id": "l1", "channel": "organic", "rep_id": "r1"},
        "lead_id",
    ),
    "lead.contacted": (
        {"lead_id": "l1", "rep_id": "r1", "activity": "call"},
        "activity",
    ),
    "lead.converted": (
        {"lead_id": "l1", "customer_id": "c1", "channel": "email"},
        "customer_id",
    ),
    "lead.disqualified": ({"lead_id": "l1", "reason": "no fit"}, "lead_id"),
    "quote.issued": (
        {
            "quote_id": "q1",
            "version": 2,
            "rep_id": "r1",
            "amount": "1200.00",
            "currency": "EUR",
        },
        "amount",
    ),
    "deal.won": (
        {
            "deal_id": "d1",
            "customer_id": "c1",
            "rep_id": "r1",
            "amount": 5000,
            "currency": "USD",
            "lead_created_at": "2024-04-01T09:00:00+02:00",
        },
        "deal_id",
    ),
    "deal.lost": (
        {
            "deal_id": "d1",
            "rep_id": "r1",
            "reason": "price",
            "amount": "800",
            "currency": "EUR",
        },
        "reason",
    ),
    "quota.set": (
        {"rep_id": "r1", "period": "2024-05", "amount": "50000", "currency": "EUR"},
        "period",
    ),
    "order.placed": (
        {
            "order_id": "o1",
            "customer_id": "c1",
            "revenue": "99.90",
            "cost": "60.10",
            "currency": "EUR",
            "crm_attributed": True,
        },
        "cost",
    ),
    "customer.churned": ({"customer_id": "c1", "reason": "moved"}, "customer_id"),
    "site.visit": ({"visitor_id": "v1", "channel": "direct", "count": 3}, "visitor_id"),
    "ad.impression": (
        {"campaign_id": "a1", "channel": "paid_social", "count": 1000},
        "campaign_id",
    ),
    "ad.click": ({"campaign_id": "a1", "channel": "paid_search"}, "channel"),
    "newsletter.subscribed": ({"contact_id": "k1", "channel": "social"}, "contact_id"),
    "spend.recorded": (
        {"category": "acquisition", "amount": "300", "currency": "GBP"},
        "category",
    ),
    "email.sent": (EMAIL, "message_id"),
    "email.delivered": (EMAIL, "contact_id"),
    "email.opened": (EMAIL, "message_id"),
    "email.clicked": (EMAIL, "message_id"),
    "email.unsubscribed": (EMAIL, "contact_id"),
    "email.bounced": ({**EMAIL, "bounce_type": "hard"}, "bounce_type"),
    "ticket.opened": (
        {"ticket_id": "t1", "customer_id": "c1", "channel": "email"},
        "customer_id",
    ),
    "ticket.replied": ({"ticket_id": "t1", "agent_id": "g1"}, "agent_id"),
    "ticket.reopened": ({"ticket_id": "t1"}, "ticket_id"),
    "ticket.resolved": ({"ticket_id": "t1"}, "ticket_id"),
    "complaint.filed": (
        {"complaint_id": "x1", "customer_id": "c1", "category": "billing"},
        "category",
    ),
}


def sample(event_type: str) -> dict[str, Any]:
    return {**ENVELOPE, "type": event_type, **SAMPLES[event_type][0]}


def validator(relative: str) -> Draft202012Validator:
    schema = json.loads((COMMITTED / relative).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def files_under(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*.json"))
    }


def test_the_committed_schemas_are_those_the_models_give(tmp_path: Path) -> None:
    written = write_json_schemas(tmp_path)

    fresh = files_under(tmp_path)
    committed = files_under(COMMITTED)
    stale = sorted(
        name
        for name in fresh.keys() | committed.keys()
        if fresh.get(name) != committed.get(name)
    )
    assert not stale, (
        f"schemas/json is stale ({', '.join(stale)}): run `python -m schemas.publish`"
        " and commit the result"
    )
    # One per event type, the union, the snapshot, the dead letter, the API.
    assert len(written) == len(SAMPLES) + 3 + len(api_json_schemas())


def test_publishing_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    write_json_schemas(tmp_path / "a")
    write_json_schemas(tmp_path / "b")

    assert files_under(tmp_path / "a") == files_under(tmp_path / "b")


def test_publishing_removes_the_schema_of_a_type_that_is_gone(tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "lead.deleted.json").write_text("{}\n")

    write_json_schemas(tmp_path)

    assert not (tmp_path / "events" / "lead.deleted.json").exists()


def test_every_committed_schema_file_ends_with_one_newline() -> None:
    for name, content in files_under(COMMITTED).items():
        assert content.endswith(b"}\n"), name


def test_there_is_a_sample_for_every_event_schema() -> None:
    names = sorted(path.stem for path in (COMMITTED / "events").glob("*.json"))

    assert names == sorted(SAMPLES)


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_an_event_schema_accepts_a_valid_event(event_type: str) -> None:
    event = sample(event_type)

    assert list(validator(f"events/{event_type}.json").iter_errors(event)) == []
    assert list(validator("event.json").iter_errors(event)) == []
    assert decode(json.dumps(event).encode(), SETTINGS, NOW)


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_an_event_schema_refuses_an_event_missing_a_required_field(
    event_type: str,
) -> None:
    dropped = SAMPLES[event_type][1]
    event = {key: value for key, value in sample(event_type).items() if key != dropped}

    errors = list(validator(f"events/{event_type}.json").iter_errors(event))

    assert [error.message for error in errors] == [
        f"{dropped!r} is a required property"
    ]
    assert not validator("event.json").is_valid(event)


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_an_event_schema_refuses_another_type(event_type: str) -> None:
    other = "ticket.resolved" if event_type != "ticket.resolved" else "ticket.reopened"
    event = {**sample(event_type), "type": other}

    assert not validator(f"events/{event_type}.json").is_valid(event)


def test_the_union_schema_refuses_an_unknown_type() -> None:
    assert not validator("event.json").is_valid({**sample("lead.created"), "type": "x"})


def test_the_lost_deal_schema_refuses_an_amount_without_currency() -> None:
    lost = validator("events/deal.lost.json")
    event = sample("deal.lost")
    without_currency = {key: value for key, value in event.items() if key != "currency"}

    assert not lost.is_valid(without_currency)
    assert not lost.is_valid({**event, "currency": None})
    assert lost.is_valid({**without_currency, "amount": None})
    assert lost.is_valid(
        {key: v for key, v in without_currency.items() if key != "amount"}
    )


def test_the_snapshot_schema_accepts_a_snapshot_as_written() -> None:
    snapshot = KpiSnapshot(
        key="lead_conversion|24h|",
        kpi="lead_conversion",
        series="lead_conversion",
        window="24h",
        value=0.25,
        unit="ratio",
        watermark=NOW,
        computed_at=NOW,
    )

    assert validator("kpi-snapshot.json").is_valid(snapshot.model_dump(mode="json"))
    assert not validator("kpi-snapshot.json").is_valid({"key": "x"})


def test_the_dead_letter_schema_accepts_a_dead_letter_as_written() -> None:
    letter = DeadLetter(
        reason="not_json",
        detail="record is not JSON",
        topic="crm-events",
        partition=0,
        offset=12,
        timestamp_ms=1714557600000,
        payload_base64="aGk=",
        payload_size=2,
        payload_truncated=False,
        payload_preview="hi",
        rejected_at=NOW,
    )

    assert validator("dead-letter.json").is_valid(letter.model_dump(mode="json"))
    assert not validator("dead-letter.json").is_valid({"reason": "not_json"})
