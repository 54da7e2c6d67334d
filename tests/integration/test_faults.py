"""Nothing lost and nothing counted twice under crashes, outages and bad input."""

from __future__ import annotations

import base64
import random
import time

import orjson

from stream import stack
from stream.catalogue import all_keys
from stream.ingest import REASONS
from stream.settings import Settings
from tests.integration.conftest import (
    WorkerRun,
    create_topic,
    kpis_from_metrics,
    produce,
    read_to_end,
    wait_until,
)
from tests.integration.event_logs import read_admitted
from tests.integration.faults import (
    Incarnation,
    acquisitions,
    admitted_committed,
    applied_twice,
    arrival_log,
    count_valid,
    dead_letter_reasons,
    dead_letter_sources,
    draw_hostile,
    event_counts,
    eventually,
    free_port,
    http_snapshots,
    invalid_count,
    invalid_reasons,
    letters_of,
    outcomes_after,
    outcomes_between,
    payload_of,
    produce_records,
    records_consumed,
    redis_snapshots,
    redis_up,
    reference_of,
    releases,
    report,
    rss_bytes,
    safe_metrics,
    simulated_replay,
    wait_grows,
    wait_ingested,
    wait_kpis_equal,
    wait_owner,
    wait_resumed,
    wait_watermark,
)

PARTITIONS = 4
FAST_FAILOVER = {"CRM_KAFKA_SESSION_TIMEOUT_SECONDS": "6"}
"""Kafka gives a killed member's partitions away only once its session times
out (10 s by default here); 6 s, the broker's least, keeps the tests short."""

CRASH_EVENTS = 100_000
CRASH_DAYS = 20
"""Short enough that every event is in the 30-day windows at the end, so an
event applied twice shows in the KPIs."""
CRASH_HORIZON_SECONDS = 3600
"""A dedupe horizon well under the event time a second of replay covers (a
day or more), so that batches forwarded again after a crash come after their
first copy left it: the event-id check alone would apply them twice."""
CRASHES = 5
CRASH_SEED = 6


async def test_kpis_survive_repeated_sigkill_during_a_replay(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    bootstrap = stack_settings.kafka_bootstrap
    app_id = worker_run.environment["CRM_APP_ID"]
    worker_run.environment.update(FAST_FAILOVER)
    worker_run.environment["CRM_DEDUPE_HORIZON_SECONDS"] = str(CRASH_HORIZON_SECONDS)
    settings = stack_settings.model_copy(
        update={"dedupe_horizon_seconds": CRASH_HORIZON_SECONDS}
    )
    records = simulated_replay(CRASH_EVENTS, CRASH_DAYS, seed=CRASH_SEED)
    valid = count_valid(records, settings)
    times = [r.event_time for r in records if r.kind == "valid" and r.event_time]
    rng = random.Random(CRASH_SEED)
    # One crash hits a worker still joining the group or restoring its state;
    # the others hit it while it applies records, once the watermark has
    # passed a random point of the replay, at a random moment after that.
    early = rng.randrange(CRASHES)
    marks = sorted(
        min(times) + rng.uniform(0.05, 0.95) * (max(times) - min(times))
        for _ in range(CRASHES)
    )

    await create_topic(bootstrap, worker_run.events_topic, PARTITIONS)
    launched = time.monotonic()
    process = worker_run.start()
    await produce_records(settings, worker_run.events_topic, records)

    incarnations: list[Incarnation] = []
    for crash in range(CRASHES):
        incarnation = Incarnation(process.pid, launched)
        if crash == early:
            time.sleep(rng.uniform(0.0, 2.0))
        else:
            incarnation.resumed = wait_resumed(worker_run, timeout=60)
            wait_watermark(worker_run, marks[crash], timeout=120)
            time.sleep(rng.uniform(0.0, 1.0))
        incarnation.killed = time.monotonic()
        text = safe_metrics(worker_run)
        incarnation.counted = sum(event_counts(text).values()) if text else None
        worker_run.stop(process, kill=True)
        incarnation.committed = await admitted_committed(bootstrap, app_id)
        incarnations.append(incarnation)
        launched = time.monotonic()
        process = worker_run.start()

    last = Incarnation(process.pid, launched)
    incarnations.append(last)
    last.resumed = wait_resumed(worker_run, timeout=60)
    await wait_ingested(bootstrap, worker_run, timeout=180)
    log = arrival_log(await read_admitted(bootstrap, app_id))
    expected = reference_of(log.first_copies, settings)
    currency = settings.reporting_currency
    wait_kpis_equal(lambda: safe_metrics(worker_run), expected, currency, 120)
    last.caught_up = time.monotonic()
    restored = acquisitions(worker_run.log)
    report("sigkill", incarnations, restored, log, settings)

    # Nothing lost: every valid record reached the KPI stage, and the KPIs
    # are those of every record taken once, in the order the stage read them.
    assert log.sources == valid
    assert expected.duplicates > 0 and expected.late > 0
    # The crashes did make the ingest stage forward batches again, and some of
    # those copies came after the watermark had moved past the dedupe
    # horizon, where the event-id check alone would apply them twice.
    assert log.reforwarded > 0
    assert applied_twice(log, settings) > 0

    # Each worker restored a checkpoint no older than the one before, and the
    # group's committed admitted offset never passed the checkpoint: at each
    # kill it was at most one past the checkpoint the next worker restored.
    offsets = [restored[i.pid][0] for i in incarnations if i.pid in restored]
    assert offsets == sorted(offsets) and offsets[-1] >= 0
    assert len(restored[last.pid]) == 1
    for number, killed in enumerate(incarnations[:-1]):
        following = [i for i in incarnations[number + 1 :] if i.pid in restored]
        next_restored = restored[following[0].pid][0]
        assert (killed.committed or 0) <= next_restored + 1, (killed, next_restored)

    # Nothing counted twice: the last worker counted exactly the records after
    # its checkpoint, a repeated source record as a duplicate.
    counts = outcomes_after(log, restored[last.pid][0], settings)

    def counted() -> bool:
        text = safe_metrics(worker_run)
        return text is not None and event_counts(text) == counts

    wait_until(counted, timeout=30, what=f"the last worker to count {counts}")


BROKER_EVENTS = 30_000
BROKER_DAYS = 20


async def test_worker_rides_out_a_broker_restart(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    bootstrap = stack_settings.kafka_bootstrap
    app_id = worker_run.environment["CRM_APP_ID"]
    records = simulated_replay(BROKER_EVENTS, BROKER_DAYS, seed=7)
    valid = count_valid(records, stack_settings)
    invalid = len(records) - valid

    half = len(records) // 2
    await create_topic(bootstrap, worker_run.events_topic, PARTITIONS)
    launched = time.monotonic()
    process = worker_run.start()
    await produce_records(stack_settings, worker_run.events_topic, records[:half])
    worker = Incarnation(process.pid, launched)
    worker.resumed = wait_resumed(worker_run, timeout=60)

    # Restart the broker while the worker has a backlog to work through; the
    # other half of the records arrives once the broker is back.
    down = time.monotonic()
    stack.restart_service(stack_settings, "kafka")
    back = time.monotonic()
    await produce_records(stack_settings, worker_run.events_topic, records[half:])
    consumed = wait_grows(worker_run, records_consumed, timeout=120)
    counted = wait_grows(worker_run, lambda text: sum(event_counts(text).values()), 120)

    await wait_ingested(bootstrap, worker_run, timeout=180)
    log = arrival_log(await read_admitted(bootstrap, app_id))
    expected = reference_of(log.first_copies, stack_settings)
    currency = stack_settings.reporting_currency
    wait_kpis_equal(lambda: safe_metrics(worker_run), expected, currency, 120)
    worker.caught_up = time.monotonic()
    report("broker", [worker], acquisitions(worker_run.log), log, stack_settings)
    print(
        f"recovery broker down_s={back - down:.1f}"
        f" ingest_resumed_after_back_s={consumed - back:.1f}"
        f" kpis_moved_after_back_s={counted - back:.1f}"
        f" caught_up_after_back_s={worker.caught_up - back:.1f}"
    )

    # The same process reconnected by itself and kept its state.
    assert process.poll() is None
    assert acquisitions(worker_run.log) == {process.pid: [-1]}

    # Nothing lost, nothing counted twice: every record reached the KPI stage
    # or the dead-letter topic once at least, and the KPIs and counts are
    # those of each record taken once.
    assert log.sources == valid
    letters = await read_to_end(
        bootstrap, worker_run.environment["CRM_DEAD_LETTER_TOPIC"]
    )
    assert len(dead_letter_sources(letters)) == invalid
    counts = outcomes_after(log, -1, stack_settings)
    wait_until(
        lambda: event_counts(safe_metrics(worker_run) or "") == counts,
        timeout=30,
        what=f"the worker to count {counts}",
    )


REBALANCE_EVENTS = 40_000
REBALANCE_DAYS = 20


async def test_kpis_survive_growing_to_two_workers_and_back(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    bootstrap = stack_settings.kafka_bootstrap
    app_id = worker_run.environment["CRM_APP_ID"]
    records = simulated_replay(REBALANCE_EVENTS, REBALANCE_DAYS, seed=8)
    valid = count_valid(records, stack_settings)
    times = [r.event_time for r in records if r.kind == "valid" and r.event_time]
    span = max(times) - min(times)
    ports = (worker_run.port, free_port())

    # A third of the records comes before each change, so there is always
    # work for the workers the group has.
    third = len(records) // 3
    await create_topic(bootstrap, worker_run.events_topic, PARTITIONS)
    first = worker_run.start()
    await produce_records(stack_settings, worker_run.events_topic, records[:third])
    wait_resumed(worker_run, timeout=60)
    wait_watermark(worker_run, min(times) + span // 6, timeout=120)

    # Grow: the group rebalances; the events partitions are shared and the
    # KPI state stays or moves, restored from the checkpoint either way.
    grown = time.monotonic()
    second = worker_run.start(port=ports[1])
    topic = worker_run.events_topic
    sent = third
    shared: float | None = None
    while sent < 2 * third and shared is None:
        await produce_records(stack_settings, topic, records[sent : sent + 500])
        sent += 500
        time.sleep(0.5)
        if all(
            records_consumed(safe_metrics(worker_run, port) or "") > 0 for port in ports
        ):
            shared = time.monotonic()
    assert shared is not None, "the second worker read no event"
    await produce_records(stack_settings, topic, records[sent : 2 * third])
    sent = max(sent, 2 * third)
    owner = wait_owner(worker_run, ports, timeout=90)
    wait_watermark(worker_run, min(times) + span // 3, timeout=120, port=owner)

    # Shrink: stop the worker holding the KPI state; the other takes it over.
    leaving = first if owner == ports[0] else second
    staying = ports[1] if owner == ports[0] else ports[0]
    shrunk = time.monotonic()
    worker_run.stop(leaving)
    await produce_records(stack_settings, topic, records[sent:])
    assert wait_owner(worker_run, [staying], timeout=90) == staying
    taken_over = wait_grows(
        worker_run, lambda t: sum(event_counts(t).values()), 60, port=staying
    )

    await wait_ingested(bootstrap, worker_run, timeout=180)
    log = arrival_log(await read_admitted(bootstrap, app_id))
    expected = reference_of(log.first_copies, stack_settings)
    currency = stack_settings.reporting_currency
    wait_kpis_equal(lambda: safe_metrics(worker_run, staying), expected, currency, 120)
    done = time.monotonic()
    restored = acquisitions(worker_run.log)
    print(
        f"recovery rebalance grow_to_shared_s={shared - grown:.1f}"
        f" shrink_to_taken_over_s={taken_over - shrunk:.1f}"
        f" caught_up_after_shrink_s={done - shrunk:.1f}"
        f" acquisitions={restored} releases={releases(worker_run.log)}"
        f" reforwarded={log.reforwarded}"
    )

    assert log.sources == valid
    assert leaving.poll() == 0
    # The worker left holds the state, and counted exactly the records of its
    # terms as owner: each from a restored checkpoint to the release.
    stayer = (second if leaving is first else first).pid
    released = releases(worker_run.log).get(stayer, [])
    terms = list(zip(restored[stayer][:-1], released, strict=True))
    counts = outcomes_between(log, terms, restored[stayer][-1], stack_settings)
    wait_until(
        lambda: event_counts(safe_metrics(worker_run, staying) or "") == counts,
        timeout=30,
        what=f"the remaining worker to count {counts}",
    )


REDIS_EVENTS = 30_000
REDIS_DAYS = 20


async def test_kpis_keep_moving_through_a_redis_outage_and_redis_catches_up(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    bootstrap = stack_settings.kafka_bootstrap
    app_id = worker_run.environment["CRM_APP_ID"]
    currency = stack_settings.reporting_currency
    records = simulated_replay(REDIS_EVENTS, REDIS_DAYS, seed=9)

    half = len(records) // 2
    await create_topic(bootstrap, worker_run.events_topic, PARTITIONS)
    process = worker_run.start()
    await produce_records(stack_settings, worker_run.events_topic, records[:half])
    wait_resumed(worker_run, timeout=60)

    # The other half arrives while Redis is away, so the KPIs have to move.
    stack.stop_service(stack_settings, "redis")
    try:
        await produce_records(stack_settings, worker_run.events_topic, records[half:])
        # The worker notices at its next write, and the KPIs go on changing.
        wait_until(lambda: redis_up(worker_run) == 0, timeout=30, what="crm_redis_up 0")
        seen: list[dict[tuple[str, str, str | None], float]] = []

        def kpis_moved() -> bool:
            text = safe_metrics(worker_run)
            if text is None:
                return False
            assert redis_up(worker_run, text) == 0
            values = kpis_from_metrics(text, currency)
            if not seen or values != seen[-1]:
                seen.append(values)
            return len(seen) >= 3

        wait_until(kpis_moved, timeout=60, what="the KPIs to change twice")
    finally:
        back = time.monotonic()
        stack.start_service(stack_settings, "redis")
    wait_until(lambda: redis_up(worker_run) == 1, timeout=30, what="crm_redis_up 1")
    up = time.monotonic()

    await wait_ingested(bootstrap, worker_run, timeout=180)
    log = arrival_log(await read_admitted(bootstrap, app_id))
    expected = reference_of(log.first_copies, stack_settings)
    wait_kpis_equal(lambda: safe_metrics(worker_run), expected, currency, 120)

    # Redis holds the same latest snapshot of every key as the HTTP API.
    stored: dict[str, object] = {}
    served: dict[str, object] = {}

    async def redis_equals_http() -> bool:
        nonlocal stored, served
        stored = await redis_snapshots(stack_settings, worker_run)
        served = http_snapshots(worker_run)
        return bool(served) and stored == served

    synced = await eventually(redis_equals_http, 60, "Redis to equal GET /kpis")
    print(
        f"recovery redis up_after_back_s={up - back:.1f}"
        f" redis_equal_http_after_back_s={synced - back:.1f}"
        f" kpi_states_seen_while_down={len(seen)}"
    )
    assert process.poll() is None
    assert len(served) == len(all_keys())


HOSTILE_RECORDS = 12_000
BIG_RECORDS = 20
BIG_RECORD_BYTES = 1_000_000
"""Just under the broker's default message.max.bytes (1 MiB)."""
RSS_GROWTH_BYTES = 64 * 2**20
"""What the big records may add to the worker's memory: three times their raw
size. Parsed, one of them alone would take some 20 MB of Python objects."""


async def test_hostile_records_never_crash_the_worker_and_each_is_accounted_for(
    stack_settings: Settings, worker_run: WorkerRun
) -> None:
    bootstrap = stack_settings.kafka_bootstrap
    limit = stack_settings.max_record_bytes
    simulated = simulated_replay(3_000, 5, seed=10)
    templates = [orjson.loads(r.value) for r in simulated if r.kind == "valid"]
    hostile = draw_hostile(templates, limit, HOSTILE_RECORDS, seed=6)
    mixed: list[tuple[bytes | None, bytes]] = [(r.key, r.value) for r in simulated]
    mixed += [(None, value) for value in hostile]
    random.Random(6).shuffle(mixed)
    clean = {r.value for r in simulated if r.kind == "valid"}

    await create_topic(bootstrap, worker_run.events_topic, PARTITIONS)
    process = worker_run.start()
    await produce_records(stack_settings, worker_run.events_topic, mixed)
    letters_topic = worker_run.environment["CRM_DEAD_LETTER_TOPIC"]

    def all_taken(expected: int) -> bool:
        text = safe_metrics(worker_run)
        if text is None:
            return False
        return sum(event_counts(text).values()) + invalid_count(text) == expected

    started = time.monotonic()
    wait_until(lambda: all_taken(len(mixed)), timeout=120, what="every record taken")
    taken = time.monotonic() - started
    text = safe_metrics(worker_run) or ""
    letters = await read_to_end(bootstrap, letters_topic)
    reasons = dead_letter_reasons(letters)
    produced = await read_to_end(bootstrap, worker_run.events_topic)
    print(
        f"recovery hostile records={len(mixed)} taken_s={taken:.1f}"
        f" counted={event_counts(text)} dead_letters={dict(reasons)}"
    )

    # Every record is counted once: applied, duplicate, late or dead letter.
    assert len(produced) == len(mixed)
    assert sum(event_counts(text).values()) + len(letters) == len(mixed)
    assert reasons == invalid_reasons(text)
    assert set(reasons) <= set(REASONS)
    # Records over the size limit are refused unread; the clean events of the
    # simulator are never refused.
    assert reasons["too_large"] == sum(1 for _, v in mixed if len(v) > limit)
    assert reasons["too_deep"] > 0
    refused = {payload_of(letter) for letter in letters_of(letters)}
    assert not clean & refused

    # A few records of the largest size the broker takes cost little memory:
    # they are refused on their length, before any parsing.
    before = rss_bytes(process.pid)
    # 330,000 empty lists each, were they parsed.
    big = (
        b'{"event_id":"evt-big","type":"site.visit","pad":['
        + b"[]," * ((BIG_RECORD_BYTES - 60) // 3)
        + b"[]]}"
    )
    topic = worker_run.events_topic
    await produce(bootstrap, topic, [big] * BIG_RECORDS, [None] * BIG_RECORDS)
    wait_until(
        lambda: all_taken(len(mixed) + BIG_RECORDS), timeout=60, what="big records"
    )
    after = rss_bytes(process.pid)
    print(f"recovery hostile rss_before={before} rss_after={after}")
    assert after - before < RSS_GROWTH_BYTES
    big_letters = [
        letter
        for letter in letters_of(await read_to_end(bootstrap, letters_topic))
        if letter.payload_size >= BIG_RECORD_BYTES - 60
    ]
    assert len(big_letters) == BIG_RECORDS
    assert all(
        letter.reason == "too_large"
        and letter.payload_truncated
        and len(base64.b64decode(letter.payload_base64)) == limit
        for letter in big_letters
    )

    # The same process took it all.
    assert process.poll() is None
    assert acquisitions(worker_run.log) == {process.pid: [-1]}
