"""A worker killed mid-stream and replaced loses no event and counts none twice."""

from __future__ import annotations

from stream.settings import Settings
from tests.integration.conftest import (
    WorkerRun,
    create_topic,
    kpi_differences,
    kpis_from_metrics,
    metric_value,
    produce,
    wait_until,
)
from tests.integration.event_logs import (
    AdmittedRecord,
    acquisitions,
    admitted_records,
    events_seen,
    eventually,
    ingested,
    production_order,
    simulated_log,
    split_copies,
)
from tests.reference import reference_kpis

EVENTS = 30_000
DAYS = 45
PARTITIONS = 4

WORKER_ENVIRONMENT = {
    # Kafka drops a member that stopped heartbeating after the session
    # timeout; until then the group cannot rebalance and the new worker waits.
    "CRM_KAFKA_SESSION_TIMEOUT_SECONDS": "10",
    # The worker takes the log in seconds: checkpoints four times a second
    # leave several behind before the crash.
    "CRM_CHECKPOINT_INTERVAL_SECONDS": "0.25",
}


async def test_kpis_after_a_crash_equal_the_reference(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    worker_run.environment.update(WORKER_ENVIRONMENT)
    bootstrap = stack_settings.kafka_bootstrap
    records = simulated_log(seed=23, events=EVENTS, days=DAYS, late_rate=0.005)
    valid = len(production_order(records, stack_settings))

    await create_topic(bootstrap, worker_run.events_topic, PARTITIONS)
    await produce(
        bootstrap,
        worker_run.events_topic,
        [record.value for record in records],
        [record.key for record in records],
    )

    # Kill the first worker once about half the events are in its KPI state
    # and checkpoints are written, without letting it close anything: no last
    # checkpoint, no commit.
    def halfway() -> bool:
        text = worker_run.metrics_text()
        written = metric_value(text, "crm_checkpoints_total", {}) or 0
        return events_seen(text) >= valid // 2 and written >= 2

    first = worker_run.start()
    wait_until(halfway, timeout=90, what=f"half of {valid} events processed")
    worker_run.stop(first, kill=True)
    assert acquisitions(worker_run) == {first.pid: [-1]}

    second = worker_run.start()
    wait_until(
        lambda: second.pid in acquisitions(worker_run),
        timeout=60,
        what="the second worker to acquire the KPI state",
    )
    restored = acquisitions(worker_run)[second.pid][0]
    assert restored > 0, "the second worker did not restore a checkpoint"

    admitted: list[AdmittedRecord] = []
    seen = 0

    async def finished() -> bool:
        nonlocal admitted, seen
        if not await ingested(bootstrap, worker_run, PARTITIONS):
            return False
        admitted = await admitted_records(bootstrap, worker_run)
        seen = events_seen(worker_run.metrics_text())
        return seen == sum(len(r.events) for r in admitted if r.offset > restored)

    await eventually(
        finished,
        timeout=90,
        what=lambda: f"the second worker to finish ({seen} events taken)",
    )

    # After the crash the ingest stage forwards again what it read since its
    # last commit. The KPI stage takes a source record (events-topic partition
    # and offset) once and counts its copies as duplicates, so the reference
    # reads the first copies, in the order the stage read them.
    once, again = split_copies(admitted)
    once_before, again_before = split_copies(
        [r for r in admitted if r.offset <= restored]
    )
    assert len(once) == valid
    expected = reference_kpis(once, stack_settings)
    before = reference_kpis(once_before, stack_settings)
    assert expected.late > 0 and expected.duplicates > 0

    # Nothing lost and nothing counted twice: the restored state plus the
    # records after it give the KPIs of the whole log.
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

    # The second worker took exactly the events after its checkpoint.
    text = worker_run.metrics_text()
    assert events_seen(text, "applied") == expected.applied - before.applied
    assert events_seen(text, "late") == expected.late - before.late
    assert metric_value(text, "crm_events_late_total", {}) == (
        expected.late - before.late
    )
    assert metric_value(text, "crm_events_duplicate_total", {}) == (
        expected.duplicates - before.duplicates + len(again) - len(again_before)
    )
