"""The Faust application: the path of an event from its topic to the KPIs.

1. `ingest` reads CRM event records from the events topic (any number of
   partitions, shared among workers), validates each one, sends invalid ones to
   the dead-letter topic, converts money to the reporting currency and forwards
   the valid events, a batch per record, to the single-partition admitted
   topic.
2. `compute` reads the admitted topic. Its one partition makes one worker at a
   time the holder of the KPI state, so every KPI sees every event and the
   watermark is global. It deduplicates, drops late events to the late topic,
   applies the rest to the `KpiEngine`, and checkpoints the engine with the
   offset it includes.
3. A timer publishes the KPI values: Prometheus gauges and the snapshot feeds.

Exactly-once KPI state: `compute` acknowledges records only once a checkpoint
that includes them is in the changelog, so the committed offset never passes
the checkpoint; records replayed after a restart that the checkpoint already
holds are skipped by offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

from faust.streams import Stream
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP, EventT, StreamT
from faust.web import Request, Response, View
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from schemas.admitted import AdmittedEvent, Source, decode_batch, encode_batch
from schemas.kpis import KpiSnapshot
from stream import checkpoints
from stream.catalogue import SeriesKey
from stream.connections import faust_credentials
from stream.errors import InvalidEventError
from stream.exporters import KpiGauges, PipelineMetrics
from stream.ingest import dead_letter_for, decode, to_reporting
from stream.kpis import Admission, KpiEngine
from stream.offsets import OffsetGuard, Verdict
from stream.settings import Settings, get_settings
from stream.sinks import FeedMetrics, KafkaSink, RedisSink
from stream.snapshots import Snapshotter
from stream.transport import App
from stream.web import SnapshotReader, register

logger = logging.getLogger(__name__)

settings: Settings = get_settings()

app = App(
    settings.app_id,
    broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
    broker_credentials=faust_credentials(settings),
    store="memory://",
    datadir=str(settings.data_dir),
    topic_partitions=1,
    topic_replication_factor=settings.replication_factor,
    consumer_auto_offset_reset="earliest",
    # A crashed worker's partitions wait this long before moving (Kafka's
    # group session timeout); heartbeats go at a third of it, as Kafka asks.
    broker_session_timeout=settings.kafka_session_timeout_seconds,
    broker_heartbeat_interval=settings.kafka_session_timeout_seconds / 3,
    producer_acks=-1,
    broker_commit_interval=1.0,
    # `compute` holds acknowledgements until a checkpoint covers them; waiting
    # for every stream to drain on a rebalance would wait for that checkpoint.
    stream_wait_empty=False,
    web_bind=settings.web_host,
    web_port=settings.web_port,
    web_host=settings.web_host,
    web_in_thread=False,
    # Faust's router and table pages would show the partition routing and the
    # raw KPI checkpoint; the worker's pages are its own (all GET, read-only).
    web_router_enabled=False,
    web_tables_enabled=False,
)

events_topic = app.topic(
    settings.events_topic,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.events_partitions,
)
admitted_topic = app.topic(
    f"{settings.app_id}-admitted",
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=1,
    internal=True,
)
dead_letter_topic = app.topic(
    settings.dead_letter_topic, key_serializer="raw", value_serializer="raw"
)
late_topic = app.topic(
    settings.late_topic, key_serializer="raw", value_serializer="raw"
)

checkpoint_table = app.Table(
    "kpi-checkpoint",
    partitions=1,
    key_type=str,
    value_type=bytes,
)
# Tables take their codecs from model types only; chunks are opaque bytes, so
# the changelog stores them as they are instead of as JSON.
checkpoint_table.value_serializer = "raw"  # type: ignore[attr-defined]

metrics = PipelineMetrics(REGISTRY)
gauges = KpiGauges(REGISTRY, settings.reporting_currency)
feed_metrics = FeedMetrics(REGISTRY)
snapshotter = Snapshotter(
    settings.reporting_currency, settings.snapshot_interval_seconds
)
kafka_sink = KafkaSink(settings, feed_metrics)
redis_sink = RedisSink(settings, feed_metrics)
# Every worker answers HTTP from the KPI topic, whichever one holds the state.
reader = SnapshotReader(settings)
register(app, reader)

positions: dict[Any, int] = {}
"""Last offset read per events-topic partition, for the consumer lag."""
lag_partitions: set[Any] = set()
"""Events-topic partitions whose consumer lag this worker exports."""

events_guard = OffsetGuard(strict=False)
admitted_guard = OffsetGuard(strict=True)

INGEST_BATCH = 1000
INGEST_WITHIN_SECONDS = 0.02

CHECKPOINT_SHARE = 0.05
"""Most of the worker's time that checkpoints may take.

Writing one takes time in proportion to the state (about a second for a few
hundred thousand entities), during which no event is applied: the interval
grows past `checkpoint_interval_seconds` to keep them within this share."""


@app.agent(events_topic)
async def ingest(stream: StreamT[bytes]) -> None:
    """Validate event records; forward the valid, dead-letter the rest."""
    async for batch in cast(Stream[bytes], stream).take_events(
        INGEST_BATCH, within=INGEST_WITHIN_SECONDS
    ):
        now = datetime.now(UTC)
        admitted: list[Source] = []
        pending = []
        taken = 0

        for record in batch:
            message = record.message
            # Faust keeps the offsets it sought to after an assignment in a
            # private mapping; it is the only record of where a partition
            # should resume.
            consumer = cast(FaustConsumer, app.consumer)
            committed = consumer._committed_offset.get(message.tp)
            if committed is None and not events_guard.knows(message.tp):
                # No committed offset yet: the group reads from the start of
                # the partition (auto_offset_reset=earliest), so that is where
                # the first record must be.
                earliest = await consumer.earliest_offsets(message.tp)
                committed = earliest.get(message.tp)
            verdict = events_guard.check(message.tp, message.offset, committed)
            if verdict is Verdict.SEEK:
                await app.consumer.seek(message.tp, events_guard.target(message.tp))
            if verdict is not Verdict.PROCESS:
                continue
            taken += 1
            positions[message.tp] = message.offset
            try:
                event = to_reporting(decode(message.value, settings, now), settings)
            except InvalidEventError as error:
                logger.warning(
                    "invalid record topic=%s partition=%s offset=%s reason=%s",
                    message.topic,
                    message.partition,
                    message.offset,
                    error.reason,
                )
                metrics.invalid.labels(error.reason).inc()
                letter = dead_letter_for(
                    message.value,
                    error,
                    message.topic,
                    message.partition,
                    message.offset,
                    int(message.timestamp * 1000),
                    now,
                    settings,
                )
                pending.append(
                    await dead_letter_topic.send(
                        key=message.key, value=letter.model_dump_json().encode()
                    )
                )
                continue
            produced_ms = int(message.timestamp * 1000)
            admitted.append((message.partition, message.offset, produced_ms, event))

        # Records dropped to be read again are counted when they come back.
        metrics.consumed.labels(settings.events_topic).inc(taken)
        if admitted:
            value = encode_batch(settings.events_topic, admitted)
            pending.append(await admitted_topic.send(value=value))

        # The batch is acknowledged when this body returns, so wait until the
        # broker has every record forwarded from it: at-least-once delivery.
        for future in pending:
            await future


class KpiStage:
    """The KPI state of this worker while it holds the admitted partition."""

    def __init__(self) -> None:
        self.engine: KpiEngine | None = None
        self.applied_offset = -1
        self.generation = 0
        self.last_checkpoint = time.monotonic()
        self.checkpoint_seconds = 0.0
        """How long writing the last checkpoint took."""
        self.unacked: list[EventT[Any]] = []
        self.produced_ms: list[int] = []
        self.sources: dict[tuple[str, int], int] = {}
        """The highest events-topic offset taken, by topic and partition."""
        self._values: dict[SeriesKey, float | None] = {}
        self._values_at = -1

    def values(self) -> dict[SeriesKey, float | None]:
        """Return the KPI values, computed again only after new records."""
        if self.engine is not None and self._values_at != self.applied_offset:
            self._values = self.engine.values()
            self._values_at = self.applied_offset
        return self._values

    def acquire(self) -> KpiEngine:
        """Return the engine, restoring it from the checkpoint table if needed."""
        if self.engine is not None:
            return self.engine

        stored = checkpoints.read(checkpoint_table)
        if stored is None:
            self.engine = KpiEngine(settings)
            self.applied_offset = -1
            self.generation = 0
            self.sources = {}
        else:
            self.engine = KpiEngine.load(stored.state, settings)
            self.applied_offset = stored.offset
            self.generation = stored.generation + 1
            self.sources = dict(stored.sources)
        logger.info(
            "kpi state acquired applied_offset=%s watermark_ms=%s",
            self.applied_offset,
            self.engine.watermark_ms,
        )
        metrics.kpi_owner.set(1)
        return self.engine

    def release(self) -> None:
        """Forget the in-memory state: another worker may own it now."""
        if self.engine is None:
            return
        logger.info("kpi state released applied_offset=%s", self.applied_offset)
        self.engine = None
        self.unacked.clear()
        self.produced_ms.clear()
        admitted_guard.clear()
        self._values = {}
        self._values_at = -1
        gauges.clear()
        snapshotter.reset()
        metrics.kpi_owner.set(0)

    def repeated(self, topic: str, admitted: AdmittedEvent) -> bool:
        """Tell whether an event's source record was taken before; note it if not.

        Faust commits the ingest stage's offsets every `broker_commit_interval`;
        the records forwarded since the last commit are read and forwarded
        again when a worker crashes or its partitions move. Those copies can
        reach this stage after the watermark moved past the dedupe horizon (a
        replay covers days of event time a second), so the event-id check
        alone would apply them twice. Ingest forwards each partition in offset
        order, and a worker starts a partition at the committed offset, whose
        records are all in the admitted topic by then: a first copy always
        comes with an offset above every offset taken from its partition.
        """
        source = (topic, admitted.partition)
        if admitted.offset <= self.sources.get(source, -1):
            return True
        self.sources[source] = admitted.offset
        return False

    def checkpoint_due(self) -> bool:
        """Tell whether enough time has passed to write a checkpoint."""
        elapsed = time.monotonic() - self.last_checkpoint
        least = max(
            settings.checkpoint_interval_seconds,
            self.checkpoint_seconds / CHECKPOINT_SHARE,
        )
        return bool(self.unacked) and elapsed >= least


stage = KpiStage()


@app.agent(admitted_topic)
async def compute(stream: StreamT[bytes]) -> None:
    """Apply admitted events to the KPI state, checkpointing as it goes."""
    manual = cast(Stream[bytes], cast(Stream[bytes], stream).noack())
    async for record in manual.events():
        engine = stage.acquire()
        offset = record.message.offset

        # The admitted topic's offsets are contiguous: a jump means the
        # consumer skipped records, which the state must not go without.
        tp = record.message.tp
        verdict = admitted_guard.check(tp, offset, stage.applied_offset + 1)
        if verdict is Verdict.SEEK:
            await app.consumer.seek(tp, admitted_guard.target(tp))
            continue
        if verdict is Verdict.DROP and offset > stage.applied_offset:
            continue

        # Records at or below the checkpoint's offset are in the state already.
        if offset > stage.applied_offset:
            # The ingest agent always writes a value; it is never a tombstone.
            value = cast(bytes, record.message.value)
            batch = decode_batch(value)
            for admitted in batch.events:
                await apply(engine, batch.topic, admitted)
                if stage.engine is not engine:
                    break
            stage.applied_offset = offset

        # With `stream_wait_empty=False` a revocation does not wait for the
        # record in hand: the state may have been released, and taken by
        # another worker, while it was applied. A checkpoint of it now would
        # land in the changelog the new owner writes to, so the record is left
        # to the owner, which reads it again from the committed offset.
        if stage.engine is not engine:
            continue
        stage.unacked.append(record)

        if stage.checkpoint_due():
            await write_checkpoint(engine, manual)


async def apply(engine: KpiEngine, topic: str, admitted: AdmittedEvent) -> None:
    """Apply one event; send it to the late topic when it is too old.

    A copy of a source record forwarded again counts as a duplicate.
    """
    event = admitted.event
    if stage.repeated(topic, admitted):
        metrics.events.labels(event.type, "duplicate").inc()
        metrics.duplicates.inc()
        logger.debug(
            "repeated event_id=%s partition=%s offset=%s",
            event.event_id,
            admitted.partition,
            admitted.offset,
        )
        return

    outcome = engine.admit(event)
    metrics.events.labels(event.type, outcome.name.lower()).inc()

    if outcome is Admission.APPLIED:
        stage.produced_ms.append(admitted.produced_ms)
    elif outcome is Admission.DUPLICATE:
        metrics.duplicates.inc()
        logger.debug("duplicate event_id=%s", event.event_id)
    else:
        metrics.late.inc()
        logger.debug(
            "late event_id=%s watermark=%s", event.event_id, engine.watermark_ms
        )
        await late_topic.send(
            key=event.event_id.encode(), value=admitted.model_dump_json().encode()
        )


async def write_checkpoint(engine: KpiEngine, manual: Stream[bytes]) -> None:
    """Store the engine with its offset, then acknowledge what it includes."""
    started = time.monotonic()
    state = engine.dump()
    checkpoints.write(
        checkpoint_table, state, stage.applied_offset, stage.generation, stage.sources
    )
    stage.checkpoint_seconds = time.monotonic() - started
    stage.generation += 1
    await app.producer.flush()

    for record in stage.unacked:
        await manual.ack(record)
    stage.unacked.clear()
    stage.last_checkpoint = time.monotonic()
    metrics.checkpoints.inc()
    metrics.checkpoint_bytes.set(len(state))
    logger.debug(
        "checkpoint written offset=%s bytes=%s", stage.applied_offset, len(state)
    )


# Faust's signal type asks for a catch-all signature.
@app.on_rebalance_complete.connect  # type: ignore[arg-type]
async def on_rebalance_complete(
    sender: Any, *, signal: Any = None, **kwargs: Any
) -> None:
    """Hold fetched records back until Faust has sought to the committed offsets.

    Once the tables are recovered, Faust resumes the stream partitions, seeks
    them to the committed offsets, then resumes flow control, which empties
    every agent's buffer. Its fetcher runs all along (it read the changelog),
    so records fetched before the seek completes reach the buffers and are
    dropped when flow resumes, while the fetcher's read offsets have moved
    past them: they are never delivered again, and Faust even counts them as
    a gap it may commit. A record of the admitted topic dropped that way is
    missing from the KPI state for good once a later checkpoint covers its
    offset. Stopping the consumer's flow here keeps fetched records out of
    the buffers until Faust resumes it, after the seek.
    """
    app.consumer.stop_flow()


# Revocations pass a set.
@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def on_revoked(
    sender: Any, revoked: set[Any], *, signal: Any = None, **kwargs: Any
) -> None:
    """Drop the KPI state and lag series of partitions that moved away."""
    if any(tp.topic == admitted_topic.get_topic_name() for tp in revoked):
        stage.release()

    for tp in revoked:
        if tp.topic == settings.events_topic:
            positions.pop(tp, None)
            events_guard.forget(tp)
            with contextlib.suppress(KeyError):
                metrics.lag.remove(tp.topic, str(tp.partition))


@app.timer(snapshotter.tick_seconds)
async def publish() -> None:
    """Show the current KPI values on every feed.

    It runs even with nothing new: that is when a sink that was down catches
    up with the snapshots it kept.
    """
    update_lag()
    for guard in (events_guard, admitted_guard):
        for tp, target in guard.overdue():
            await app.consumer.seek(cast(TP, tp), target)
    snapshots: list[KpiSnapshot] = []

    # The worker given the admitted partition takes the state as soon as the
    # tables are recovered, not at its first record: after a handover on a
    # quiet stream, the previous owner's last checkpoint may hold every record,
    # and then none comes. Faust clears `rebalancing` once the tables are
    # recovered and the streams sought to their committed offsets.
    if stage.engine is None and not app.rebalancing and holds_admitted():
        stage.acquire()
    engine = stage.engine

    if engine is not None and engine.watermark_ms is not None:
        values = stage.values()
        gauges.update(values)
        metrics.watermark.set(engine.watermark_ms / 1000)
        metrics.tracked_entities.set(engine.tracked_entities)
        snapshots = snapshotter.offer(values, engine.watermark_ms)

        now_ms = time.time() * 1000
        for produced_ms in stage.produced_ms:
            metrics.delay.observe(max(0.0, (now_ms - produced_ms) / 1000))
        stage.produced_ms.clear()

    await asyncio.gather(kafka_sink.publish(snapshots), redis_sink.publish(snapshots))


@app.service
class Feeds(Service):
    """The snapshot sinks and reader, started and stopped with the app."""

    async def on_start(self) -> None:
        await kafka_sink.start()
        await redis_sink.start()
        await reader.start()

    async def on_stop(self) -> None:
        await reader.stop()
        await kafka_sink.stop()
        await redis_sink.stop()


def holds_admitted() -> bool:
    """Tell whether this worker is assigned the admitted topic's partition."""
    name = admitted_topic.get_topic_name()
    return any(tp.topic == name for tp in app.consumer.assignment())


def update_lag() -> None:
    """Set the consumer lag of every events-topic partition this worker reads.

    The series of a partition no longer assigned is removed here, not only on
    revocation: aiokafka reports the old assignment until the group has synced
    again, so a tick between the revocation and the new assignment brings back
    the series of a partition that another worker may read from then on.
    """
    assigned = {
        tp for tp in app.consumer.assignment() if tp.topic == settings.events_topic
    }
    for tp in lag_partitions - assigned:
        with contextlib.suppress(KeyError):
            metrics.lag.remove(tp.topic, str(tp.partition))
    lag_partitions.intersection_update(assigned)

    read_offsets = cast(FaustConsumer, app.consumer)._read_offset
    for tp in assigned:
        highwater = app.consumer.highwater(tp)
        if highwater is None:
            continue
        # Before its first record the partition's position is where the
        # consumer will read next: the committed offset it sought to, or the
        # start of the partition when the group has committed none.
        taken = positions.get(tp)
        position = taken + 1 if taken is not None else read_offsets.get(tp)
        if position is None:
            position = 0
        lag = max(0, highwater - position)
        metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        lag_partitions.add(tp)


@app.page("/metrics")
class MetricsView(View):
    """Prometheus exposition of the KPIs and the pipeline metrics."""

    async def get(self, request: Request) -> Response:
        # aiohttp takes the charset apart from the media type.
        media_type = CONTENT_TYPE_LATEST.split("; charset=")[0]
        return self.bytes(generate_latest(REGISTRY), content_type=media_type)
