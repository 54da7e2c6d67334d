"""Helpers for end-to-end tests of the snapshot feeds: topic, Redis and HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis import Redis

from schemas.kpis import KpiSnapshot, snapshot_key
from stream import simulator
from stream.catalogue import SeriesKey, all_keys
from stream.snapshots import watermark_datetime
from tests.integration.conftest import (
    WorkerRun,
    kpi_differences,
    metric_value,
    produce,
)
from tests.reference import ReferenceResult

SERIES_KEYS: dict[str, SeriesKey] = {snapshot_key(*key): key for key in all_keys()}
"""Every snapshot key of the catalogue, with its series key."""


@dataclass(frozen=True)
class TopicRecord:
    """One record of the KPI topic: its snapshot and its Kafka timestamp."""

    offset: int
    timestamp_ms: int
    snapshot: KpiSnapshot


def simulate(
    seed: int, events: int, days: float, start: datetime | None = None
) -> list[simulator.SimulatedRecord]:
    """Return a seeded log of every event type and fault.

    It starts at `start`, or `days` before now so that it ends about now. The
    simulator's daily curve follows the time of day, so only a fixed start
    gives the same event times, and so the same KPIs, on every run.
    """
    options = simulator.SimulationOptions(
        seed=seed,
        events=events,
        density=events / (days * 86400),
        start=start or datetime.now(UTC) - timedelta(days=days),
        duplicate_rate=0.02,
        out_of_order_rate=0.05,
        late_rate=0.005,
        invalid_rate=0.01,
    )
    return list(simulator.generate(options))


async def produce_records(
    bootstrap: str, topic: str, records: list[simulator.SimulatedRecord]
) -> None:
    """Produce simulated records with their keys; wait until Kafka has them."""
    await produce(
        bootstrap,
        topic,
        [record.value for record in records],
        [record.key for record in records],
    )


def event_types(records: list[simulator.SimulatedRecord]) -> set[str]:
    """Return the event types a log holds."""
    return {r.event_type for r in records if r.event_type is not None}


def events_seen(text: str, types: set[str]) -> int:
    """Return how many valid events a worker's /metrics says it has admitted."""
    return int(
        sum(
            metric_value(text, "crm_events_total", {"type": t, "outcome": o}) or 0
            for t in types
            for o in ("applied", "duplicate", "late")
        )
    )


async def read_kpi_topic(bootstrap: str, topic: str) -> list[TopicRecord]:
    """Read every record the KPI topic holds now, in offset order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        assert partitions == {0}, f"topic {topic} has partitions {partitions}"
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records: list[TopicRecord] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for message in batch.get(tp, []):
                assert message.value is not None, f"tombstone at {message.offset}"
                snapshot = KpiSnapshot.model_validate_json(message.value)
                assert message.key == snapshot.key.encode()
                records.append(TopicRecord(message.offset, message.timestamp, snapshot))
        return records
    finally:
        await consumer.stop()


def latest_per_key(records: list[TopicRecord]) -> dict[str, KpiSnapshot]:
    """Return what a compacted topic keeps: the last snapshot of every key."""
    return {record.snapshot.key: record.snapshot for record in records}


def redis_latest(url: str, prefix: str) -> dict[str, KpiSnapshot]:
    """Return the snapshots of the Redis hash `{prefix}:latest` (docs/feeds.md)."""
    client = Redis.from_url(url, socket_timeout=5)
    try:
        stored: dict[bytes, bytes] = client.hgetall(f"{prefix}:latest")  # type: ignore[assignment]
    finally:
        client.close()
    return {
        field.decode(): KpiSnapshot.model_validate_json(body)
        for field, body in stored.items()
    }


def served(run: WorkerRun) -> dict[str, dict[str, Any]]:
    """Return every value of `GET /kpis`, by snapshot key."""
    response = httpx.get(f"{run.base_url}/kpis", timeout=10)
    response.raise_for_status()
    return {
        value["key"]: value
        for kpi in response.json()["kpis"]
        for series in kpi["series"]
        for value in series["values"]
    }


def as_served(snapshot: KpiSnapshot) -> dict[str, Any]:
    """Return the fields `GET /kpis` shows of a snapshot, as its JSON has them."""
    body = snapshot.model_dump(mode="json")
    return {
        "key": body["key"],
        "window": body["window"],
        "dimension_value": body["dimension_value"],
        "value": body["value"],
        "watermark": body["watermark"],
        "computed_at": body["computed_at"],
        "definition_version": body["definition_version"],
    }


def series_values(
    snapshots: dict[str, KpiSnapshot],
) -> dict[SeriesKey, float]:
    """Return the values of snapshots by series key, leaving out null ones."""
    return {
        SERIES_KEYS[key]: snapshot.value
        for key, snapshot in snapshots.items()
        if snapshot.value is not None
    }


def differing(left: dict[str, KpiSnapshot], right: dict[str, KpiSnapshot]) -> list[str]:
    """List the keys whose snapshots differ between two feeds, either way."""
    return sorted(
        key for key in set(left) | set(right) if left.get(key) != right.get(key)
    )


def redis_differences(run: WorkerRun, redis_url: str) -> list[str]:
    """List the keys whose snapshot in Redis is not what `GET /kpis` shows."""
    in_redis = redis_latest(redis_url, run.environment["CRM_REDIS_PREFIX"])
    on_http = served(run)
    return sorted(
        key
        for key in set(on_http) | set(in_redis)
        if key not in in_redis
        or key not in on_http
        or on_http[key] != as_served(in_redis[key])
    )


def served_differences(run: WorkerRun, expected: ReferenceResult) -> list[str]:
    """List where `GET /kpis` departs from the reference, watermarks included.

    Each value must equal the reference's and carry the watermark the
    reference ends at.
    """
    assert expected.watermark_ms is not None
    final = watermark_datetime(expected.watermark_ms)
    on_http = served(run)
    values = {
        SERIES_KEYS[key]: value["value"]
        for key, value in on_http.items()
        if value["value"] is not None
    }
    return kpi_differences(values, expected.values) + [
        f"{key}: watermark {value['watermark']}, expected {final}"
        for key, value in on_http.items()
        if value["watermark"] is None
        or datetime.fromisoformat(value["watermark"]) != final
    ]
