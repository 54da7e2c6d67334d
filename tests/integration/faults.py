"""Shared pieces of the fault tests: replays, crash control and the final checks."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.api import KpiListing
from schemas.dead_letters import DeadLetter
from schemas.events import Event
from schemas.kpis import KpiSnapshot
from stream import simulator
from stream.errors import InvalidEventError
from stream.ingest import decode
from stream.producer import send
from stream.settings import Settings
from tests.integration.conftest import (
    WorkerRun,
    kpi_differences,
    kpis_from_metrics,
    metric_value,
    wait_until,
)
from tests.integration.event_logs import AdmittedRecord
from tests.reference import ReferenceResult, admit, reference_kpis

OUTCOMES = ("applied", "duplicate", "late")


def simulated_replay(
    events: int, days: float, seed: int
) -> list[simulator.SimulatedRecord]:
    """Return a seeded history of `days` ending now, with every kind of fault."""
    options = simulator.SimulationOptions(
        seed=seed,
        events=events,
        density=events / (days * 86400),
        start=datetime.now(UTC) - timedelta(days=days),
        duplicate_rate=0.02,
        out_of_order_rate=0.05,
        late_rate=0.005,
        invalid_rate=0.01,
    )
    return list(simulator.generate(options))


def count_valid(
    records: Sequence[simulator.SimulatedRecord], settings: Settings
) -> int:
    """Count the records the worker's validation admits."""
    now = datetime.now(UTC)
    valid = 0
    for record in records:
        try:
            decode(record.value, settings, now)
        except InvalidEventError:
            continue
        valid += 1
    return valid


async def produce_records(
    settings: Settings,
    topic: str,
    records: Sequence[simulator.SimulatedRecord | tuple[bytes | None, bytes]],
) -> None:
    """Produce records (simulated, or key and value) with the replay tool's producer."""
    pairs = (
        (r.key, r.value) if isinstance(r, simulator.SimulatedRecord) else r
        for r in records
    )
    await send(pairs, settings, topic=topic)


@dataclass(frozen=True)
class ArrivalLog:
    """The events in the order the KPI stage read them, and what repeats."""

    events: list[Event]
    """Every admitted event in admitted-topic order, repeats included."""
    offsets: list[int]
    """The admitted-topic offset of each of `events`."""
    repeats: list[bool]
    """Whether each of `events` is a copy of a source record seen before."""
    first_copies: list[Event]
    """The same order keeping only the first copy of each source record."""
    sources: int
    """Distinct source records (events-topic partition and offset)."""
    reforwarded: int
    """Copies of a source record forwarded again (ingest is at-least-once)."""


def arrival_log(records: Sequence[AdmittedRecord]) -> ArrivalLog:
    """Unpack the admitted topic; find the source records forwarded twice."""
    events: list[Event] = []
    offsets: list[int] = []
    repeats: list[bool] = []
    first_copies: list[Event] = []
    seen: set[tuple[int, int]] = set()

    for record in records:
        for admitted in record.events:
            source = (admitted.partition, admitted.offset)
            events.append(admitted.event)
            offsets.append(record.offset)
            repeats.append(source in seen)
            if source not in seen:
                seen.add(source)
                first_copies.append(admitted.event)

    reforwarded = len(events) - len(first_copies)
    return ArrivalLog(events, offsets, repeats, first_copies, len(seen), reforwarded)


def outcomes_after(log: ArrivalLog, offset: int, settings: Settings) -> dict[str, int]:
    """Count the outcomes of the events past an admitted offset.

    A restarted worker restores the checkpoint at `offset` and counts only the
    events after it in its metrics. A repeated source record is a duplicate;
    the first copies have the reference's outcomes in their order.
    """
    cut = sum(
        1
        for at, repeat in zip(log.offsets, log.repeats, strict=True)
        if at <= offset and not repeat
    )
    repeats_after = sum(
        1
        for at, repeat in zip(log.offsets, log.repeats, strict=True)
        if at > offset and repeat
    )
    before, _ = admit(log.first_copies[:cut], settings)
    total, _ = admit(log.first_copies, settings)
    return {
        "applied": total.applied - before.applied,
        "duplicate": total.duplicates - before.duplicates + repeats_after,
        "late": total.late - before.late,
    }


def outcomes_between(
    log: ArrivalLog,
    terms: Sequence[tuple[int, int]],
    last: int,
    settings: Settings,
) -> dict[str, int]:
    """Count the outcomes a worker counted over its terms as owner of the state.

    Each term runs from a restored checkpoint offset to the offset applied when
    the state was released, `(restored, released]`; the last term runs from
    `last` to the end.
    """
    total = outcomes_after(log, last, settings)
    for restored, released in terms:
        start = outcomes_after(log, restored, settings)
        end = outcomes_after(log, released, settings)
        for outcome in total:
            total[outcome] += start[outcome] - end[outcome]
    return total


def event_counts(text: str) -> dict[str, int]:
    """Sum `crm_events_total` of one worker by outcome over every event type."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = dict.fromkeys(OUTCOMES, 0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "crm_events_total":
                counts[sample.labels["outcome"]] += int(sample.value)
    return counts


def processed(text: str) -> int:
    """Return how many admitted events one worker has counted, all outcomes."""
    return sum(event_counts(text).values())


def safe_metrics(run: WorkerRun, port: int | None = None) -> str | None:
    """Return a worker's exposition text, or None while it does not answer."""
    try:
        return run.metrics_text(port)
    except httpx.HTTPError:
        return None


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """Return the offsets a consumer group has committed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in found.items()}
    finally:
        await admin.close()


async def admitted_committed(bootstrap: str, app_id: str) -> int | None:
    """Return the admitted-topic offset the app's group has committed, if any."""
    committed = await committed_offsets(bootstrap, app_id)
    return committed.get(TopicPartition(f"{app_id}-admitted", 0))


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """Return the end offset of every partition of a topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def wait_ingested(bootstrap: str, run: WorkerRun, timeout: float) -> float:
    """Wait until the group has committed every events-topic record; return s.

    The ingest stage commits what it forwarded, so from then on the admitted
    topic no longer grows.
    """
    started = time.monotonic()
    group = run.environment["CRM_APP_ID"]
    ends = await end_offsets(bootstrap, run.events_topic)
    deadline = started + timeout
    while time.monotonic() < deadline:
        committed = await committed_offsets(bootstrap, group)
        if all(committed.get(tp, -1) >= end for tp, end in ends.items()):
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"events topic {run.events_topic} not fully ingested after {timeout} s:"
        f" committed {committed}, ends {ends}"
    )


def wait_kpis_equal(
    read: Callable[[], str | None],
    expected: ReferenceResult,
    currency: str,
    timeout: float,
) -> float:
    """Wait until a worker's KPIs equal the reference; return the seconds."""
    started = time.monotonic()
    problems: list[str] = ["worker did not answer"]
    state = ""

    def matches() -> bool:
        nonlocal problems, state
        text = read()
        if text is None:
            return False
        problems = kpi_differences(kpis_from_metrics(text, currency), expected.values)
        watermark = metric_value(text, "crm_watermark_timestamp_seconds", {})
        state = (
            f"worker watermark {watermark}, reference {expected.watermark_ms};"
            f" worker counted {event_counts(text)}"
        )
        return not problems

    try:
        wait_until(matches, timeout=timeout, what="KPIs equal to the reference")
    except BaseException:
        shown = "\n".join(problems[:40])
        raise AssertionError(
            f"{len(problems)} differences ({state}):\n{shown}"
        ) from None
    return time.monotonic() - started


ACQUIRED = re.compile(r"\[(\d+)\] \[INFO\] kpi state acquired applied_offset=(-?\d+)")


def acquisitions(log: Path) -> dict[int, list[int]]:
    """Return the checkpoint offsets each worker process restored, by pid."""
    found: dict[int, list[int]] = {}
    for pid, offset in ACQUIRED.findall(log.read_text(errors="replace")):
        found.setdefault(int(pid), []).append(int(offset))
    return found


RELEASED = re.compile(r"\[(\d+)\] \[INFO\] kpi state released applied_offset=(-?\d+)")


def releases(log: Path) -> dict[int, list[int]]:
    """Return the offsets each worker process had applied when it released."""
    found: dict[int, list[int]] = {}
    for pid, offset in RELEASED.findall(log.read_text(errors="replace")):
        found.setdefault(int(pid), []).append(int(offset))
    return found


def wait_owner(run: WorkerRun, ports: Sequence[int], timeout: float) -> int:
    """Wait until one of the workers holds the KPI state; return its port."""
    owner: list[int] = []

    def owned() -> bool:
        for port in ports:
            text = safe_metrics(run, port)
            if text and metric_value(text, "crm_kpi_state_owned", {}) == 1:
                owner[:] = [port]
                return True
        return False

    wait_until(owned, timeout=timeout, what=f"a worker on {ports} to hold the state")
    return owner[0]


def free_port() -> int:
    """Return a TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Incarnation:
    """One worker process of a fault test and when things happened to it."""

    pid: int
    started: float
    """`time.monotonic()` when it was launched."""
    resumed: float | None = None
    """When it had counted its first event."""
    killed: float | None = None
    counted: int | None = None
    """Events it had counted when it was killed."""
    committed: int | None = None
    """The admitted-topic offset its group had committed when it was killed."""
    caught_up: float | None = None
    """When its KPIs equalled the reference."""


def wait_resumed(run: WorkerRun, timeout: float, port: int | None = None) -> float:
    """Wait until a worker has counted an event; return `time.monotonic()`."""

    def resumed() -> bool:
        text = safe_metrics(run, port)
        return text is not None and sum(event_counts(text).values()) > 0

    wait_until(resumed, timeout=timeout, what="the worker to count an event")
    return time.monotonic()


def wait_watermark(
    run: WorkerRun, millis: int, timeout: float, port: int | None = None
) -> None:
    """Wait until a worker's watermark has reached an event time."""

    def reached() -> bool:
        text = safe_metrics(run, port)
        found = text and metric_value(text, "crm_watermark_timestamp_seconds", {})
        return bool(found) and found * 1000 >= millis

    wait_until(reached, timeout=timeout, what=f"the watermark to reach {millis} ms")


def records_consumed(text: str) -> float:
    """Return how many events-topic records one worker has read."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "crm_records_consumed_total"
    )


def wait_grows(
    run: WorkerRun,
    measure: Callable[[str], float],
    timeout: float,
    port: int | None = None,
) -> float:
    """Wait until a measure of a worker's metrics grows; return when it did.

    The first answer of the worker sets the starting value.
    """
    start: float | None = None

    def grown() -> bool:
        nonlocal start
        text = safe_metrics(run, port)
        if text is None:
            return False
        value = measure(text)
        if start is None:
            start = value
        return value > start

    wait_until(
        grown, timeout=timeout, what="the worker's metrics to move", interval=0.1
    )
    return time.monotonic()


def redis_up(run: WorkerRun, text: str | None = None) -> float | None:
    """Return a worker's `crm_redis_up`, or None while it does not answer."""
    text = text if text is not None else safe_metrics(run)
    return None if text is None else metric_value(text, "crm_redis_up", {})


Shown = tuple[float | None, datetime | None, datetime | None]
"""A published value: the figure, its watermark and when it was computed."""


async def redis_snapshots(settings: Settings, run: WorkerRun) -> dict[str, Shown]:
    """Return the latest snapshot of every key that Redis holds for a run."""
    from redis.asyncio import Redis

    from stream.sinks import latest_key

    client = Redis.from_url(settings.redis_url)
    try:
        stored = await client.hgetall(latest_key(run.environment["CRM_REDIS_PREFIX"]))
    finally:
        await client.aclose()
    found: dict[str, Shown] = {}
    for key, body in stored.items():
        snapshot = KpiSnapshot.model_validate_json(body)
        found[key.decode()] = (snapshot.value, snapshot.watermark, snapshot.computed_at)
    return found


def http_snapshots(run: WorkerRun, port: int | None = None) -> dict[str, Shown]:
    """Return every published value a worker serves on `GET /kpis`."""
    response = httpx.get(f"http://127.0.0.1:{port or run.port}/kpis", timeout=10)
    response.raise_for_status()
    listing = KpiListing.model_validate_json(response.content)
    return {
        value.key: (value.value, value.watermark, value.computed_at)
        for kpi in listing.kpis
        for series in kpi.series
        for value in series.values
        if value.watermark is not None
    }


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout: float, what: str
) -> float:
    """Await `condition()` until true; return `time.monotonic()` then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return time.monotonic()
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def report(
    name: str,
    incarnations: Sequence[Incarnation],
    restored: dict[int, list[int]],
    log: ArrivalLog,
    settings: Settings,
) -> None:
    """Print what each worker did and how long it took (`pytest -s` shows it)."""
    for number, one in enumerate(incarnations):
        resumed = one.resumed - one.started if one.resumed else None
        caught_up = one.caught_up - one.started if one.caught_up else None
        ran = (one.killed or one.caught_up or one.started) - one.started
        print(
            f"recovery {name} worker={number} pid={one.pid}"
            f" restored={restored.get(one.pid)} resumed_s={_seconds(resumed)}"
            f" ran_s={ran:.1f} counted={one.counted} committed={one.committed}"
            f" caught_up_s={_seconds(caught_up)}"
        )
    print(
        f"recovery {name} admitted={len(log.events)} sources={log.sources}"
        f" reforwarded={log.reforwarded}"
        f" applied_twice_by_event_id_alone={applied_twice(log, settings)}"
    )


def applied_twice(log: ArrivalLog, settings: Settings) -> int:
    """Count the repeats the event-id check alone would apply a second time.

    Those whose first copy left the dedupe horizon before they arrived.
    """
    by_event_id, _ = admit(log.events, settings)
    once, _ = admit(log.first_copies, settings)
    return by_event_id.applied - once.applied


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def rss_bytes(pid: int) -> int:
    """Return the resident set size of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def dead_letter_reasons(
    letters: Sequence[tuple[bytes | None, bytes]],
) -> Counter[str]:
    """Count the dead letters of a topic by reason."""
    return Counter(DeadLetter.model_validate_json(v).reason for _, v in letters)


def letters_of(letters: Sequence[tuple[bytes | None, bytes]]) -> list[DeadLetter]:
    """Decode the dead letters of a topic."""
    return [DeadLetter.model_validate_json(value) for _, value in letters]


def payload_of(letter: DeadLetter) -> bytes:
    """Return the record bytes a dead letter kept."""
    return base64.b64decode(letter.payload_base64)


def invalid_reasons(text: str) -> Counter[str]:
    """Return one worker's `crm_events_invalid_total` by reason (zeros left out)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "crm_events_invalid_total" and sample.value:
                found[sample.labels["reason"]] += int(sample.value)
    return found


def invalid_count(text: str) -> int:
    """Return how many records one worker sent to the dead-letter topic."""
    return sum(invalid_reasons(text).values())


def dead_letter_sources(
    letters: Sequence[tuple[bytes | None, bytes]],
) -> set[tuple[int, int]]:
    """Return the events-topic partition and offset of each dead letter."""
    found = set()
    for _, value in letters:
        letter = DeadLetter.model_validate_json(value)
        found.add((letter.partition, letter.offset))
    return found


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Return a sample that must exist in an exposition text."""
    found = metric_value(text, name, labels or {})
    assert found is not None, f"no sample {name} {labels or {}}"
    return found


def reference_of(events: Sequence[Event], settings: Settings) -> ReferenceResult:
    """Compute the reference KPIs of events in arrival order."""
    return reference_kpis(list(events), settings)


# Hostile input -------------------------------------------------------------

BOUNDARY_TIMES = (
    "1999-12-31T23:59:59.999Z",
    "2000-01-01T00:00:00Z",
    "2000-01-01T00:00:00.000+00:00",
    "2000-01-01T00:59:59.999+01:00",
    "2099-12-31T23:59:59.999Z",
    "2100-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "2024-02-29T12:00:00Z",
    "2023-02-29T12:00:00Z",
    "2024-06-01T24:00:00Z",
    "2024-06-01T12:00:00",
    "2024-06-01T12:00:00+14:00",
    "2024-06-01T12:00:00-12:00",
    "2024-06-01T12:00:00.123456789Z",
    "2024-06-01",
    "1717243200",
    "",
)
"""Event times at and around the accepted years, and malformed ones."""

BOUNDARY_AMOUNTS = (
    "0",
    "0.00",
    "-0",
    "-0.01",
    "0.001",
    "0.005",
    "999999999999999.99",
    "999999999999999.999",
    "1000000000000000",
    "1e15",
    "1E-400",
    "1e400",
    "-1e308",
    "123456789012345678901234567890.123456789",
    str(10**40),
    "00012",
    "NaN",
    "Infinity",
    "-Infinity",
    "nan",
    '"12.5"',
    '"1e3"',
    '"NaN"',
    '""',
    "true",
    "null",
    "[]",
    "{}",
)
"""Raw JSON for a money field: limits of the contract and literals JSON lacks."""

ODD_TEXT = (
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\ufeff",  # byte order mark
    "\x00",
    "\x1b[31m",
    "e\u0301",
    "\U0001f600",
    "\ud800",  # a lone surrogate: only a JSON escape can carry it
    "\udfff",
    "\uffff",
    " ",
    "",
)
"""Characters that break naive text handling."""


def hostile_records(templates: Sequence[dict[str, object]], limit: int) -> object:
    """Return a hypothesis strategy of hostile record values (bytes).

    Args:
        templates: valid events (decoded JSON) to damage.
        limit: the worker's `max_record_bytes`.
    """
    import json

    from hypothesis import strategies as st

    def dumps(event: dict[str, object]) -> bytes:
        # ensure_ascii escapes lone surrogates, which UTF-8 cannot carry.
        return json.dumps(event, ensure_ascii=True).encode()

    template = st.sampled_from(list(templates)).map(dict)
    odd = st.lists(
        st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=8)), max_size=6
    ).map("".join)
    wrong = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    )

    @st.composite
    def wrong_type(draw: st.DrawFn) -> bytes:
        event = draw(template)
        field = draw(st.sampled_from(sorted(event)))
        event[field] = draw(wrong)
        return dumps(event)

    @st.composite
    def missing_or_extra(draw: st.DrawFn) -> bytes:
        event = draw(template)
        if draw(st.booleans()):
            del event[draw(st.sampled_from(sorted(event)))]
        else:
            event[draw(st.text(min_size=1, max_size=10))] = draw(wrong)
        return dumps(event)

    @st.composite
    def boundary_time(draw: st.DrawFn) -> bytes:
        event = draw(template)
        event["occurred_at"] = draw(st.sampled_from(BOUNDARY_TIMES))
        return dumps(event)

    @st.composite
    def boundary_amount(draw: st.DrawFn) -> bytes:
        money = [t for t in templates if "currency" in t]
        event = dict(draw(st.sampled_from(money)))
        field = "revenue" if "revenue" in event else "amount"
        event[field] = "@AMOUNT@"
        raw = dumps(event).replace(b'"@AMOUNT@"', b"@AMOUNT@")
        return raw.replace(
            b"@AMOUNT@", draw(st.sampled_from(BOUNDARY_AMOUNTS)).encode()
        )

    @st.composite
    def odd_unicode(draw: st.DrawFn) -> bytes:
        event = draw(template)
        texts = sorted(k for k, v in event.items() if isinstance(v, str))
        field = draw(st.sampled_from(texts))
        value = str(event[field])
        at = draw(st.integers(min_value=0, max_value=len(value)))
        event[field] = value[:at] + draw(odd) + value[at:]
        if draw(st.booleans()):
            return dumps(event)
        # Raw bytes: invalid UTF-8 (a surrogate encoded anyway) where it fits.
        return json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass")

    # Arrays nest 100 k levels in 200 kB, over the size limit, so they are
    # refused unread; objects of up to 10 k levels fit and reach the parser.
    deep = st.one_of(
        st.integers(min_value=100, max_value=100_000).map(
            lambda n: b"[" * n + b"]" * n
        ),
        st.integers(min_value=100, max_value=10_000).map(
            lambda n: b'{"a":' * n + b"1" + b"}" * n
        ),
    )
    huge = st.builds(
        lambda n: (
            b'{"event_id":"evt-huge","type":"site.visit","pad":"' + b"x" * n + b'"}'
        ),
        st.integers(min_value=limit + 1, max_value=2 * limit),
    )
    odd_json = st.sampled_from(
        (
            b"",
            b" \n\t ",
            b"null",
            b"[]",
            b'"event"',
            b"1e999",
            b"NaN",
            b'{"type": "lead.created",}',
            b'{"type": "lead.created", "type": "deal.won"}',
            b"\xef\xbb\xbf{}",
            b"{" * 3,
        )
    )
    # Weighed so that about a third stays valid and the large records (up to
    # 200 kB) stay a few percent of the volume.
    kinds = (
        (30, template.map(dumps)),
        (10, st.binary(max_size=2000)),
        (5, odd_json),
        (15, wrong_type()),
        (8, missing_or_extra()),
        (10, boundary_time()),
        (10, boundary_amount()),
        (10, odd_unicode()),
        (1, deep),
        (1, huge),
    )
    weighed = [kind for weight, kind in kinds for _ in range(weight)]
    return st.integers(min_value=0, max_value=len(weighed) - 1).flatmap(
        weighed.__getitem__
    )


def draw_hostile(
    templates: Sequence[dict[str, object]], limit: int, count: int, seed: int
) -> list[bytes]:
    """Draw `count` hostile records with hypothesis, reproducibly for a seed."""
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import seed as fixed_seed
    from hypothesis import settings as hypothesis_settings
    from hypothesis import strategies as st

    drawn: list[bytes] = []
    per_example = 50

    @hypothesis_settings(
        max_examples=-(-count // per_example),
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @fixed_seed(seed)
    @given(
        st.lists(
            hostile_records(templates, limit),
            min_size=per_example,
            max_size=per_example,
            unique=True,
        )
    )
    def collect(records: list[bytes]) -> None:
        drawn.extend(records)

    collect()
    return drawn[:count]
