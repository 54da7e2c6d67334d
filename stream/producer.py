"""Produce event records to Kafka: keys, pacing, progress and delivery checks.

The simulator and the replay tool both end here, so a simulated stream and a
replayed file land on the input topic keyed and paced the same way.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from stream.connections import kafka_options
from stream.errors import CrmKpiError
from stream.settings import Settings
from stream.topics import ensure_topics

logger = logging.getLogger(__name__)

KEY_FIELDS: dict[str, str] = {
    "lead.created": "lead_id",
    "lead.contacted": "lead_id",
    "lead.converted": "lead_id",
    "lead.disqualified": "lead_id",
    "quote.issued": "quote_id",
    "deal.won": "deal_id",
    "deal.lost": "deal_id",
    "quota.set": "rep_id",
    "order.placed": "customer_id",
    "customer.churned": "customer_id",
    "site.visit": "visitor_id",
    "ad.impression": "campaign_id",
    "ad.click": "campaign_id",
    "newsletter.subscribed": "contact_id",
    "email.sent": "message_id",
    "email.delivered": "message_id",
    "email.opened": "message_id",
    "email.clicked": "message_id",
    "email.unsubscribed": "message_id",
    "email.bounced": "message_id",
    "ticket.opened": "ticket_id",
    "ticket.replied": "ticket_id",
    "ticket.reopened": "ticket_id",
    "ticket.resolved": "ticket_id",
    "complaint.filed": "customer_id",
}
"""The field holding the main entity of each event type: the record key.

Kafka keeps the order of records within a partition and the default
partitioner sends equal keys to the same partition, so the events of one lead,
message or ticket reach the worker in the order they were produced. Types
missing here (`spend.recorded`) are keyed by `event_id`.
"""

LINGER_MS = 20
"""How long the producer waits to fill a batch; a few ms buy large batches."""

MAX_BATCH_BYTES = 512 * 1024
"""Largest record batch per partition, well under the broker's default 1 MiB."""

PROGRESS_SECONDS = 0.25
"""Least time between two redraws of the progress line on a terminal."""

LOG_PROGRESS_SECONDS = 5.0
"""Least time between two progress log lines when stderr is not a terminal."""


class ProduceError(CrmKpiError):
    """Records could not be delivered to the Kafka topic."""


def event_key(event: Mapping[str, Any]) -> bytes | None:
    """Return the Kafka key of a decoded event.

    The key is the event's main entity id (see `KEY_FIELDS`); failing that its
    `event_id`; failing that `None`, which lets the producer spread the record
    over the partitions.
    """
    field = KEY_FIELDS.get(event.get("type"))  # type: ignore[arg-type]
    if field is not None:
        entity = event.get(field)
        if isinstance(entity, str) and entity:
            return entity.encode()

    event_id = event.get("event_id")
    if isinstance(event_id, str) and event_id:
        return event_id.encode()
    return None


def record_key(value: bytes) -> bytes | None:
    """Return the Kafka key of a raw record: `event_key` if it is a JSON object."""
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return event_key(event) if isinstance(event, dict) else None


@dataclass(frozen=True)
class Delivery:
    """What one producing run delivered."""

    records: int
    """Records acknowledged by the broker."""
    bytes: int
    """Sum of the record values' sizes."""
    elapsed_seconds: float
    """From the first record handed to the producer to the last acknowledged."""

    @property
    def rate(self) -> float:
        """Records per second over the run; 0 for an empty or instant run."""
        return self.records / self.elapsed_seconds if self.elapsed_seconds else 0.0


class Progress:
    """Report how many records went out while a run goes on.

    On a terminal, one line on stderr is redrawn in place; otherwise (a pipe, a
    log file, CI) an INFO log line is written every few seconds instead, so logs
    are not flooded with carriage returns.
    """

    def __init__(self, what: str, *, enabled: bool, stream: TextIO | None = None):
        self._what = what
        self._enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._tty = enabled and self._stream.isatty()
        self._interval = PROGRESS_SECONDS if self._tty else LOG_PROGRESS_SECONDS
        self._started = time.monotonic()
        self._next = self._started + self._interval
        self._drawn = False

    def update(self, count: int) -> None:
        """Show `count` records sent, if the last report is old enough."""
        if not self._enabled:
            return

        now = time.monotonic()
        if now < self._next:
            return

        self._next = now + self._interval
        self._report(count, now)

    def close(self, count: int) -> None:
        """Show the final count and end the progress line."""
        if not self._enabled:
            return

        self._report(count, time.monotonic())
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()

    def _report(self, count: int, now: float) -> None:
        elapsed = now - self._started
        rate = count / elapsed if elapsed > 0 else 0.0
        if self._tty:
            self._stream.write(
                f"\r{self._what}: {count:,} sent, {rate:,.0f}/s,"
                f" {elapsed:,.1f} s elapsed\x1b[K"
            )
            self._stream.flush()
            self._drawn = True
        else:
            logger.info(
                "progress what=%s sent=%d rate=%.0f elapsed=%.1f",
                self._what,
                count,
                rate,
                elapsed,
            )


class _Batches:
    """Fill one record batch per partition; hand each to the producer when full.

    aiokafka's per-record `send` costs a future, an event-loop callback and a
    partition lookup for every record. Filling its batches directly
    (`create_batch` and `send_batch`) and choosing the partition here, with the
    murmur2 hash of Kafka's default partitioner, more than doubles the rate. A
    record without key goes round-robin over the partitions.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions: list[int] = []
        self._open: dict[int, Any] = {}
        self._assigned: dict[bytes, int] = {}
        self._next = 0
        self.failures: list[BaseException] = []
        """Errors of the batches the broker did not acknowledge."""
        self.lost = 0
        """Records in those batches."""

    async def start(self) -> None:
        """Learn the topic's partitions."""
        self._partitions = sorted(await self._producer.partitions_for(self._topic))

    def _partition(self, key: bytes | None) -> int:
        partitions = self._partitions
        if key is None:
            self._next += 1
            return partitions[self._next % len(partitions)]

        found = self._assigned.get(key)
        if found is None:
            found = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            if len(self._assigned) > 100_000:
                self._assigned.clear()
            self._assigned[key] = found
        return found

    async def add(self, key: bytes | None, value: bytes) -> None:
        """Add a record to the batch of its partition, sending the batch if full."""
        partition = self._partition(key)
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = self._producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value) is not None:
            return

        await self._submit(partition)
        batch = self._open[partition] = self._producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value) is None:
            raise ProduceError(
                f"a record of {len(value)} bytes does not fit in a batch of"
                f" {MAX_BATCH_BYTES} bytes for topic {self._topic!r}"
            )

    async def submit_all(self) -> None:
        """Send every batch that holds records."""
        for partition in list(self._open):
            await self._submit(partition)

    async def _submit(self, partition: int) -> None:
        batch = self._open.pop(partition)
        records = batch.record_count()
        if not records:
            return

        batch.close()
        future = await self._producer.send_batch(
            batch, self._topic, partition=partition
        )

        def delivered(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is not None:
                self.failures.append(done.exception())  # type: ignore[arg-type]
                self.lost += records

        future.add_done_callback(delivered)


async def send(
    records: Iterable[tuple[bytes | None, bytes]],
    settings: Settings,
    *,
    topic: str | None = None,
    rate: float | None = None,
    progress: bool = False,
    what: str = "records",
) -> Delivery:
    """Produce `(key, value)` records to Kafka and wait until all are acknowledged.

    Records are pulled from `records` lazily, so a generator may be endless (stop
    the run by cancelling it) and, when paced, builds each record at the moment
    it is sent.

    Args:
        records: keys and exact value bytes, in the order to produce them.
        settings: `kafka_bootstrap`, and `events_topic` unless `topic` is given;
            the topic is created with `events_partitions` if it does not exist.
        topic: topic to produce to, instead of `settings.events_topic`.
        rate: records per second to keep to; `None` sends as fast as possible.
        progress: report progress on stderr (see `Progress`).
        what: name of the records in the progress display.

    Returns:
        The number of records and bytes delivered and the time it took.

    Raises:
        ProduceError: the broker is unreachable or did not acknowledge a record.
    """
    if rate is not None and rate <= 0:
        raise ProduceError(f"rate must be a positive number of records/s, not {rate}")

    topic = topic or settings.events_topic
    # Left to the broker's auto-creation, the events topic would get one
    # partition and the workers could not share the load.
    await ensure_topics(
        settings,
        [NewTopic(topic, settings.events_partitions, settings.replication_factor)],
    )

    # acks=all with idempotence: the broker acknowledges a batch once every
    # in-sync replica has it, and a batch retried after a lost response is not
    # written twice, so the run adds no duplicates of its own to the topic.
    producer = AIOKafkaProducer(
        **kafka_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
        max_request_size=max(MAX_BATCH_BYTES, settings.max_record_bytes * 2),
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise ProduceError(
            f"cannot reach kafka at {settings.kafka_bootstrap}: {exc};"
            " start the stack or set CRM_KAFKA_BOOTSTRAP"
        ) from exc

    batches = _Batches(producer, topic)
    display = Progress(what, enabled=progress)
    count = 0
    size = 0
    started = time.monotonic()
    try:
        await batches.start()
        for key, value in records:
            await batches.add(key, value)
            count += 1
            size += len(value)

            # Unpaced, a look every 256 records is plenty; paced runs may be
            # slow, so the display is offered every record (it throttles itself).
            if count & 0xFF == 0 or rate is not None:
                display.update(count)
                if batches.failures:
                    break
            if rate is not None:
                ahead = count / rate - (time.monotonic() - started)
                if ahead > 0.002:
                    # Nothing more is added while sleeping: send what is held.
                    await batches.submit_all()
                    await asyncio.sleep(ahead)

        await batches.submit_all()
        await producer.flush()
    except KafkaError as exc:
        raise ProduceError(
            f"producing to topic {topic!r} at {settings.kafka_bootstrap} failed"
            f" after {count} records: {exc}"
        ) from exc
    finally:
        await producer.stop()
        display.close(count - batches.lost)

    elapsed = time.monotonic() - started
    if batches.failures:
        raise ProduceError(
            f"{batches.lost} records to topic {topic!r} were not acknowledged, the"
            f" first batch failing with: {batches.failures[0]!r}; the topic holds"
            " a partial run"
        ) from batches.failures[0]

    logger.info(
        "produced topic=%s records=%d bytes=%d elapsed=%.2f",
        topic,
        count,
        size,
        elapsed,
    )
    return Delivery(records=count, bytes=size, elapsed_seconds=elapsed)
