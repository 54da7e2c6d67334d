"""Snapshot feeds against the real local Kafka and Redis, outage of Redis included."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from schemas.kpis import KpiSnapshot
from stream import stack
from stream.catalogue import SeriesKey
from stream.errors import SettingsError
from stream.settings import Settings
from stream.sinks import FeedMetrics, KafkaSink, RedisSink
from stream.snapshots import build_snapshot
from stream.web import SnapshotReader
from tests.integration.conftest import consume_all

WATERMARK = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def settings() -> Iterator[Settings]:
    """Settings of the local stack with a topic and Redis names of this test only.

    A missing service fails the test: integration tests never skip.
    """
    base = Settings()
    kafka_port = int(base.kafka_bootstrap.split(",")[0].rpartition(":")[2])
    missing = [
        name
        for name, port in (("kafka", kafka_port), ("redis", base.redis_port))
        if not _answers(port)
    ]
    if missing:
        pytest.fail(
            f"local stack not running ({', '.join(missing)}); start it with"
            " `crm-kpi stack up`"
        )
    suffix = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "kpi_topic": f"crm-kpis-sinks-{suffix}",
            "redis_prefix": f"crm-test-{suffix}:kpi",
            "redis_channel": f"crm-test-{suffix}:changes",
        }
    )
    yield settings
    asyncio.run(_clean(settings))


async def _clean(settings: Settings) -> None:
    """Delete the test's topic and Redis hash, whichever exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        if settings.kpi_topic in await admin.list_topics():
            await admin.delete_topics([settings.kpi_topic])
    finally:
        await admin.close()
    client = Redis.from_url(settings.redis_url)
    try:
        await client.delete(f"{settings.redis_prefix}:latest")
    finally:
        await client.aclose()


def snap(key: SeriesKey, value: float | None, minute: int = 0) -> KpiSnapshot:
    moment = WATERMARK.replace(minute=minute)
    return build_snapshot(key, value, moment, moment, "EUR")


LEADS = ("lead_volume", "1h", None)
MARGIN = ("margin", "month", None)
COMPLAINTS = ("complaints", "day", "billing")


async def topic_config(bootstrap: str, topic: str, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})
        response = (await admin.describe_configs([resource]))[0].to_object()
    finally:
        await admin.close()
    entries = response["resources"][0]["config_entries"]
    return str(next(e["config_value"] for e in entries if e["config_names"] == name))


async def test_kafka_sink_creates_a_compacted_topic(settings: Settings) -> None:
    sink = KafkaSink(settings, FeedMetrics(CollectorRegistry()))

    await sink.start()
    await sink.stop()

    policy = await topic_config(
        settings.kafka_bootstrap, settings.kpi_topic, "cleanup.policy"
    )
    assert policy == "compact"


async def test_kafka_sink_writes_snapshots_keyed_by_snapshot_key(
    settings: Settings,
) -> None:
    registry = CollectorRegistry()
    sink = KafkaSink(settings, FeedMetrics(registry))
    await sink.start()
    try:
        await sink.publish([snap(LEADS, 12.0), snap(MARGIN, 1500.25)])
        await sink.publish([snap(COMPLAINTS, None)])
    finally:
        await sink.stop()

    records = await consume_all(settings.kafka_bootstrap, settings.kpi_topic, 3)

    assert [key for key, _ in records] == [
        b"lead_volume|1h|",
        b"margin|month|",
        b"complaints|day|billing",
    ]
    bodies = [json.loads(value) for _, value in records]
    assert [(b["kpi"], b["value"], b["currency"]) for b in bodies] == [
        ("lead_conversion", 12.0, None),
        ("margin", 1500.25, "EUR"),
        ("complaints", None, None),
    ]
    assert bodies[1]["watermark"] == "2026-05-04T10:00:00Z"
    assert (
        registry.get_sample_value("crm_snapshots_published_total", {"sink": "kafka"})
        == 3.0
    )


async def test_kafka_sink_refuses_a_topic_that_is_not_compacted(
    settings: Settings,
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    settings.kpi_topic, 1, 1, topic_configs={"cleanup.policy": "delete"}
                )
            ]
        )
    finally:
        await admin.close()
    sink = KafkaSink(settings, FeedMetrics(CollectorRegistry()))

    with pytest.raises(SettingsError, match=r"cleanup\.policy='delete'"):
        await sink.start()


async def test_reader_ends_with_the_latest_snapshot_of_every_key(
    settings: Settings,
) -> None:
    sink = KafkaSink(settings, FeedMetrics(CollectorRegistry()))
    reader = SnapshotReader(settings)
    await sink.start()
    try:
        await sink.publish([snap(LEADS, 1.0, 1), snap(MARGIN, 10.0, 1)])
        await sink.publish([snap(LEADS, 2.0, 2)])
        await sink.publish([snap(LEADS, 3.0, 3)])

        await reader.start()
        assert await reader.wait_caught_up(30)
        before = {key: s.value for key, s in reader.latest().items()}

        with reader.subscribe() as subscription:
            await sink.publish([snap(MARGIN, 11.5, 4)])
            changed = await subscription.next(30)
        after = {key: s.value for key, s in reader.latest().items()}
    finally:
        await reader.stop()
        await sink.stop()

    assert before == {"lead_volume|1h|": 3.0, "margin|month|": 10.0}
    assert changed is not None
    assert [(s.key, s.value) for s in changed] == [("margin|month|", 11.5)]
    assert after == {"lead_volume|1h|": 3.0, "margin|month|": 11.5}


async def test_redis_sink_keeps_the_latest_and_announces_changes(
    settings: Settings,
) -> None:
    registry = CollectorRegistry()
    sink = RedisSink(settings, FeedMetrics(registry))
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    subscriber = client.pubsub()
    await subscriber.subscribe(settings.redis_channel)
    await sink.start()
    try:
        await sink.publish([snap(LEADS, 5.0, 1), snap(MARGIN, 99.5, 1)])
        await sink.publish([snap(LEADS, 6.0, 2)])

        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(messages) < 3 and time.monotonic() < deadline:
            message = await subscriber.get_message(
                ignore_subscribe_messages=True, timeout=1.0
            )
            if message is not None:
                messages.append(json.loads(message["data"]))
        stored = await client.hgetall(f"{settings.redis_prefix}:latest")
    finally:
        await sink.stop()
        await subscriber.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()

    assert [(m["key"], m["value"]) for m in messages] == [
        ("lead_volume|1h|", 5.0),
        ("margin|month|", 99.5),
        ("lead_volume|1h|", 6.0),
    ]
    assert {key: json.loads(body)["value"] for key, body in stored.items()} == {
        "lead_volume|1h|": 6.0,
        "margin|month|": 99.5,
    }
    assert registry.get_sample_value("crm_redis_up") == 1.0
    assert registry.get_sample_value("crm_redis_errors_total") == 0.0


async def test_redis_outage_loses_no_latest_snapshot(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stream.sinks")
    registry = CollectorRegistry()
    sink = RedisSink(settings, FeedMetrics(registry), retry_seconds=0.05)
    latest_key = f"{settings.redis_prefix}:latest"
    await sink.start()
    await sink.publish([snap(LEADS, 1.0), snap(MARGIN, 10.0)])

    stack.stop_service(settings, "redis")
    try:
        slowest = 0.0
        for step in range(1, 21):
            started = time.monotonic()
            await sink.publish([snap(LEADS, 1.0 + step), snap(COMPLAINTS, float(step))])
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.06)
        errors_while_down = registry.get_sample_value("crm_redis_errors_total")
        up_while_down = registry.get_sample_value("crm_redis_up")
        backlog_while_down = sink.backlog
    finally:
        stack.start_service(settings, "redis")

    deadline = time.monotonic() + 30
    while sink.backlog and time.monotonic() < deadline:
        await sink.publish([])
        await asyncio.sleep(0.1)
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        stored = await client.hgetall(latest_key)
    finally:
        await client.aclose()
        await sink.stop()

    assert {key: json.loads(body)["value"] for key, body in stored.items()} == {
        "lead_volume|1h|": 21.0,
        "margin|month|": 10.0,
        "complaints|day|billing": 20.0,
    }
    assert errors_while_down is not None and errors_while_down >= 10
    assert up_while_down == 0.0
    assert backlog_while_down == 2
    assert slowest < 1.0
    assert registry.get_sample_value("crm_redis_up") == 1.0
    assert registry.get_sample_value("crm_snapshot_backlog", {"sink": "redis"}) == 0.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("redis unreachable")
    assert any(
        r.getMessage().startswith("redis reachable again") for r in caplog.records
    )


def _lose_redis_data(settings: Settings) -> None:
    """Restart Redis empty, as one without persistence comes back."""
    stack.stop_service(settings, "redis")
    try:
        _redis_dump(settings).unlink(missing_ok=True)
    finally:
        stack.start_service(settings, "redis")


def _redis_dump(settings: Settings) -> Path:
    """Return the file the stack's Redis writes its data to as it stops."""
    return stack.Layout.of(settings).data_dir("redis") / "dump.rdb"


async def _stored_values(settings: Settings) -> dict[str, float | None]:
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        stored = await client.hgetall(f"{settings.redis_prefix}:latest")
    finally:
        await client.aclose()
    return {str(key): json.loads(body)["value"] for key, body in stored.items()}


async def test_redis_back_empty_after_an_outage_gets_every_key_again(
    settings: Settings,
) -> None:
    registry = CollectorRegistry()
    sink = RedisSink(settings, FeedMetrics(registry), retry_seconds=0.05)
    await sink.start()
    await sink.publish([snap(LEADS, 1.0), snap(MARGIN, 10.0)])

    stack.stop_service(settings, "redis")
    try:
        _redis_dump(settings).unlink(missing_ok=True)
        await sink.publish([snap(COMPLAINTS, 3.0)])
        backlog_while_down = sink.backlog
    finally:
        stack.start_service(settings, "redis")

    deadline = time.monotonic() + 10
    while sink.backlog and time.monotonic() < deadline:
        await asyncio.sleep(0.06)
        await sink.publish([])
    try:
        stored = await _stored_values(settings)
    finally:
        await sink.stop()

    assert backlog_while_down == 1
    assert stored == {
        "lead_volume|1h|": 1.0,
        "margin|month|": 10.0,
        "complaints|day|billing": 3.0,
    }


async def test_an_idle_redis_sink_notices_a_restart_and_writes_every_key_again(
    settings: Settings,
) -> None:
    registry = CollectorRegistry()
    sink = RedisSink(settings, FeedMetrics(registry), retry_seconds=0.05)
    await sink.start()
    await sink.publish([snap(LEADS, 1.0), snap(MARGIN, 10.0)])

    _lose_redis_data(settings)
    emptied = await _stored_values(settings)
    deadline = time.monotonic() + 10
    stored: dict[str, float | None] = {}
    try:
        while len(stored) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.06)
            await sink.publish([])
            stored = await _stored_values(settings)
    finally:
        await sink.stop()

    assert emptied == {}
    assert stored == {"lead_volume|1h|": 1.0, "margin|month|": 10.0}
    assert registry.get_sample_value("crm_redis_errors_total") == 1.0
    assert registry.get_sample_value("crm_redis_up") == 1.0
