"""The worker's KPI pages: JSON API, server-sent events and the live wall.

Only one worker holds the KPI state, but every worker answers: each one follows
the compacted KPI topic with a `SnapshotReader`, which keeps the latest
snapshot of every key, so all workers serve the same data whichever holds the
state. `register` adds the pages to a Faust app:

- `GET /kpis`: every KPI with every value (`schemas.api.KpiListing`);
- `GET /kpis/{id}`: one KPI (`KpiDocument`), 404 with the known ids otherwise;
- `GET /kpis/stream`: server-sent events, one `snapshot` event per snapshot,
  first the latest of every key, then each change;
- `GET /wall`: a live wall of every KPI for a big screen (stream/wall.html).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from aiohttp import web as aiohttp_web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import AppT
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from pydantic import BaseModel, ValidationError

from schemas.api import (
    KpiDocument,
    KpiListing,
    KpiNotFound,
    KpiView,
    SeriesValue,
    SeriesView,
    ThresholdView,
)
from schemas.kpis import KpiSnapshot, snapshot_key
from stream.catalogue import CATALOGUE, KPIS, Kpi, Unit, get_kpi
from stream.connections import kafka_options
from stream.errors import CatalogueError
from stream.settings import Settings
from stream.sinks import ensure_snapshot_topic

logger = logging.getLogger(__name__)

WALL_PAGE = Path(__file__).with_name("wall.html")
HEARTBEAT_SECONDS = 15.0
"""Idle time after which the event stream sends a comment line.

It keeps proxies from closing a quiet stream and lets the server notice a
client that went away (a write to a closed connection fails).
"""
READER_POLL_MS = 1000
READER_RETRY_SECONDS = 1.0


# Latest snapshots and their subscribers ----------------------------------------


class Subscription:
    """The changed snapshots of one listener, coalesced per key while it lags.

    A slow listener never makes the board buffer more than one snapshot per
    key, and always gets the latest one.
    """

    def __init__(self) -> None:
        self._pending: dict[str, KpiSnapshot] = {}
        self._ready = asyncio.Event()
        self.closed = False

    def push(self, snapshots: Iterable[KpiSnapshot]) -> None:
        """Queue snapshots for the listener, replacing older ones of a key."""
        for snapshot in snapshots:
            self._pending[snapshot.key] = snapshot
        if self._pending:
            self._ready.set()

    def close(self) -> None:
        """End the subscription: `next` returns None from now on."""
        self.closed = True
        self._ready.set()

    async def next(self, timeout: float) -> list[KpiSnapshot] | None:
        """Wait for changes; return them, [] after `timeout`, None once closed."""
        if not self._pending and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        if self.closed:
            return None
        batch = list(self._pending.values())
        self._pending.clear()
        self._ready.clear()
        return batch


class SnapshotBoard:
    """The latest snapshot of every key, and the listeners to its changes."""

    def __init__(self) -> None:
        self._latest: dict[str, KpiSnapshot] = {}
        self._subscriptions: set[Subscription] = set()

    def latest(self) -> Mapping[str, KpiSnapshot]:
        """Return the latest snapshot of every key, by snapshot key."""
        return MappingProxyType(self._latest)

    def update(self, snapshots: Iterable[KpiSnapshot]) -> None:
        """Store snapshots as the latest of their keys and tell the listeners."""
        changed = list(snapshots)
        for snapshot in changed:
            self._latest[snapshot.key] = snapshot
        for subscription in self._subscriptions:
            subscription.push(changed)

    def remove(self, key: str) -> None:
        """Forget a key (a tombstone on the topic)."""
        self._latest.pop(key, None)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """Listen to changes for the duration of the `with` block."""
        subscription = Subscription()
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every subscription, so that open event streams finish."""
        for subscription in self._subscriptions:
            subscription.close()


class SnapshotSource(Protocol):
    """Where the pages read snapshots from: the latest ones and their changes."""

    def latest(self) -> Mapping[str, KpiSnapshot]: ...

    def subscribe(self) -> contextlib.AbstractContextManager[Subscription]: ...

    def close(self) -> None: ...


class SnapshotReader:
    """Follow the compacted KPI topic and keep the latest snapshot of every key.

    It reads the topic from its start with no consumer group, so every worker
    sees every snapshot; compaction keeps the topic about as small as the
    number of keys. The partitions are those of the topic at `start`.
    """

    def __init__(self, settings: Settings, board: SnapshotBoard | None = None) -> None:
        self.settings = settings
        self.topic = settings.kpi_topic
        self.board = board if board is not None else SnapshotBoard()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._ends: dict[TopicPartition, int] = {}
        self._caught_up = asyncio.Event()

    def latest(self) -> Mapping[str, KpiSnapshot]:
        """Return the latest snapshot of every key read so far."""
        return self.board.latest()

    def subscribe(self) -> contextlib.AbstractContextManager[Subscription]:
        """Listen to the snapshots read from now on."""
        return self.board.subscribe()

    def close(self) -> None:
        """End every subscription (the event streams) without stopping."""
        self.board.close()

    async def start(self) -> None:
        """Create the topic if missing, then follow it in the background.

        Raises:
            SettingsError: the topic exists and is not compacted.
            TopicError: Kafka does not answer or refuses the topic.
            KafkaError: the consumer cannot connect.
        """
        partitions = [
            TopicPartition(self.topic, partition)
            for partition in await ensure_snapshot_topic(self.settings)
        ]
        consumer = AIOKafkaConsumer(
            **kafka_options(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            self._ends = await consumer.end_offsets(partitions)
        except BaseException:
            await consumer.stop()
            raise

        self._consumer = consumer
        await self._check_caught_up()
        self._task = asyncio.create_task(self._follow(), name=f"follow {self.topic}")
        self._task.add_done_callback(self._followed)
        logger.info(
            "snapshot reader started topic=%s partitions=%s",
            self.topic,
            len(partitions),
        )

    async def wait_caught_up(self, timeout: float) -> bool:
        """Wait until the reader has read what the topic held at `start`."""
        try:
            await asyncio.wait_for(self._caught_up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """End the subscriptions, stop following and close the consumer."""
        self.board.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
            logger.info("snapshot reader stopped topic=%s", self.topic)

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=READER_POLL_MS)
            except KafkaError as error:
                logger.warning(
                    "snapshot reader failed topic=%s error=%r", self.topic, error
                )
                await asyncio.sleep(READER_RETRY_SECONDS)
                continue

            snapshots: list[KpiSnapshot] = []
            for records in batches.values():
                for record in records:
                    snapshot = self._decode(record.key, record.value, record.offset)
                    if snapshot is not None:
                        snapshots.append(snapshot)
            if snapshots:
                self.board.update(snapshots)
            if not self._caught_up.is_set():
                await self._check_caught_up()

    def _followed(self, task: asyncio.Task[None]) -> None:
        # Without this, a failure would end the task unseen and every page
        # would go on serving the snapshots read until then.
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "snapshot reader stopped following topic=%s error=%r",
                self.topic,
                task.exception(),
            )

    def _decode(
        self, key: bytes | None, value: bytes | None, offset: int
    ) -> KpiSnapshot | None:
        if value is None:
            if key is not None:
                self.board.remove(key.decode(errors="replace"))
            return None
        try:
            return KpiSnapshot.model_validate_json(value)
        except ValidationError as error:
            logger.warning(
                "unreadable snapshot skipped topic=%s offset=%s error=%s",
                self.topic,
                offset,
                error.errors()[0]["msg"],
            )
            return None

    async def _check_caught_up(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp, end in self._ends.items():
            if await consumer.position(tp) < end:
                return
        self._caught_up.set()
        logger.info(
            "snapshot reader caught up topic=%s keys=%s",
            self.topic,
            len(self.board.latest()),
        )


# Documents ---------------------------------------------------------------------


def kpi_view(kpi: Kpi, latest: Mapping[str, KpiSnapshot]) -> KpiView:
    """Return a KPI of the catalogue with the latest value of every series key."""
    series: list[SeriesView] = []
    for position, entry in enumerate(kpi.series):
        values: list[SeriesValue] = []
        for window in kpi.windows_of(entry.id):
            for dimension_value in kpi.dimension_values():
                key = snapshot_key(entry.id, window, dimension_value)
                snapshot = latest.get(key)
                values.append(
                    SeriesValue(
                        key=key,
                        window=window,
                        dimension_value=dimension_value,
                        value=snapshot.value if snapshot else None,
                        watermark=snapshot.watermark if snapshot else None,
                        computed_at=snapshot.computed_at if snapshot else None,
                        definition_version=(
                            snapshot.definition_version if snapshot else None
                        ),
                    )
                )
        currency = _currency(entry.unit, latest, values)
        series.append(
            SeriesView(
                id=entry.id,
                headline=position == 0,
                metric=entry.metric,
                unit=entry.unit.value,
                currency=currency,
                help=entry.help,
                values=values,
            )
        )

    threshold = kpi.threshold
    return KpiView(
        id=kpi.id,
        title=kpi.title,
        formula=kpi.formula,
        definition_version=kpi.version,
        dimension=kpi.dimension,
        dimension_values=[v for v in kpi.dimension_values() if v is not None],
        windows=list(kpi.windows_of(kpi.headline.id)),
        threshold=(
            ThresholdView(
                direction=threshold.direction,
                warning=threshold.warning,
                critical=threshold.critical,
            )
            if threshold is not None
            else None
        ),
        series=series,
    )


def kpis_document(latest: Mapping[str, KpiSnapshot]) -> KpiListing:
    """Return the response of `GET /kpis`: every KPI, in catalogue order."""
    kpis = [kpi_view(kpi, latest) for kpi in CATALOGUE]
    return KpiListing(watermark=_watermark(kpis), kpis=kpis)


def kpi_document(kpi_id: str, latest: Mapping[str, KpiSnapshot]) -> KpiDocument:
    """Return the response of `GET /kpis/{id}`.

    Raises:
        CatalogueError: `kpi_id` is not a KPI of the catalogue.
    """
    view = kpi_view(get_kpi(kpi_id), latest)
    return KpiDocument(watermark=_watermark([view]), kpi=view)


def not_found_document(kpi_id: str) -> KpiNotFound:
    """Return the 404 body for an id that is not a KPI of the catalogue."""
    return KpiNotFound(
        error=f"unknown KPI {kpi_id!r}: use one of known_ids, or GET /kpis for"
        " every KPI with its values",
        known_ids=sorted(KPIS),
    )


def _currency(
    unit: Unit, latest: Mapping[str, KpiSnapshot], values: list[SeriesValue]
) -> str | None:
    if unit is not Unit.MONEY:
        return None
    for value in values:
        snapshot = latest.get(value.key)
        if snapshot is not None and snapshot.currency is not None:
            return snapshot.currency
    return None


def _watermark(kpis: list[KpiView]) -> datetime | None:
    marks = [
        value.watermark
        for kpi in kpis
        for series in kpi.series
        for value in series.values
        if value.watermark is not None
    ]
    return max(marks, default=None)


def event_stream_message(snapshot: KpiSnapshot) -> bytes:
    """Return a snapshot as one server-sent event (WHATWG HTML, 9.2)."""
    return b"event: snapshot\ndata: " + snapshot.model_dump_json().encode() + b"\n\n"


# Faust pages ---------------------------------------------------------------------


def register(app: AppT, source: SnapshotSource) -> None:
    """Add the KPI pages to a Faust app, answering from `source`.

    The event streams end when the web server shuts down (aiohttp's
    on_shutdown signal), so that they do not hold the worker's stop.
    """
    wall = WALL_PAGE.read_bytes()

    @app.page("/kpis")
    class KpiListView(View):
        """Every KPI with every value."""

        async def get(self, request: Request, **params: Any) -> Response:
            return _json(self, kpis_document(source.latest()))

    @app.page("/kpis/stream")
    class KpiStreamView(View):
        """Server-sent events: the latest snapshot of every key, then changes."""

        async def get(self, request: Request, **params: Any) -> Any:
            return await stream_snapshots(_aiohttp(request), source)

    @app.page("/kpis/{kpi_id}")
    class KpiDetailView(View):
        """One KPI, or 404 with the known ids."""

        async def get(self, request: Request, **params: Any) -> Response:
            kpi_id = str(params["kpi_id"])
            try:
                document = kpi_document(kpi_id, source.latest())
            except CatalogueError:
                return _json(self, not_found_document(kpi_id), status=404)
            return _json(self, document)

    @app.page("/wall")
    class WallView(View):
        """The live KPI wall."""

        async def get(self, request: Request, **params: Any) -> Response:
            return self.bytes(
                wall,
                content_type="text/html",
                headers={"Cache-Control": "no-cache"},
            )

    if isinstance(app.web, AiohttpWeb):

        async def end_streams(_: aiohttp_web.Application) -> None:
            source.close()

        app.web.web_app.on_shutdown.append(end_streams)


async def stream_snapshots(
    request: aiohttp_web.Request, source: SnapshotSource
) -> aiohttp_web.StreamResponse:
    """Answer a request with the server-sent events of `source` until it ends."""
    response = aiohttp_web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    peer = request.remote
    logger.debug("event stream opened peer=%s", peer)

    with source.subscribe() as subscription:
        try:
            await response.write(b"retry: 2000\n\n")
            for snapshot in list(source.latest().values()):
                await response.write(event_stream_message(snapshot))
            while True:
                batch = await subscription.next(HEARTBEAT_SECONDS)
                if batch is None:
                    break
                if not batch:
                    await response.write(b": keepalive\n\n")
                for snapshot in batch:
                    await response.write(event_stream_message(snapshot))
        except ConnectionError:
            # A write to a client that has left fails with ConnectionResetError;
            # the keepalive makes that happen within HEARTBEAT_SECONDS.
            logger.debug("event stream closed by client peer=%s", peer)
    return response


def _json(view: View, document: BaseModel, status: int = 200) -> Response:
    return view.bytes(
        document.model_dump_json().encode(),
        content_type="application/json",
        status=status,
    )


def _aiohttp(request: Request) -> aiohttp_web.Request:
    # Faust's aiohttp driver hands its views aiohttp's own request objects.
    if not isinstance(request, aiohttp_web.Request):
        raise TypeError(
            "the event stream needs Faust's aiohttp web driver (web='aiohttp://')"
        )
    return request
