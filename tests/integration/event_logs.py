"""Simulated event logs for the KPI tests, and what the workers made of them.

A test produces a seeded log, lets workers process it, then compares the KPIs
the workers show (on `/metrics` or `GET /kpis`) with the reference computed
over an arrival order it reads back: the admitted topic, or the order the log
was produced in.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from schemas.admitted import AdmittedBatch, AdmittedEvent
from schemas.api import KpiListing
from schemas.events import Event
from stream import simulator
from stream.catalogue import SeriesKey
from stream.errors import InvalidEventError
from stream.ingest import decode
from stream.settings import Settings
from tests.integration.conftest import WorkerRun

LONG_HORIZON_SECONDS = 31 * 86400
"""A dedupe horizon longer than the late limit (30 d + 1 h of grace).

With it, a repeated event id is a duplicate whenever its first copy was
applied, however far the watermark moved in between. A test whose result must
not depend on how the workers interleave the partitions runs the workers and
the reference with it: a worker running ahead on its partitions can move the
watermark by days of event time before a repeat, which follows its first copy
on their own partition, arrives.
"""


ACQUIRED = re.compile(r"\[(\d+)\] \[INFO\] kpi state acquired applied_offset=(-?\d+)")
SYNCED = re.compile(
    r"\[(\d+)\] \[INFO\] Successfully synced group \S+ with generation (\d+)"
)


def simulated_log(
    seed: int, events: int, days: float, late_rate: float
) -> list[simulator.SimulatedRecord]:
    """Return a seeded log with duplicates, out-of-order and invalid records."""
    options = simulator.SimulationOptions(
        seed=seed,
        events=events,
        density=events / (days * 86400),
        start=datetime.now(UTC) - timedelta(days=days),
        duplicate_rate=0.02,
        out_of_order_rate=0.05,
        late_rate=late_rate,
        invalid_rate=0.01,
    )
    return list(simulator.generate(options))


def production_order(
    records: list[simulator.SimulatedRecord], settings: Settings
) -> list[Event]:
    """Return the valid events of a log in the order it is produced."""
    now = datetime.now(UTC)
    events: list[Event] = []
    for record in records:
        try:
            events.append(decode(record.value, settings, now))
        except InvalidEventError:
            continue
    return events


def with_long_horizon(run: WorkerRun, settings: Settings) -> Settings:
    """Give a run's workers `LONG_HORIZON_SECONDS`; return the reference's settings."""
    run.environment["CRM_DEDUPE_HORIZON_SECONDS"] = str(LONG_HORIZON_SECONDS)
    return settings.model_copy(update={"dedupe_horizon_seconds": LONG_HORIZON_SECONDS})


def sibling_run(run: WorkerRun, name: str) -> WorkerRun:
    """Return a run like `run` with topics, app id and Redis keys of its own."""
    suffix = uuid.uuid4().hex[:8]
    environment = {
        key: value.replace(run.suffix, suffix) if key.startswith("CRM_") else value
        for key, value in run.environment.items()
    }
    return replace(
        run,
        suffix=suffix,
        environment=environment,
        log=run.log.with_name(f"{name}.log"),
        processes=[],
    )


@dataclass(frozen=True)
class AdmittedRecord:
    """One record of the admitted topic: a batch forwarded by the ingest stage."""

    offset: int
    events: list[AdmittedEvent]


async def admitted_records(bootstrap: str, run: WorkerRun) -> list[AdmittedRecord]:
    """Read the whole admitted topic of a run, in offset order."""
    return await read_admitted(bootstrap, run.environment["CRM_APP_ID"])


async def read_admitted(bootstrap: str, app_id: str) -> list[AdmittedRecord]:
    """Read the single-partition admitted topic of an app to its end, with offsets."""
    tp = TopicPartition(f"{app_id}-admitted", 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records: list[AdmittedRecord] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for message in batch.get(tp, []):
                value = AdmittedBatch.model_validate_json(message.value)
                records.append(AdmittedRecord(message.offset, value.events))
        return records
    finally:
        await consumer.stop()


async def ingested(bootstrap: str, run: WorkerRun, partitions: int) -> bool:
    """Tell whether the ingest stage has forwarded every record of the events topic.

    The stage acknowledges a batch only once the broker has what it forwarded,
    so a committed offset at the end of every partition means nothing more is
    on its way to the admitted topic.
    """
    tps = [TopicPartition(run.events_topic, p) for p in range(partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(
            run.environment["CRM_APP_ID"], partitions=tps
        )
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    return all(tp in committed and committed[tp].offset == ends[tp] for tp in tps)


def split_copies(records: list[AdmittedRecord]) -> tuple[list[Event], list[Event]]:
    """Split the arrival order into first copies and copies forwarded again.

    After a crash or a rebalance the ingest stage forwards again the source
    records (events-topic partition and offset) it read since its last
    commit; each keeps its first place among the first copies.
    """
    seen: set[tuple[int, int]] = set()
    first: list[Event] = []
    again: list[Event] = []
    for record in records:
        for admitted in record.events:
            source = (admitted.partition, admitted.offset)
            if source in seen:
                again.append(admitted.event)
            else:
                seen.add(source)
                first.append(admitted.event)
    return first, again


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Return every sample of `name` in an exposition text, by label set."""
    found: dict[frozenset[tuple[str, str]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[frozenset(sample.labels.items())] = float(sample.value)
    return found


def events_seen(text: str, outcome: str | None = None) -> int:
    """Count the valid events a worker's KPI stage took, of one outcome or all."""
    return int(
        sum(
            value
            for labels, value in samples(text, "crm_events_total").items()
            if outcome is None or ("outcome", outcome) in labels
        )
    )


def kpis_from_listing(body: bytes) -> dict[SeriesKey, float]:
    """Read every value of a `GET /kpis` response; a key with no value is absent."""
    listing = KpiListing.model_validate_json(body)
    return {
        (series.id, value.window, value.dimension_value): value.value
        for kpi in listing.kpis
        for series in kpi.series
        for value in series.values
        if value.value is not None
    }


def served_kpis(port: int) -> dict[SeriesKey, float]:
    """Return the KPI values a worker answers on `GET /kpis`."""
    response = httpx.get(f"http://127.0.0.1:{port}/kpis", timeout=10)
    response.raise_for_status()
    return kpis_from_listing(response.content)


def acquisitions(run: WorkerRun) -> dict[int, list[int]]:
    """Return the offsets each worker process restored its KPI state at, by pid."""
    found: dict[int, list[int]] = {}
    for pid, offset in ACQUIRED.findall(run.log.read_text(errors="replace")):
        found.setdefault(int(pid), []).append(int(offset))
    return found


def synced_generations(run: WorkerRun) -> dict[int, int]:
    """Return the last consumer-group generation each worker process synced."""
    found: dict[int, int] = {}
    for pid, generation in SYNCED.findall(run.log.read_text(errors="replace")):
        found[int(pid)] = int(generation)
    return found


async def eventually(
    condition: Callable[[], Awaitable[bool]],
    timeout: float,
    what: Callable[[], str],
    interval: float = 0.5,
) -> None:
    """Await `condition()` until it is true; fail naming `what()` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what()}")


def lead_events(start: datetime, created: int, converted: int) -> list[bytes]:
    """Return `created` new leads, the first `converted` of them converted."""
    records = []
    for number in range(created):
        records.append(
            orjson.dumps(
                {
                    "event_id": f"created-{number}",
                    "type": "lead.created",
                    "occurred_at": (start + timedelta(seconds=30 * number)).isoformat(),
                    "schema_version": 1,
                    "lead_id": f"lead-{number}",
                    "channel": "organic",
                }
            )
        )
    for number in range(converted):
        records.append(
            orjson.dumps(
                {
                    "event_id": f"converted-{number}",
                    "type": "lead.converted",
                    "occurred_at": (start + timedelta(minutes=20 + number)).isoformat(),
                    "schema_version": 1,
                    "lead_id": f"lead-{number}",
                    "customer_id": f"customer-{number}",
                    "channel": "organic",
                }
            )
        )
    return records
