"""Integration tests of replay and simulate against the local Kafka broker.

Records go into a fresh topic and are read back with a plain consumer: same
bytes, same count, each key on the partition Kafka's default partitioner picks
and in its original order. Kafka must be up: these tests fail, never skip,
when it is not.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from stream.errors import CrmKpiError, TopicError
from stream.producer import record_key
from stream.replay import ReplayError, replay
from stream.settings import Settings
from stream.simulator import SimulationOptions, generate, produce, write_jsonl

pytestmark = pytest.mark.integration

Consumed = list[tuple[int, bytes | None, bytes]]


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    """Settings naming a topic of this test alone; the topic is deleted after.

    Only Kafka is needed here. When it does not answer the test fails, so that a
    broken stack cannot pass unnoticed.
    """
    base = Settings()
    host, _, port = base.kafka_bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError as exc:
        pytest.fail(
            f"kafka at {base.kafka_bootstrap} does not answer ({exc}); start it"
            " with `crm-kpi stack up`"
        )

    topic = f"replay-test-{uuid.uuid4().hex[:12]}"
    yield base.model_copy(update={"events_topic": topic, "events_partitions": 4})

    admin = AIOKafkaAdminClient(bootstrap_servers=base.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def read_back(settings: Settings, expected: int, timeout: float = 60) -> Consumed:
    """Read the events topic from the start: partition, key and value of each."""
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: Consumed = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                records.extend((m.partition, m.key, m.value) for m in messages)
        # Anything beyond the expected count would be a duplicate: look once more.
        batches = await consumer.getmany(timeout_ms=1000)
        for messages in batches.values():
            records.extend((m.partition, m.key, m.value) for m in messages)
    finally:
        await consumer.stop()
    return records


def in_key_order(records: list[tuple[bytes | None, bytes]]) -> dict[bytes, list[bytes]]:
    """Group values by key, keeping their order."""
    grouped: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in records:
        if key is not None:
            grouped[key].append(value)
    return dict(grouped)


def assert_default_partitions(consumed: Consumed, partitions: int) -> None:
    for partition, key, _ in consumed:
        if key is not None:
            assert partition == (murmur2(key) & 0x7FFFFFFF) % partitions


async def test_replay_sends_every_line_byte_for_byte(
    settings: Settings, tmp_path: Path
) -> None:
    options = SimulationOptions(
        seed=21,
        events=2000,
        start=datetime(2025, 5, 1, tzinfo=UTC),
        duplicate_rate=0.02,
        out_of_order_rate=0.02,
        late_rate=0.01,
        invalid_rate=0.03,
    )
    values = [record.value for record in generate(options)]
    path = tmp_path / "events.jsonl"
    # Blank lines, one made of spaces, and a Windows line end are tolerated.
    lines = [b"", *values[:10], b"   ", *values[10:], b""]
    lines[5] += b"\r"
    path.write_bytes(b"\n".join(lines) + b"\n")

    summary = await replay(path, settings, rate=None, progress=False)

    consumed = await read_back(settings, expected=2000)
    assert len(consumed) == 2000
    assert Counter(value for _, _, value in consumed) == Counter(values)
    assert all(key == record_key(value) for _, key, value in consumed)
    expected_keys = [(record_key(value), value) for value in values]
    assert in_key_order([(k, v) for _, k, v in consumed]) == in_key_order(expected_keys)
    assert_default_partitions(consumed, partitions=4)
    assert (summary.records, summary.skipped_lines) == (2000, 3)
    assert summary.bytes == sum(len(value) for value in values)


async def test_simulated_stream_lands_on_the_topic_byte_for_byte(
    settings: Settings,
) -> None:
    options = SimulationOptions(
        seed=22,
        events=3000,
        start=datetime(2025, 6, 1, tzinfo=UTC),
        duplicate_rate=0.02,
        invalid_rate=0.02,
    )
    expected = [(record.key, record.value) for record in generate(options)]

    summary = await produce(generate(options), settings, rate=None, progress=False)

    consumed = await read_back(settings, expected=3000)
    assert Counter((key, value) for _, key, value in consumed) == Counter(expected)
    assert in_key_order([(k, v) for _, k, v in consumed]) == in_key_order(expected)
    assert summary.records == 3000
    assert summary.by_kind["duplicate"] + summary.by_kind["valid"] > 2800


async def test_replay_keeps_to_the_given_rate(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    options = SimulationOptions(
        seed=23, events=100, start=datetime(2025, 6, 1, tzinfo=UTC)
    )
    write_jsonl(generate(options), path)

    summary = await replay(path, settings, rate=200.0, progress=False)

    # 100 records at 200/s: the last leaves half a second after the first.
    assert summary.records == 100
    assert 0.45 <= summary.elapsed_seconds < 5
    assert len(await read_back(settings, expected=100)) == 100


async def test_replay_of_a_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"

    with pytest.raises(ReplayError, match=re.escape("nowhere.jsonl")):
        await replay(missing, Settings(), rate=None, progress=False)


async def test_unreachable_kafka_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_bytes(b'{"event_id": "e-1"}\n')
    nowhere = Settings(kafka_bootstrap="127.0.0.1:1")

    with pytest.raises(TopicError, match=re.escape("127.0.0.1:1")) as caught:
        await replay(path, nowhere, rate=None, progress=False)

    assert isinstance(caught.value, CrmKpiError)
