"""Prometheus exposition: a gauge per KPI series, and the pipeline's own metrics."""

from __future__ import annotations

import logging

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from stream.catalogue import CATALOGUE, SERIES, SeriesKey, Unit

logger = logging.getLogger(__name__)

DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class PipelineMetrics:
    """Operational metrics of the worker: volumes, errors, time and lag."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            "crm_records_consumed",
            "Records of the events topic taken for validation.",
            ["topic"],
            registry=registry,
        )
        self.events = Counter(
            "crm_events",
            "Valid events by type and what became of them.",
            ["type", "outcome"],
            registry=registry,
        )
        self.invalid = Counter(
            "crm_events_invalid",
            "Invalid records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.late = Counter(
            "crm_events_late",
            "Events too old to apply, sent to the late topic.",
            registry=registry,
        )
        self.duplicates = Counter(
            "crm_events_duplicate",
            "Repeats of an event id within the dedupe horizon.",
            registry=registry,
        )
        self.delay = Histogram(
            "crm_event_to_kpi_delay_seconds",
            "Time from an event record's produce timestamp to the KPI update"
            " that includes it.",
            buckets=DELAY_BUCKETS,
            registry=registry,
        )
        self.watermark = Gauge(
            "crm_watermark_timestamp_seconds",
            "Largest event time applied: the time the KPIs are computed at.",
            registry=registry,
        )
        self.lag = Gauge(
            "crm_consumer_lag",
            "Records between the end of a partition and the worker's position.",
            ["topic", "partition"],
            registry=registry,
        )
        self.checkpoints = Counter(
            "crm_checkpoints",
            "Checkpoints of the KPI state written.",
            registry=registry,
        )
        self.checkpoint_bytes = Gauge(
            "crm_checkpoint_bytes",
            "Size of the last checkpoint of the KPI state.",
            registry=registry,
        )
        self.tracked_entities = Gauge(
            "crm_tracked_entities",
            "Entities held in the KPI state (customers, leads, tickets, ...).",
            registry=registry,
        )
        self.kpi_owner = Gauge(
            "crm_kpi_state_owned",
            "1 when this worker holds the KPI state and exports the KPIs.",
            registry=registry,
        )


class KpiGauges:
    """One gauge per catalogue series; a series with no value is absent."""

    def __init__(self, registry: CollectorRegistry, currency: str) -> None:
        self._currency = currency
        self._gauges: dict[str, Gauge] = {}
        self._shown: dict[SeriesKey, float] = {}

        for kpi in CATALOGUE:
            for series in kpi.series:
                labels = ["window"]
                if kpi.dimension is not None:
                    labels.append(kpi.dimension)
                if series.unit is Unit.MONEY:
                    labels.append("currency")
                self._gauges[series.id] = Gauge(
                    series.metric,
                    f"{kpi.title}: {series.help}",
                    labels,
                    registry=registry,
                )

    def _labels(self, key: SeriesKey) -> list[str]:
        series_id, window, value = key
        labels = [window]
        if value is not None:
            labels.append(value)
        if SERIES[series_id][1].unit is Unit.MONEY:
            labels.append(self._currency)
        return labels

    def update(self, values: dict[SeriesKey, float | None]) -> int:
        """Show `values`; remove series that have no value or are not given.

        Returns the number of series whose shown value changed.
        """
        changed = 0
        for key, value in values.items():
            if value is None:
                continue
            if self._shown.get(key) != value:
                self._gauges[key[0]].labels(*self._labels(key)).set(value)
                self._shown[key] = value
                changed += 1

        for key in [key for key in self._shown if values.get(key) is None]:
            self._gauges[key[0]].remove(*self._labels(key))
            del self._shown[key]
            changed += 1
        return changed

    def clear(self) -> None:
        """Remove every KPI series, when this worker no longer holds the state."""
        self.update({})
