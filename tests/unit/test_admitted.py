"""The admitted batch codec: what the KPI stage reads is what ingestion validated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson

from schemas.admitted import AdmittedBatch, AdmittedEvent, decode_batch, encode_batch
from schemas.events import EVENT_ADAPTER, DealWon, OrderPlaced
from stream import simulator
from stream.ingest import decode, to_reporting
from stream.settings import Settings


def _validated(records: list[bytes]) -> list[AdmittedEvent]:
    settings = Settings()
    now = datetime(2030, 1, 1, tzinfo=UTC)
    return [
        AdmittedEvent(
            partition=offset % 4,
            offset=offset,
            produced_ms=1_700_000_000_000 + offset,
            event=to_reporting(decode(record, settings, now), settings),
        )
        for offset, record in enumerate(records)
    ]


def _sources(events: list[AdmittedEvent]) -> list[tuple[int, int, int, object]]:
    return [(e.partition, e.offset, e.produced_ms, e.event) for e in events]


def test_a_simulated_batch_reads_back_equal_to_the_validated_one() -> None:
    options = simulator.SimulationOptions(
        seed=3, events=3000, start=datetime(2026, 1, 5, tzinfo=UTC)
    )
    records = [record.value for record in simulator.generate(options)]
    events = _validated(records)
    expected = AdmittedBatch(topic="crm-events", events=events)

    raw = encode_batch("crm-events", _sources(events))  # type: ignore[arg-type]

    assert decode_batch(raw) == expected
    # The bytes are an AdmittedBatch for any other reader of the topic.
    assert AdmittedBatch.model_validate_json(raw) == expected


def test_money_offsets_and_optional_instants_keep_their_exact_values() -> None:
    deal = EVENT_ADAPTER.validate_python(
        {
            "event_id": "d-1",
            "type": "deal.won",
            "occurred_at": "2026-03-29T01:30:00.000123+02:00",
            "schema_version": 1,
            "deal_id": "deal-1",
            "customer_id": "cust-1",
            "rep_id": "rep-1",
            "amount": "123456789012345.1234567890123",
            "currency": "EUR",
            "lead_created_at": "2026-03-01T00:00:00Z",
        }
    )
    order = EVENT_ADAPTER.validate_python(
        {
            "event_id": "o-1",
            "type": "order.placed",
            "occurred_at": "2026-03-29T01:30:00Z",
            "schema_version": 1,
            "order_id": "order-1",
            "customer_id": "cust-1",
            "revenue": "1E+3",
            "cost": "0.10",
            "currency": "EUR",
        }
    )
    raw = encode_batch("t", [(1, 7, 5, deal), (2, 9, 6, order)])

    first, second = decode_batch(raw).events
    assert isinstance(first.event, DealWon)
    assert first.event.amount == Decimal("123456789012345.1234567890123")
    assert str(first.event.amount) == "123456789012345.1234567890123"
    assert first.event.occurred_at == datetime(
        2026, 3, 29, 1, 30, 0, 123, tzinfo=timezone(timedelta(hours=2))
    )
    assert first.event.occurred_at.utcoffset() == timedelta(hours=2)
    assert first.event.lead_created_at == datetime(2026, 3, 1, tzinfo=UTC)
    assert (first.partition, first.offset, first.produced_ms) == (1, 7, 5)
    assert isinstance(second.event, OrderPlaced)
    assert str(second.event.revenue) == "1E+3"
    assert str(second.event.cost) == "0.10"
    assert second.event.crm_attributed is False
    assert orjson.loads(raw)["events"][1]["event"]["revenue"] == "1E+3"
