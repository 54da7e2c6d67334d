"""Integration tests of the local stack: the three services answer for real.

They run against the stack `.ci/run` starts (`stack.up`); a service that is
missing fails its test, it is never skipped.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid

import httpx
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream import stack
from stream.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def settings() -> Settings:
    return Settings()


async def test_kafka_metadata_lists_the_one_broker(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{settings.kafka_port}")
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()

    assert cluster["brokers"] == [
        {"node_id": 1, "host": "127.0.0.1", "port": settings.kafka_port, "rack": None}
    ]
    assert cluster["controller_id"] == 1


async def test_kafka_round_trips_records_through_a_consumer_group(
    settings: Settings,
) -> None:
    bootstrap = f"127.0.0.1:{settings.kafka_port}"
    topic = f"stack-test-{uuid.uuid4().hex[:12]}"
    group = f"{topic}-group"
    sent = {f"key-{i}": f"value-{i}" for i in range(30)}

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=3, replication_factor=1)]
        )
        # CreateTopics returns once the controller committed the topic; the
        # broker's metadata cache may learn of it a moment later.
        partitions: list[int] = []
        for _ in range(50):
            described = await admin.describe_topics([topic])
            partitions = sorted(p["partition"] for p in described[0]["partitions"])
            if partitions:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    assert partitions == [0, 1, 2]

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in sent.items():
            await producer.send_and_wait(topic, value.encode(), key=key.encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: dict[str, str] = {}
    try:
        for _ in range(30):
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    received[record.key.decode()] = record.value.decode()
            if len(received) == len(sent):
                break
        await consumer.commit()
        committed = [
            await consumer.committed(TopicPartition(topic, p)) for p in (0, 1, 2)
        ]
    finally:
        await consumer.stop()

    assert received == sent
    assert sum(offset or 0 for offset in committed) == 30


def test_redis_answers_ping(settings: Settings) -> None:
    client = redis.Redis(host="127.0.0.1", port=settings.redis_port)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_prometheus_is_ready(settings: Settings) -> None:
    response = httpx.get(f"http://127.0.0.1:{settings.prometheus_port}/-/ready")

    assert response.status_code == 200
    assert response.text.strip() == "Prometheus Server is Ready."


def test_prometheus_scrapes_the_worker_addresses(settings: Settings) -> None:
    # Prometheus 2.x hands discovered targets to the scrape manager at most every
    # 5 s, so a server that has just become ready may list none yet.
    urls: list[str] = []
    deadline = time.monotonic() + 15
    while not urls and time.monotonic() < deadline:
        response = httpx.get(
            f"http://127.0.0.1:{settings.prometheus_port}/api/v1/targets",
            params={"state": "active"},
        )
        targets = response.json()["data"]["activeTargets"]
        urls = sorted(
            t["scrapeUrl"] for t in targets if t["labels"]["job"] == "crm-kpi-stream"
        )
        time.sleep(0.5)

    assert urls == [
        f"http://{address}/metrics" for address in sorted(settings.prometheus_targets)
    ]


def test_rendered_prometheus_config_passes_promtool(settings: Settings) -> None:
    config = stack.Layout.of(settings).config_file("prometheus")

    result = subprocess.run(
        ["promtool", "check", "config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_status_sees_each_service_as_the_stacks_own(settings: Settings) -> None:
    layout = stack.Layout.of(settings)

    current = stack.status(settings)

    assert [s.state for s in current.services] == ["up", "up", "up"]
    for service in current.services:
        recorded = int(layout.pid_file(service.name).read_text())
        assert service.pid == recorded


def test_up_again_leaves_the_running_services_alone(settings: Settings) -> None:
    before = stack.status(settings)
    assert before.healthy

    after = stack.up(settings)

    assert after.started == ()
    assert [s.pid for s in after.services] == [s.pid for s in before.services]


def test_restarted_redis_is_a_new_process_that_kept_its_keys(
    settings: Settings,
) -> None:
    key = f"stack-test:{uuid.uuid4().hex}"
    client = redis.Redis(host="127.0.0.1", port=settings.redis_port)
    old_pid = stack.status(settings).service("redis").pid
    client.set(key, "kept")

    restarted = stack.restart_service(settings, "redis")

    try:
        assert restarted.state == "up", restarted
        assert restarted.pid is not None and restarted.pid != old_pid, restarted
        assert client.get(key) == b"kept"
    finally:
        client.delete(key)
        client.close()
