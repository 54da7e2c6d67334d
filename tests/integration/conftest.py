"""Fixtures for tests against the real local stack: Kafka, Redis, Prometheus."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """Settings of the running local stack; fail when a service is down.

    Integration tests never skip: a missing service is a failure, so that a
    broken stack cannot pass CI unnoticed.
    """
    settings = Settings()
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    missing = [
        name
        for name, ok in (
            ("kafka", _answers(host, int(port))),
            ("redis", _answers("127.0.0.1", settings.redis_port)),
            ("prometheus", _answers("127.0.0.1", settings.prometheus_port)),
        )
        if not ok
    ]
    if missing:
        pytest.fail(
            f"local stack not running ({', '.join(missing)}); start it with"
            " `crm-kpi stack up` or run the tests with `make test`"
        )
    return settings


@dataclass
class WorkerRun:
    """A worker process of this project with its own app id and topics."""

    suffix: str
    port: int
    environment: dict[str, str]
    log: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def events_topic(self) -> str:
        return self.environment["CRM_EVENTS_TOPIC"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> subprocess.Popen[bytes]:
        """Start one more worker process (another web port for a second one)."""
        environment = dict(self.environment)
        environment["CRM_WEB_PORT"] = str(port or self.port)
        environment["CRM_DATA_DIR"] = str(
            self.log.parent / f"data-{len(self.processes)}"
        )
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker", "--loglevel", "info"],
                cwd=ROOT,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        wait_until(
            lambda: _answers("127.0.0.1", port or self.port),
            timeout=60,
            what=f"worker web server on port {port or self.port} (log: {self.log})",
        )
        return process

    def stop(self, process: subprocess.Popen[bytes], kill: bool = False) -> None:
        """Stop a worker: SIGTERM and wait, or SIGKILL to simulate a crash."""
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def metrics_text(self, port: int | None = None) -> str:
        url = f"http://127.0.0.1:{port or self.port}/metrics"
        return httpx.get(url, timeout=10).text


def wait_until(
    condition: object, timeout: float, what: str, interval: float = 0.25
) -> None:
    """Poll `condition()` until it is true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def worker_run(stack_settings: Settings, tmp_path: Path) -> Iterator[WorkerRun]:
    """A worker environment with fresh topics; stops its workers afterwards."""
    suffix = uuid.uuid4().hex[:8]
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("CRM_")
    }
    environment.update(
        {
            "CRM_KAFKA_BOOTSTRAP": stack_settings.kafka_bootstrap,
            "CRM_REDIS_URL": stack_settings.redis_url,
            "CRM_APP_ID": f"crm-kpi-test-{suffix}",
            "CRM_EVENTS_TOPIC": f"crm-events-{suffix}",
            "CRM_DEAD_LETTER_TOPIC": f"crm-events-dead-{suffix}",
            "CRM_LATE_TOPIC": f"crm-events-late-{suffix}",
            "CRM_KPI_TOPIC": f"crm-kpis-{suffix}",
            "CRM_REDIS_PREFIX": f"crm-test-{suffix}:kpi",
            "CRM_REDIS_CHANNEL": f"crm-test-{suffix}:changes",
            "CRM_CHECKPOINT_INTERVAL_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    run = WorkerRun(
        suffix=suffix,
        # The port the local Prometheus scrapes (CRM_PROMETHEUS_TARGETS).
        port=stack_settings.web_port,
        environment=environment,
        log=tmp_path / "worker.log",
    )
    yield run
    for process in run.processes:
        run.stop(process)


async def produce(
    bootstrap: str, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None]
) -> None:
    """Produce records to a topic and wait until the broker has them all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key)
            for value, key in zip(values, keys, strict=True)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 60
) -> list[tuple[bytes | None, bytes]]:
    """Read a topic from the start until `expected` records or `timeout`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                records.extend((m.key, m.value) for m in messages)
    finally:
        await consumer.stop()
    return records


async def read_to_end(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Read every record a topic holds now, partition by partition in offset order."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[tuple[bytes | None, bytes]] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records.extend((m.key, m.value) for m in batch.get(tp, []))
        return records
    finally:
        await consumer.stop()


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create a topic with `partitions` partitions, as a user of the product would."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def metric_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    """Return the sample of `name` with exactly `labels` in an exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def prometheus_query(url: str, query: str) -> list[dict[str, object]]:
    """Run an instant query through Prometheus's HTTP API; return its vector."""
    response = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


@pytest.fixture
async def kafka_topic_factory(
    stack_settings: Settings,
) -> AsyncIterator[object]:
    """Create topics for a test (names are unique per test run)."""

    async def make(name: str, partitions: int) -> str:
        await create_topic(stack_settings.kafka_bootstrap, name, partitions)
        return name

    yield make


def kpis_from_metrics(
    text: str, currency: str
) -> dict[tuple[str, str, str | None], float]:
    """Read every KPI series of the catalogue out of an exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    from stream.catalogue import SERIES, Unit, all_keys

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    values: dict[tuple[str, str, str | None], float] = {}
    for key in all_keys():
        series_id, window, dimension_value = key
        kpi, series = SERIES[series_id]
        labels = {"window": window}
        if kpi.dimension is not None and dimension_value is not None:
            labels[kpi.dimension] = dimension_value
        if series.unit is Unit.MONEY:
            labels["currency"] = currency
        found = samples.get((series.metric, frozenset(labels.items())))
        if found is not None:
            values[key] = found
    return values


PERCENTILE_SERIES = {"sales_cycle_median", "sales_cycle_p90", "sales_cycle_mean"}


def kpi_differences(
    actual: dict[tuple[str, str, str | None], float],
    expected: dict[tuple[str, str, str | None], float | None],
) -> list[str]:
    """List where `actual` (absent = no value) departs from the reference.

    Counts must be equal; sums and ratios equal to 1e-9 relative (float
    rounding of the same exact figures); sales-cycle statistics within 1 %.
    """
    import math

    problems = []
    for key, want in expected.items():
        got = actual.get(key)
        if want is None or got is None:
            if want is not got:
                problems.append(f"{key}: expected {want}, got {got}")
            continue
        tolerance = 0.01 if key[0] in PERCENTILE_SERIES else 1e-9
        if not math.isclose(got, want, rel_tol=tolerance, abs_tol=1e-9):
            problems.append(f"{key}: expected {want}, got {got}")
    return problems
