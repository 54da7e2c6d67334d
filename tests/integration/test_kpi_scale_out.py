"""Two workers on one log give exactly the KPIs of one worker, and of the reference.

The ingest stage's partitions are shared between the workers; the KPI stage is
the one partition of the admitted topic, held by one of them. Every worker
answers `GET /kpis` from the KPI topic, whichever holds the state.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream import simulator
from stream.catalogue import SeriesKey
from stream.settings import Settings
from tests.integration.conftest import (
    WorkerRun,
    create_topic,
    kpi_differences,
    kpis_from_metrics,
    metric_value,
    produce,
)
from tests.integration.event_logs import (
    eventually,
    ingested,
    production_order,
    served_kpis,
    sibling_run,
    simulated_log,
    synced_generations,
    with_long_horizon,
)
from tests.reference import ReferenceResult, reference_kpis

EVENTS = 20_000
# No late events, and a span shorter than the late limit (30 d + 1 h): however
# the partitions interleave, no event is late.
DAYS = 10
PARTITIONS = 4


@dataclass
class Outcome:
    """What the workers of one run showed once they had taken the whole log."""

    served: list[dict[SeriesKey, float]]
    """`GET /kpis` of each worker, in the order they started."""
    metrics: list[str]
    """`/metrics` of each worker."""


async def run_log(
    run: WorkerRun,
    records: list[simulator.SimulatedRecord],
    expected: ReferenceResult,
    workers: int,
) -> Outcome:
    """Start `workers` workers on a fresh 4-partition topic, then produce the log.

    Returns once every worker serves the reference's KPIs, or fails.
    """
    bootstrap = run.environment["CRM_KAFKA_BOOTSTRAP"]
    ports = [run.port + index for index in range(workers)]
    await create_topic(bootstrap, run.events_topic, PARTITIONS)
    processes = [run.start(port) for port in ports]

    # Produce only once the group has settled, so that no rebalance moves a
    # partition while the log is read.
    async def settled() -> bool:
        synced = synced_generations(run)
        pids = [process.pid for process in processes]
        return all(pid in synced for pid in pids) and (
            len({synced[pid] for pid in pids}) == 1
        )

    await eventually(settled, timeout=60, what=lambda: "the consumer group to settle")
    await produce(
        bootstrap,
        run.events_topic,
        [record.value for record in records],
        [record.key for record in records],
    )

    problems: list[str] = []

    async def served_everywhere() -> bool:
        nonlocal problems
        if not await ingested(bootstrap, run, PARTITIONS):
            return False
        problems = []
        for port in ports:
            differences = kpi_differences(served_kpis(port), expected.values)
            problems.extend(f"port {port}: {problem}" for problem in differences)
        return not problems

    await eventually(
        served_everywhere,
        timeout=90,
        what=lambda: f"the reference's KPIs on every worker: {problems[:20]}",
    )
    return Outcome(
        served=[served_kpis(port) for port in ports],
        metrics=[run.metrics_text(port) for port in ports],
    )


async def test_two_workers_give_exactly_the_kpis_of_one(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    reference_settings = with_long_horizon(worker_run, stack_settings)
    records = simulated_log(seed=31, events=EVENTS, days=DAYS, late_rate=0.0)
    expected = reference_kpis(
        production_order(records, stack_settings), reference_settings
    )
    assert expected.late == 0 and expected.duplicates > 0

    single = sibling_run(worker_run, "single")
    try:
        one = await run_log(single, records, expected, workers=1)
    finally:
        for process in single.processes:
            single.stop(process)
    two = await run_log(worker_run, records, expected, workers=2)

    # Exactly the same values, not just within the reference's tolerance.
    assert two.served[0] == two.served[1]
    assert two.served[0] == one.served[0]

    # Both workers validated part of the log; one of them holds the KPI state
    # and exports the KPIs, the other exports none.
    consumed = [
        metric_value(
            text, "crm_records_consumed_total", {"topic": worker_run.events_topic}
        )
        or 0
        for text in two.metrics
    ]
    assert all(count > 0 for count in consumed)
    assert sum(consumed) == len(records)
    owned = [metric_value(text, "crm_kpi_state_owned", {}) for text in two.metrics]
    assert sorted(owned) == [0.0, 1.0]
    currency = stack_settings.reporting_currency
    exported = [kpis_from_metrics(text, currency) for text in two.metrics]
    owner = owned.index(1.0)
    assert exported[1 - owner] == {}
    assert exported[owner] == two.served[owner]
