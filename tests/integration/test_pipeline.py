"""One KPI end to end: real Kafka in, worker, /metrics, real Prometheus out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stream.settings import Settings
from tests.integration.conftest import (
    WorkerRun,
    create_topic,
    metric_value,
    produce,
    prometheus_query,
    wait_until,
)
from tests.integration.event_logs import lead_events


async def test_lead_conversion_reaches_metrics_and_prometheus(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    await create_topic(stack_settings.kafka_bootstrap, worker_run.events_topic, 4)
    worker_run.start()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    records = lead_events(start, created=40, converted=10)
    records.append(b"this is not json")
    await produce(
        stack_settings.kafka_bootstrap,
        worker_run.events_topic,
        records,
        [str(index).encode() for index in range(len(records))],
    )

    # All 50 events lie within one hour, so the 24 h window holds all of them:
    # 10 conversions for 40 leads created.
    expected = 10 / 40
    labels = {"window": "24h"}
    wait_until(
        lambda: (
            metric_value(worker_run.metrics_text(), "crm_lead_conversion_ratio", labels)
            == expected
        ),
        timeout=60,
        what="crm_lead_conversion_ratio{window='24h'} == 0.25 on /metrics",
    )
    text = worker_run.metrics_text()
    assert metric_value(text, "crm_lead_volume", labels) == 40
    assert metric_value(text, "crm_events_invalid_total", {"reason": "not_json"}) == 1

    query = 'crm_lead_conversion_ratio{window="24h", job="crm-kpi-stream"}'

    def prometheus_has_ratio() -> bool:
        result = prometheus_query(stack_settings.prometheus_url, query)
        values = [float(sample["value"][1]) for sample in result]  # type: ignore[index]
        return values == [expected]

    wait_until(prometheus_has_ratio, timeout=60, what=f"Prometheus answering {query}")
