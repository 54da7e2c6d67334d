"""The KPI topic, Redis and HTTP of a real worker agree with the reference."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from itertools import pairwise

import httpx

from stream import stack
from stream.settings import Settings
from stream.snapshots import watermark_datetime
from tests.integration.conftest import (
    WorkerRun,
    create_topic,
    kpi_differences,
    metric_value,
    wait_until,
)
from tests.integration.feeds import (
    SERIES_KEYS,
    as_served,
    differing,
    event_types,
    events_seen,
    latest_per_key,
    produce_records,
    read_kpi_topic,
    redis_differences,
    redis_latest,
    series_values,
    served,
    served_differences,
    simulate,
)
from tests.integration.test_kpis_match_reference import arrival_order, count_valid
from tests.reference import ReferenceResult, reference_kpis

KPI_IDS = [
    "active_customers",
    "ad_click_through",
    "channel_conversion",
    "complaints",
    "crm_roi",
    "customer_acquisition_cost",
    "customer_churn",
    "customer_retention",
    "email_deliverability",
    "email_open",
    "email_unsubscribe",
    "first_contact_resolution",
    "lead_conversion",
    "lost_deals",
    "margin",
    "newsletter_signup",
    "portfolio_growth",
    "prospect_follow_up",
    "quota_attainment",
    "quotes_issued",
    "sales_cycle",
]
"""The twenty-one KPIs of the product contract, sorted."""

PARTS = 8
PAUSE_SECONDS = 0.3
"""The log goes out in parts this far apart, once the worker consumes, so that
KPIs change faster than the snapshot interval and the rate limit has something
to hold back."""


def wait_served(run: WorkerRun, expected: ReferenceResult, what: str) -> None:
    """Wait until `GET /kpis` shows the reference; fail listing differences."""
    problems: list[str] = []

    def matches() -> bool:
        nonlocal problems
        problems = served_differences(run, expected)
        return not problems

    try:
        wait_until(matches, timeout=30, what=what)
    except BaseException:
        shown = "\n".join(problems[:40])
        raise AssertionError(f"{len(problems)} differences:\n{shown}") from None


async def test_topic_redis_and_http_hold_the_reference_values(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    bootstrap = stack_settings.kafka_bootstrap
    records = simulate(seed=23, events=4000, days=40)
    valid = count_valid(records, stack_settings)
    types = event_types(records)

    await create_topic(bootstrap, worker_run.events_topic, 4)
    worker_run.start()
    size = -(-len(records) // PARTS)
    parts = [records[start : start + size] for start in range(0, len(records), size)]
    await produce_records(bootstrap, worker_run.events_topic, parts[0])
    wait_until(
        lambda: events_seen(worker_run.metrics_text(), types) > 0,
        timeout=60,
        what="the worker consuming",
    )
    for part in parts[1:]:
        await asyncio.sleep(PAUSE_SECONDS)
        await produce_records(bootstrap, worker_run.events_topic, part)
    wait_until(
        lambda: events_seen(worker_run.metrics_text(), types) == valid,
        timeout=60,
        what=f"{valid} valid events processed",
    )
    expected = reference_kpis(
        await arrival_order(bootstrap, worker_run, valid), stack_settings
    )
    assert expected.watermark_ms is not None
    assert expected.duplicates > 0 and expected.late > 0

    # Settled: HTTP, read back from the topic, shows the reference values at
    # the final watermark, and no sink holds anything back.
    wait_served(worker_run, expected, "GET /kpis equal to the reference")
    wait_until(
        lambda: (
            [
                metric_value(
                    worker_run.metrics_text(), "crm_snapshot_backlog", {"sink": sink}
                )
                for sink in ("kafka", "redis")
            ]
            == [0.0, 0.0]
        ),
        timeout=10,
        what="empty snapshot backlogs",
    )

    topic_records = await read_kpi_topic(
        bootstrap, worker_run.environment["CRM_KPI_TOPIC"]
    )
    on_topic = latest_per_key(topic_records)
    in_redis = redis_latest(
        stack_settings.redis_url, worker_run.environment["CRM_REDIS_PREFIX"]
    )
    on_http = served(worker_run)

    # Every key of the catalogue is on every feed, with the same snapshot, and
    # that snapshot holds the reference's value at its final watermark.
    assert sorted(on_topic) == sorted(SERIES_KEYS)
    assert sorted(on_http) == sorted(SERIES_KEYS)
    assert differing(on_topic, in_redis) == []
    assert [
        key for key in SERIES_KEYS if on_http[key] != as_served(on_topic[key])
    ] == []
    assert kpi_differences(series_values(on_topic), expected.values) == []
    final = watermark_datetime(expected.watermark_ms)
    assert sorted(key for key, s in on_topic.items() if s.watermark != final) == []

    # At most one snapshot per key per second on the topic.
    stamps: dict[str, list[int]] = defaultdict(list)
    for record in topic_records:
        stamps[record.snapshot.key].append(record.timestamp_ms)
    gaps = [
        (key, later - earlier)
        for key, times in stamps.items()
        for earlier, later in pairwise(times)
    ]
    close = [(key, gap) for key, gap in gaps if gap < 1000]
    assert close == [], f"{len(close)} of {len(gaps)} gaps under 1 s: {close[:10]}"
    # Keys changing with every part went out again and again, a second apart.
    busiest = max(len(times) for times in stamps.values())
    assert busiest >= 3, f"at most {busiest} snapshots of a key: too few to tell"

    # An unknown KPI answers 404 with the known ids.
    response = httpx.get(f"{worker_run.base_url}/kpis/no_such_kpi", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["known_ids"] == KPI_IDS
    assert "'no_such_kpi'" in body["error"]


async def test_redis_restarted_empty_catches_up_with_every_key(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    bootstrap = stack_settings.kafka_bootstrap
    redis_url = stack_settings.redis_url
    records = simulate(seed=31, events=3000, days=20)
    half = len(records) // 2
    first_valid = count_valid(records[:half], stack_settings)
    valid = count_valid(records, stack_settings)
    types = event_types(records)
    # A Redis without persistence comes back empty; deleting the stack's dump
    # file while Redis is down (it writes one as it stops) does the same.
    redis_dump = stack.Layout.of(stack_settings).data_dir("redis") / "dump.rdb"

    await create_topic(bootstrap, worker_run.events_topic, 2)
    worker_run.start()
    await produce_records(bootstrap, worker_run.events_topic, records[:half])
    wait_until(
        lambda: events_seen(worker_run.metrics_text(), types) == first_valid,
        timeout=60,
        what=f"{first_valid} valid events of the first half processed",
    )
    wait_until(
        lambda: not redis_differences(worker_run, redis_url),
        timeout=30,
        what="redis equal to GET /kpis before the outage",
    )
    text = worker_run.metrics_text()
    errors_before = metric_value(text, "crm_redis_errors_total", {})
    watermark_before = metric_value(text, "crm_watermark_timestamp_seconds", {})

    # Redis stops while the worker processes the second half.
    stack.stop_service(stack_settings, "redis")
    try:
        redis_dump.unlink(missing_ok=True)
        await produce_records(bootstrap, worker_run.events_topic, records[half:])
        wait_until(
            lambda: events_seen(worker_run.metrics_text(), types) == valid,
            timeout=60,
            what=f"all {valid} valid events processed while redis is down",
        )
        expected = reference_kpis(
            await arrival_order(bootstrap, worker_run, valid), stack_settings
        )
        wait_served(worker_run, expected, "GET /kpis moving on without redis")
        text = worker_run.metrics_text()
    finally:
        stack.start_service(stack_settings, "redis")

    assert expected.watermark_ms is not None and watermark_before is not None
    assert metric_value(text, "crm_redis_up", {}) == 0.0
    errors = metric_value(text, "crm_redis_errors_total", {})
    assert errors is not None and errors_before is not None
    assert errors > errors_before
    assert metric_value(text, "crm_snapshot_backlog", {"sink": "redis"}) == len(
        SERIES_KEYS
    )
    watermark = metric_value(text, "crm_watermark_timestamp_seconds", {})
    assert watermark == expected.watermark_ms / 1000 > watermark_before

    wait_until(
        lambda: not redis_differences(worker_run, redis_url),
        timeout=30,
        what="redis equal to GET /kpis after it came back",
    )
    text = worker_run.metrics_text()
    assert metric_value(text, "crm_redis_up", {}) == 1.0
    assert metric_value(text, "crm_snapshot_backlog", {"sink": "redis"}) == 0.0

    # Redis restarts empty again while no KPI changes: the worker notices and
    # writes every key again.
    stack.stop_service(stack_settings, "redis")
    try:
        redis_dump.unlink(missing_ok=True)
    finally:
        stack.start_service(stack_settings, "redis")
    wait_until(
        lambda: not redis_differences(worker_run, redis_url),
        timeout=15,
        what="redis equal to GET /kpis after an idle restart",
    )
    in_redis = redis_latest(redis_url, worker_run.environment["CRM_REDIS_PREFIX"])
    assert sorted(in_redis) == sorted(SERIES_KEYS)
    assert kpi_differences(series_values(in_redis), expected.values) == []
