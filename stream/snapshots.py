"""KPI snapshots: the values of the engine as feed records, and when to emit them.

The worker holding the KPI state offers the engine's values to a `Snapshotter`
on every tick. It turns each `SeriesKey` into a `KpiSnapshot` and decides which
ones go out: a key is emitted when its value differs from the one last emitted
for it, and no sooner than `interval_seconds` after that emission. A change
held back by the rate limit is not lost: the key still differs at the next
tick, so the latest value always gets out, one interval late at most.

A key whose value holds still while the watermark moves gets the new watermark
too, but not on every move, which would emit every key every interval: once
the watermark has stood still for an interval (the stream paused or ended),
or, while it keeps moving, once per `REFRESH_INTERVALS` intervals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from schemas.kpis import KpiSnapshot, snapshot_key
from stream.catalogue import SERIES, SeriesKey, Unit
from stream.errors import CatalogueError

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TICKS_PER_INTERVAL = 4
"""How many offers per interval `Snapshotter.tick_seconds` asks for.

Faust timers correct their drift by sleeping up to 0.1 s less than the
interval, so ticks at exactly the interval would often fall a hair short of
it and every other change would wait a whole extra interval. Offering several
times per interval keeps a held-back change at most a quarter interval late.
"""

REFRESH_INTERVALS = 60
"""How many intervals a key may keep an old watermark while the watermark moves.

With its value unchanged, a key's snapshot says nothing new but the watermark;
refreshing it at this pace keeps the volume of a feed that only follows the
watermark to one snapshot per key a minute (at the default interval).
"""

Values = Mapping[SeriesKey, float | None]


def watermark_datetime(watermark_ms: int) -> datetime:
    """Return a watermark in epoch milliseconds as an aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=watermark_ms)


def build_snapshot(
    key: SeriesKey,
    value: float | None,
    watermark: datetime,
    computed_at: datetime,
    currency: str,
) -> KpiSnapshot:
    """Return the snapshot of one series value, described from the catalogue.

    Raises:
        CatalogueError: the series id of `key` is not in the catalogue.
    """
    series_id, window, dimension_value = key
    try:
        kpi, series = SERIES[series_id]
    except KeyError:
        raise CatalogueError(
            f"no series {series_id!r} in the catalogue; the KPI engine and"
            " stream/catalogue.py must name the same series"
        ) from None

    return KpiSnapshot(
        key=snapshot_key(series_id, window, dimension_value),
        kpi=kpi.id,
        series=series_id,
        window=window,
        dimension=kpi.dimension if dimension_value is not None else None,
        dimension_value=dimension_value,
        value=value,
        unit=series.unit.value,
        currency=currency if series.unit is Unit.MONEY else None,
        watermark=watermark,
        definition_version=kpi.version,
        computed_at=computed_at,
    )


@dataclass(frozen=True)
class _Emitted:
    """What was last emitted for a key, and when (monotonic seconds)."""

    value: float | None
    watermark_ms: int
    at: float


@dataclass(frozen=True)
class _Offer:
    """The values of one tick, kept to build the latest snapshots on demand."""

    values: dict[SeriesKey, float | None]
    watermark: datetime
    computed_at: datetime


class Snapshotter:
    """Decide which KPI snapshots to emit, and remember the latest of every key.

    Args:
        currency: the reporting currency, stamped on money series.
        interval_seconds: least time between two emissions of the same key.
        clock: monotonic seconds, for the rate limit.
        wall_clock: the time a snapshot is computed at (`computed_at`).
    """

    def __init__(
        self,
        currency: str,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.currency = currency
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._emitted: dict[SeriesKey, _Emitted] = {}
        self._offer: _Offer | None = None
        self._latest: dict[str, KpiSnapshot] = {}
        self._watermark_ms: int | None = None
        self._watermark_moved_at = 0.0

    @property
    def tick_seconds(self) -> float:
        """Return how often to call `offer` for changes to go out on time."""
        return self.interval_seconds / TICKS_PER_INTERVAL

    def offer(self, values: Values, watermark_ms: int) -> list[KpiSnapshot]:
        """Take the engine's current values; return the snapshots to emit now.

        Returns:
            One snapshot per key that was never emitted, or whose last emission
            is at least `interval_seconds` old and that is due (`_due`), in
            the order of `values`.

        Raises:
            CatalogueError: a key names a series the catalogue does not have.
        """
        now = self._clock()
        offer = _Offer(
            dict(values), watermark_datetime(watermark_ms), self._wall_clock()
        )
        self._offer = offer
        self._latest = {}
        if watermark_ms != self._watermark_ms:
            self._watermark_ms = watermark_ms
            self._watermark_moved_at = now
        settled = now - self._watermark_moved_at >= self.interval_seconds

        due: list[KpiSnapshot] = []
        for key, value in offer.values.items():
            last = self._emitted.get(key)
            if last is not None and not self._due(
                last, value, watermark_ms, now, settled
            ):
                continue
            due.append(
                build_snapshot(
                    key, value, offer.watermark, offer.computed_at, self.currency
                )
            )
            self._emitted[key] = _Emitted(value, watermark_ms, now)

        if due:
            logger.debug(
                "snapshots due count=%s watermark=%s", len(due), offer.watermark
            )
        return due

    def _due(
        self,
        last: _Emitted,
        value: float | None,
        watermark_ms: int,
        now: float,
        settled: bool,
    ) -> bool:
        """Whether a key emitted before goes out again now.

        A changed value is due once the interval has passed. An unchanged one
        with a newer watermark is due once the watermark has settled, or
        after `REFRESH_INTERVALS` intervals if it keeps moving.
        """
        since = now - last.at
        if since < self.interval_seconds:
            return False
        if value != last.value:
            return True
        if watermark_ms == last.watermark_ms:
            return False
        return settled or since >= self.interval_seconds * REFRESH_INTERVALS

    def latest(self) -> Mapping[str, KpiSnapshot]:
        """Return the latest snapshot of every key, by snapshot key.

        These are the values of the last offer, emitted or held back by the
        rate limit; they are built on the first call after each offer.
        """
        offer = self._offer
        if offer is not None and not self._latest:
            self._latest = {
                snapshot.key: snapshot
                for snapshot in (
                    build_snapshot(
                        key, value, offer.watermark, offer.computed_at, self.currency
                    )
                    for key, value in offer.values.items()
                )
            }
        return MappingProxyType(self._latest)

    def reset(self) -> None:
        """Forget every emission, for when the KPI state moves to another worker.

        Another worker may emit other values meanwhile; if this one holds the
        state again later, it must not skip a value because it emitted the
        same one before the handover.
        """
        self._emitted.clear()
        self._offer = None
        self._latest = {}
        self._watermark_ms = None
