"""Unit tests of the simulator: determinism, contract validity, faults, funnel."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from pydantic import ValidationError

from schemas.events import EVENT_ADAPTER, EVENT_TYPES, MONEY_FIELDS
from stream.producer import record_key
from stream.settings import DEFAULT_RATES
from stream.simulator import (
    DEFECTS,
    SimulatedRecord,
    SimulationError,
    SimulationOptions,
    generate,
    write_jsonl,
)

START = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
INITIAL_LEADS = 500
INITIAL_CUSTOMERS = 300
RETENTION = timedelta(days=30, hours=1)
CUSTOMER_EVENTS = (
    "order.placed",
    "ticket.opened",
    "complaint.filed",
    "customer.churned",
    "quote.issued",
)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _time(event: dict[str, Any]) -> int:
    return _ms(datetime.fromisoformat(event["occurred_at"]))


def _number(entity_id: str) -> int:
    return int(entity_id.rsplit("-", 1)[1])


def contract_problem(value: bytes) -> str | None:
    """Return why a record breaks the event contract, `None` when it is valid.

    The models check shape and types; the contract adds the rate table (an
    unknown currency is invalid) and the year bounds of event times.
    """
    try:
        event = EVENT_ADAPTER.validate_json(value)
    except ValidationError:
        return "schema"
    if event.type in MONEY_FIELDS:
        currency = getattr(event, "currency", None)
        if currency is not None and currency not in DEFAULT_RATES:
            return "currency"
    if not 2000 <= event.occurred_at.year <= 2099:
        return "absurd"
    return None


@pytest.fixture(scope="module")
def clean() -> list[SimulatedRecord]:
    """A 20,000-event run without injected faults."""
    options = SimulationOptions(
        seed=11,
        events=20_000,
        start=START,
        initial_leads=INITIAL_LEADS,
        initial_customers=INITIAL_CUSTOMERS,
    )
    return list(generate(options))


@pytest.fixture(scope="module")
def faulty() -> list[SimulatedRecord]:
    """A 20,000-record run with every kind of fault injected."""
    options = SimulationOptions(
        seed=12,
        events=20_000,
        # Across the change to summer time in Paris, 30 March 2025.
        start=datetime(2025, 3, 25, tzinfo=UTC),
        timezone="Europe/Paris",
        duplicate_rate=0.03,
        out_of_order_rate=0.05,
        late_rate=0.02,
        invalid_rate=0.04,
    )
    return list(generate(options))


def test_same_seed_gives_the_same_bytes() -> None:
    options = SimulationOptions(
        seed=5,
        events=3000,
        start=START,
        duplicate_rate=0.05,
        out_of_order_rate=0.05,
        late_rate=0.05,
        invalid_rate=0.05,
    )

    first = list(generate(options))
    second = list(generate(options))
    other = list(generate(SimulationOptions(seed=6, events=3000, start=START)))

    assert first == second
    assert len(first) == 3000
    assert [r.value for r in other] != [r.value for r in first]


def test_every_event_type_appears_in_20k_events(clean: list[SimulatedRecord]) -> None:
    types = {orjson.loads(record.value)["type"] for record in clean}

    assert types == set(EVENT_TYPES)


def test_clean_records_meet_the_contract(clean: list[SimulatedRecord]) -> None:
    problems = Counter(contract_problem(record.value) for record in clean)

    assert problems == Counter({None: 20_000})
    assert {record.kind for record in clean} == {"valid"}


def test_record_fields_describe_the_value(faulty: list[SimulatedRecord]) -> None:
    for record in faulty:
        assert record.key == record_key(record.value)
        if record.kind == "invalid":
            assert record.event_type is None
            assert record.event_time is None
            continue
        event = orjson.loads(record.value)
        assert record.event_type == event["type"]
        assert record.event_time == _time(event)


def test_injected_faults_come_at_the_asked_rates(
    faulty: list[SimulatedRecord],
) -> None:
    kinds = Counter(record.kind for record in faulty)

    # Binomial counts over 20,000 draws: 4 standard deviations either side.
    for kind, rate in (
        ("duplicate", 0.03),
        ("out_of_order", 0.05),
        ("late", 0.02),
        ("invalid", 0.04),
    ):
        expected = 20_000 * rate
        assert abs(kinds[kind] - expected) < 4 * (expected * (1 - rate)) ** 0.5, kind


def test_faulty_run_events_other_than_invalid_meet_the_contract(
    faulty: list[SimulatedRecord],
) -> None:
    for record in faulty:
        if record.kind != "invalid":
            assert contract_problem(record.value) is None, record.value


def test_invalid_records_break_the_contract_in_every_way(
    faulty: list[SimulatedRecord],
) -> None:
    invalid = [record for record in faulty if record.kind == "invalid"]

    assert {record.defect for record in invalid} == set(DEFECTS)
    for record in invalid:
        assert contract_problem(record.value) is not None, record.value
        assert b"\n" not in record.value
    problems = {
        record.defect: contract_problem(record.value)
        for record in invalid
        if record.defect in ("unknown_currency", "absurd_timestamp", "not_json")
    }
    assert problems == {
        "unknown_currency": "currency",
        "absurd_timestamp": "absurd",
        "not_json": "schema",
    }


def test_duplicates_are_byte_copies_of_earlier_records(
    faulty: list[SimulatedRecord],
) -> None:
    seen: dict[bytes, bytes | None] = {}
    duplicates = 0
    for record in faulty:
        if record.kind == "duplicate":
            duplicates += 1
            assert record.value in seen
            assert seen[record.value] == record.key
        else:
            seen[record.value] = record.key

    assert duplicates > 0


def test_event_ids_are_unique_but_for_duplicates(
    faulty: list[SimulatedRecord],
) -> None:
    ids = Counter(
        orjson.loads(record.value)["event_id"]
        for record in faulty
        if record.kind in ("valid", "out_of_order", "late")
    )

    assert ids.most_common(1)[0][1] == 1


def test_late_records_lie_past_the_retention_of_the_latest_event(
    faulty: list[SimulatedRecord],
) -> None:
    latest: int | None = None
    late = 0
    for record in faulty:
        if record.kind == "late":
            late += 1
            assert latest is not None
            assert _time(orjson.loads(record.value)) < latest - _ms(
                datetime(1970, 1, 1, tzinfo=UTC) + RETENTION
            )
        elif record.kind in ("valid", "out_of_order"):
            moment = _time(orjson.loads(record.value))
            latest = moment if latest is None else max(latest, moment)

    assert late > 0


def test_out_of_order_records_lie_a_little_before_the_latest_event(
    faulty: list[SimulatedRecord],
) -> None:
    latest = 0
    for record in faulty:
        if record.kind not in ("valid", "out_of_order"):
            continue
        moment = _time(orjson.loads(record.value))
        if record.kind == "out_of_order":
            assert latest - 2 * 3600 * 1000 - 1000 <= moment < latest
        else:
            # Clean events follow the simulated clock: never backwards.
            assert moment >= latest
        latest = max(latest, moment)


def test_event_times_carry_the_offset_of_the_time_zone(
    faulty: list[SimulatedRecord],
) -> None:
    paris = ZoneInfo("Europe/Paris")
    offsets = Counter()
    for record in faulty:
        if record.kind == "invalid":
            continue
        written = datetime.fromisoformat(orjson.loads(record.value)["occurred_at"])
        assert written.utcoffset() == written.astimezone(paris).utcoffset()
        offsets[written.utcoffset()] += 1

    # The run spans the spring change to summer time (30 March 2025).
    assert set(offsets) == {timedelta(hours=1), timedelta(hours=2)}


def test_stream_covers_the_span_its_density_implies() -> None:
    options = SimulationOptions(
        seed=3, events=None, start=START, density=0.05, duration=timedelta(days=7)
    )

    records = list(generate(options))

    # 0.05 events/s for a week is 30,240 events; the curve over the hours of a
    # week averages 1, so a whole week lands close to it.
    assert abs(len(records) - 30_240) < 30_240 * 0.03
    times = [record.event_time or 0 for record in records]
    assert _ms(START) <= min(times)
    assert max(times) < _ms(START + timedelta(days=7))


def test_funnel_references_only_known_leads(clean: list[SimulatedRecord]) -> None:
    created: set[str] = set()
    closed: set[str] = set()
    lead_events = {"lead.contacted", "lead.converted", "lead.disqualified"}
    for record in clean:
        event = orjson.loads(record.value)
        lead = event.get("lead_id")
        if event["type"] == "lead.created":
            assert lead not in created
            created.add(lead)
        elif lead is not None:
            assert lead in created or _number(lead) <= INITIAL_LEADS, event
        if lead is None:
            continue
        if event["type"] in lead_events | {"quote.issued", "deal.won", "deal.lost"}:
            assert lead not in closed, event
        if event["type"] in ("lead.disqualified", "deal.lost", "lead.converted"):
            closed.add(lead)

    assert len(created) == sum(1 for r in clean if r.event_type == "lead.created")


def test_customers_act_only_while_in_the_base(clean: list[SimulatedRecord]) -> None:
    base = {f"cust-{n:06d}" for n in range(1, INITIAL_CUSTOMERS + 1)}
    churned: set[str] = set()
    for record in clean:
        event = orjson.loads(record.value)
        customer = event.get("customer_id")
        if event["type"] in ("deal.won", "lead.converted"):
            # A new customer, or one of the base buying more (upsell).
            assert customer not in churned
            base.add(customer)
        elif event["type"] in CUSTOMER_EVENTS and customer is not None:
            assert customer in base, event
        if event["type"] == "customer.churned":
            base.remove(customer)
            churned.add(customer)

    assert churned


def test_conversions_follow_won_deals_or_come_alone(
    clean: list[SimulatedRecord],
) -> None:
    won: dict[str, str] = {}
    converted = 0
    for record in clean:
        event = orjson.loads(record.value)
        if event["type"] == "deal.won" and "lead_id" in event:
            won[event["lead_id"]] = event["customer_id"]
        if event["type"] == "lead.converted":
            converted += 1
            if event["lead_id"] in won:
                assert won[event["lead_id"]] == event["customer_id"]

    assert converted > 0


def test_quote_versions_count_up_by_one(clean: list[SimulatedRecord]) -> None:
    versions: dict[str, int] = {}
    for record in clean:
        event = orjson.loads(record.value)
        if event["type"] != "quote.issued":
            continue
        previous = versions.get(event["quote_id"])
        if previous is None:
            # Quotes of the pipeline before the start had their version 1 then.
            assert event["version"] in (1, 2)
        else:
            assert event["version"] == previous + 1
        versions[event["quote_id"]] = event["version"]

    assert max(versions.values()) == 3


def test_won_deals_link_their_lead_mostly(clean: list[SimulatedRecord]) -> None:
    links = Counter()
    for record in clean:
        event = orjson.loads(record.value)
        if event["type"] != "deal.won":
            continue
        if "lead_id" in event:
            links["lead_id"] += 1
        elif "lead_created_at" in event:
            links["lead_created_at"] += 1
            assert event["lead_created_at"] < event["occurred_at"]
        else:
            links["neither"] += 1

    assert links["lead_id"] > links["lead_created_at"] > 0
    assert links["lead_id"] > links["neither"] > 0


def test_email_lifecycle_runs_in_order(clean: list[SimulatedRecord]) -> None:
    allowed_after = {
        "email.sent": {None},
        "email.delivered": {"email.sent"},
        "email.bounced": {"email.sent"},
        "email.opened": {"email.delivered", "email.opened"},
        "email.clicked": {"email.opened"},
        "email.unsubscribed": {"email.delivered", "email.opened", "email.clicked"},
    }
    last: dict[str, str] = {}
    for record in clean:
        event = orjson.loads(record.value)
        if not event["type"].startswith("email."):
            continue
        assert last.get(event["message_id"]) in allowed_after[event["type"]], event
        last[event["message_id"]] = event["type"]


def test_healthy_kpis_sit_in_realistic_ranges(clean: list[SimulatedRecord]) -> None:
    types = Counter(record.event_type for record in clean)

    assert 0.95 < types["email.delivered"] / types["email.sent"] < 0.99
    assert 0.03 < types["lead.converted"] / types["lead.created"] < 0.25
    assert types["deal.won"] < types["deal.lost"]


def test_deliverability_collapse_scenario_makes_most_emails_bounce() -> None:
    collapse = _ms(START + timedelta(days=3))
    options = SimulationOptions(
        seed=9,
        events=20_000,
        start=START,
        scenario="deliverability_collapse",
        scenario_start=START + timedelta(days=3),
    )
    sent_after: dict[str, bool] = {}
    delivered: Counter[bool] = Counter()
    for record in generate(options):
        event = orjson.loads(record.value)
        if event["type"] == "email.sent":
            sent_after[event["message_id"]] = _time(event) >= collapse
        elif event["type"] == "email.delivered":
            delivered[sent_after[event["message_id"]]] += 1
    sent = Counter(sent_after.values())

    assert delivered[False] / sent[False] > 0.95
    assert delivered[True] / sent[True] < 0.5


def _deliverability(events: list[dict[str, Any]]) -> float:
    types = Counter(event["type"] for event in events)
    return types["email.delivered"] / types["email.sent"]


def _unsubscribe_rate(events: list[dict[str, Any]]) -> float:
    types = Counter(event["type"] for event in events)
    return types["email.unsubscribed"] / types["email.delivered"]


def _first_contact_resolution(events: list[dict[str, Any]]) -> float:
    """Share of resolutions after at most one reply and no earlier resolution."""
    history: dict[str, Counter[str]] = {}
    first = 0
    resolved = 0
    for event in events:
        if not event["type"].startswith("ticket."):
            continue
        seen = history.setdefault(event["ticket_id"], Counter())
        if event["type"] == "ticket.resolved":
            resolved += 1
            if seen["ticket.replied"] <= 1 and not seen["ticket.resolved"]:
                first += 1
        seen[event["type"]] += 1
    return first / resolved


def _win_rate(events: list[dict[str, Any]]) -> float:
    types = Counter(event["type"] for event in events)
    return types["deal.won"] / (types["deal.won"] + types["deal.lost"])


def _churned(events: list[dict[str, Any]]) -> float:
    return sum(1 for event in events if event["type"] == "customer.churned")


@pytest.mark.parametrize(
    ("scenario", "measure", "healthy", "degraded"),
    [
        ("deliverability_collapse", _deliverability, (0.95, 0.99), (0.2, 0.4)),
        ("unsubscribe_spike", _unsubscribe_rate, (0.0005, 0.004), (0.04, 0.12)),
        ("support_backlog", _first_contact_resolution, (0.6, 0.85), (0.05, 0.4)),
        ("sales_slump", _win_rate, (0.22, 0.38), (0.0, 0.08)),
        ("churn_wave", _churned, (50, 150), (700, 1300)),
    ],
)
def test_each_scenario_makes_its_kpi_collapse(
    scenario: str,
    measure: Any,
    healthy: tuple[float, float],
    degraded: tuple[float, float],
) -> None:
    def run(chosen: str | None) -> list[dict[str, Any]]:
        options = SimulationOptions(
            seed=31, events=20_000, start=START, scenario=chosen
        )
        return [orjson.loads(record.value) for record in generate(options)]

    assert healthy[0] <= measure(run(None)) <= healthy[1]
    assert degraded[0] <= measure(run(scenario)) <= degraded[1]


def test_live_mode_stamps_events_with_the_wall_clock() -> None:
    before = datetime.now(UTC)
    records = list(generate(SimulationOptions(seed=1, events=200, live=True)))
    after = datetime.now(UTC)

    for record in records:
        moment = datetime.fromisoformat(orjson.loads(record.value)["occurred_at"])
        assert before - timedelta(milliseconds=1) <= moment <= after


def test_jsonl_round_trip_keeps_bytes_and_keys(
    faulty: list[SimulatedRecord], tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"

    summary = write_jsonl(iter(faulty), path)

    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == [record.value for record in faulty]
    assert [record_key(line) for line in lines[:-1]] == [r.key for r in faulty]
    assert summary.records == 20_000
    assert summary.bytes == sum(len(record.value) for record in faulty)
    assert summary.by_kind == dict(Counter(record.kind for record in faulty))


def test_jsonl_goes_to_binary_and_text_streams(clean: list[SimulatedRecord]) -> None:
    binary = io.BytesIO()
    text = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    records = clean[:50]

    write_jsonl(iter(records), binary)
    text.write("")
    write_jsonl(iter(records), text)

    expected = b"".join(record.value + b"\n" for record in records)
    assert binary.getvalue() == expected
    assert text.buffer.getvalue() == expected  # type: ignore[attr-defined]


def test_summary_counts_kinds_types_and_event_times(
    faulty: list[SimulatedRecord],
) -> None:
    summary = write_jsonl(iter(faulty), io.BytesIO())

    times = [
        datetime.fromisoformat(orjson.loads(r.value)["occurred_at"])
        for r in faulty
        if r.kind in ("valid", "out_of_order")
    ]
    assert summary.first_event_time == min(times)
    assert summary.last_event_time == max(times)
    assert summary.by_type == dict(
        sorted(Counter(r.event_type for r in faulty if r.kind != "invalid").items())
    )


def _options_error(**changes: Any) -> str:
    with pytest.raises(SimulationError) as caught:
        SimulationOptions(**changes)
    return str(caught.value)


def test_options_refuse_inconsistent_values() -> None:
    assert "in 0..1" in _options_error(duplicate_rate=1.5)
    assert "add up to" in _options_error(invalid_rate=0.6, late_rate=0.6)
    assert "no time zone" in _options_error(start=datetime(2025, 1, 1))
    assert "unknown scenario" in _options_error(scenario="meteor")
    assert "unknown time zone" in _options_error(timezone="Mars/Olympus")
    assert "density" in _options_error(density=0)


def test_default_start_ends_the_stream_about_now() -> None:
    records: Iterator[SimulatedRecord] = generate(
        SimulationOptions(seed=2, events=2000, density=0.05)
    )

    last = max(r.event_time for r in records if r.event_time is not None)

    now = _ms(datetime.now(UTC))
    # 2,000 events at 0.05/s span ~11 h; the hour-of-week curve bends it.
    assert now - 12 * 3600 * 1000 < last < now + 12 * 3600 * 1000
