"""Every KPI, window and dimension from the real pipeline equals the reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.admitted import AdmittedBatch
from schemas.events import Event
from stream import simulator
from stream.errors import InvalidEventError
from stream.ingest import decode
from stream.settings import Settings
from tests.integration.conftest import (
    WorkerRun,
    create_topic,
    kpi_differences,
    kpis_from_metrics,
    metric_value,
    produce,
    read_to_end,
    wait_until,
)
from tests.reference import reference_kpis

EVENTS = 20_000
DAYS = 45


def simulated_log() -> list[simulator.SimulatedRecord]:
    """A seeded stream of every event type with every kind of fault."""
    options = simulator.SimulationOptions(
        seed=11,
        events=EVENTS,
        density=EVENTS / (DAYS * 86400),
        start=datetime.now(UTC) - timedelta(days=DAYS),
        duplicate_rate=0.02,
        out_of_order_rate=0.05,
        late_rate=0.005,
        invalid_rate=0.01,
    )
    return list(simulator.generate(options))


def count_valid(records: list[simulator.SimulatedRecord], settings: Settings) -> int:
    now = datetime.now(UTC)
    valid = 0
    for record in records:
        try:
            decode(record.value, settings, now)
        except InvalidEventError:
            continue
        valid += 1
    return valid


async def arrival_order(bootstrap: str, run: WorkerRun, valid: int) -> list[Event]:
    """Return the valid events in the order the KPI stage read them.

    With several partitions the stage reads them interleaved, not in the order
    they were produced; the admitted topic records its order exactly. Which
    events are late or duplicates depends on that order.
    """
    topic = f"{run.environment['CRM_APP_ID']}-admitted"
    events: list[Event] = []
    for _, value in await read_to_end(bootstrap, topic):
        batch = AdmittedBatch.model_validate_json(value)
        events.extend(admitted.event for admitted in batch.events)
    assert len(events) == valid
    return events


async def test_all_kpis_equal_the_reference(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    records = simulated_log()
    valid = count_valid(records, stack_settings)

    await create_topic(stack_settings.kafka_bootstrap, worker_run.events_topic, 4)
    worker_run.start()
    await produce(
        stack_settings.kafka_bootstrap,
        worker_run.events_topic,
        [record.value for record in records],
        [record.key for record in records],
    )

    def all_applied() -> bool:
        text = worker_run.metrics_text()
        seen = sum(
            metric_value(text, "crm_events_total", {"type": t, "outcome": o}) or 0
            for t in simulator_types(records)
            for o in ("applied", "duplicate", "late")
        )
        return seen == valid

    wait_until(all_applied, timeout=300, what=f"{valid} valid events processed")

    events = await arrival_order(stack_settings.kafka_bootstrap, worker_run, valid)
    expected = reference_kpis(events, stack_settings)
    assert expected.duplicates > 0 and expected.late > 0
    currency = stack_settings.reporting_currency
    problems: list[str] = []

    def matches() -> bool:
        nonlocal problems
        actual = kpis_from_metrics(worker_run.metrics_text(), currency)
        problems = kpi_differences(actual, expected.values)
        return not problems

    try:
        wait_until(matches, timeout=30, what="KPIs equal to the reference")
    except BaseException:
        shown = "\n".join(problems[:40])
        raise AssertionError(f"{len(problems)} differences:\n{shown}") from None
    text = worker_run.metrics_text()
    assert metric_value(text, "crm_events_duplicate_total", {}) == expected.duplicates
    assert metric_value(text, "crm_events_late_total", {}) == expected.late


def simulator_types(records: list[simulator.SimulatedRecord]) -> set[str]:
    return {r.event_type for r in records if r.event_type is not None}
