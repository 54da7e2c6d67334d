"""End-to-end benchmark: the KPI worker beside a bare consumer and a peer library.

One run, on the local broker of the settings (`crm-kpi stack up`):

1. loads `--events` simulated events (the simulator's mix, spread over
   `--days` of event time) into a fresh topic of 4 partitions;
2. reads the topic with a bare aiokafka consumer that only JSON-decodes each
   value (bench/bare.py): the ceiling of a Python consumer;
3. runs a real `crm-kpi worker` on a fresh application id and times it from
   start to the last event applied (its /metrics counters), with its CPU time;
4. produces at half the worker's measured rate for `--latency-seconds` and
   reads the worker's event-to-KPI delay histogram, plus marker events timed
   from their send to their watermark showing on /metrics;
5. measures the worker's memory: idle, and per tracked entity after the run;
6. runs Quix Streams counting events per type in tumbling 1 h windows
   (bench/peer_quix.py, in its own virtual environment);
7. replays `--sustained-events` over `--sustained-days` of event time into
   another fresh worker, sampling its memory as windows expire.

It prints a Markdown report and writes every figure to `--json`.

    .venv/bin/python bench/run.py [--events 1000000] [--json bench-results.json]

The peer's environment: `.venv/bin/python bench/run.py --setup-peer` (once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream import simulator  # noqa: E402
from stream.producer import record_key, send  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402

PEER_VENV = ROOT / ".cache" / "bench-peer"
PEER_REQUIREMENTS = ROOT / "bench" / "requirements-peer.txt"
PARTITIONS = 4
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
POLL_SECONDS = 0.5
"""How often /metrics is read while timing: each read costs the worker ~10 ms."""


def log(message: str) -> None:
    """Show progress on stderr; the report goes to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the machine --------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Describe the machine and the library versions of this run."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        total_kb = int(info.readline().split()[1])
    versions = {
        name: metadata.version(name)
        for name in (
            "faust-streaming",
            "aiokafka",
            "pydantic",
            "orjson",
            "prometheus-client",
        )
    }
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["uvloop"] = metadata.version("uvloop")
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(total_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions,
        "peer_versions": peer_versions(),
        "load_average": os.getloadavg(),
    }


def peer_versions() -> dict[str, str]:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        return {}
    script = (
        "import json\nfrom importlib import metadata\n"
        "print(json.dumps({n: metadata.version(n) for n in"
        " ('quixstreams', 'confluent-kafka', 'rocksdict', 'orjson')}))"
    )
    output = subprocess.run(
        [str(python), "-c", script], capture_output=True, check=True, text=True
    )
    versions: dict[str, str] = json.loads(output.stdout)
    return versions


def setup_peer() -> None:
    """Create the peer's virtual environment from bench/requirements-peer.txt."""
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run(
        [
            str(PEER_VENV / "bin" / "pip"),
            "install",
            "-q",
            "-r",
            str(PEER_REQUIREMENTS),
        ],
        check=True,
    )


# --- processes and /metrics -----------------------------------------------------


@dataclass
class Sample:
    """What a worker showed at one moment."""

    at: float
    metrics: dict[str, float]
    rss_bytes: int
    cpu_seconds: float


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory(pid: int) -> dict[str, int]:
    """Resident and peak resident bytes of a process, from /proc."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
    return found


def parse_metrics(text: str) -> dict[str, float]:
    """Sum every sample of the exposition by metric name (labels dropped).

    Histogram buckets keep their `le` label: `name_bucket{le="0.5"}`.
    """
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name, _, labels = name_part.partition("{")
        if name.endswith("_bucket"):
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            name = f'{name}{{le="{le}"}}'
        sums[name] = sums.get(name, 0.0) + float(value)
    return sums


class Worker:
    """A `crm-kpi worker` subprocess on its own application id and topics."""

    def __init__(self, settings: Settings, topic: str, workdir: Path) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.port = settings.web_port
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.environment = dict(os.environ)
        self.environment.update(
            {
                "CRM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "CRM_APP_ID": f"bench-{suffix}",
                "CRM_EVENTS_TOPIC": topic,
                "CRM_EVENTS_PARTITIONS": str(PARTITIONS),
                "CRM_DEAD_LETTER_TOPIC": f"bench-{suffix}-dead",
                "CRM_LATE_TOPIC": f"bench-{suffix}-late",
                "CRM_KPI_TOPIC": f"bench-{suffix}-kpis",
                "CRM_REDIS_PREFIX": f"bench-{suffix}:kpi",
                "CRM_REDIS_CHANNEL": f"bench-{suffix}:changes",
                "CRM_DATA_DIR": str(workdir / f"worker-{suffix}"),
                "CRM_WEB_PORT": str(self.port),
            }
        )
        self.log_path = workdir / f"worker-{suffix}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.client = httpx.Client(timeout=10)

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.started = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker", "--loglevel", "warning"],
                cwd=ROOT,
                env=self.environment,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def sample(self) -> Sample | None:
        """Read /metrics, RSS and CPU time; None while the web server is down."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited; see {self.log_path}")
        try:
            text = self.client.get(self.url).text
        except httpx.HTTPError:
            return None
        return Sample(
            at=time.monotonic(),
            metrics=parse_metrics(text),
            rss_bytes=memory(self.pid)["VmRSS"],
            cpu_seconds=cpu_seconds(self.pid),
        )

    def wait_for(
        self,
        condition: Callable[[Sample], bool],
        timeout: float,
        what: str,
        interval: float = POLL_SECONDS,
        samples: list[Sample] | None = None,
    ) -> Sample:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sample = self.sample()
            if sample is not None:
                if samples is not None:
                    samples.append(sample)
                if condition(sample):
                    return sample
            time.sleep(interval)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}")

    def stop(self) -> None:
        self.client.close()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def done_events(sample: Sample) -> float:
    """Events the KPI stage has dealt with: applied, duplicate or late."""
    return sample.metrics.get("crm_events_total", 0.0)


# --- the phases -----------------------------------------------------------------


def simulated(
    events: int, days: float, seed: int, start: datetime
) -> Iterator[tuple[bytes | None, bytes]]:
    options = simulator.SimulationOptions(
        seed=seed, events=events, density=events / (days * 86_400), start=start
    )
    for record in simulator.generate(options):
        yield record.key, record.value


async def load(
    settings: Settings, topic: str, events: int, days: float, seed: int
) -> dict[str, Any]:
    """Produce the simulated events into a fresh topic of 4 partitions."""
    start = datetime.now(UTC) - timedelta(days=days)
    topic_settings = settings.model_copy(update={"events_partitions": PARTITIONS})
    # Quix Streams gives its repartition and changelog topics the retention of
    # this one and stamps their records with event time, a month old: with a
    # week's retention the broker would delete them before they are read.
    await ensure_topics(
        settings,
        [NewTopic(topic, PARTITIONS, 1, topic_configs={"retention.ms": "-1"})],
    )
    delivery = await send(
        simulated(events, days, seed, start), topic_settings, topic=topic
    )
    return {
        "records": delivery.records,
        "bytes": delivery.bytes,
        "seconds": delivery.elapsed_seconds,
        "first_event_time": start.isoformat(),
    }


def run_json(command: list[str], timeout: float) -> dict[str, Any]:
    """Run a command that prints one JSON line; return it."""
    finished = subprocess.run(
        command, cwd=ROOT, capture_output=True, timeout=timeout, check=False
    )
    if finished.returncode != 0:
        raise RuntimeError(
            f"{command[1]} failed ({finished.returncode}):"
            f" {finished.stderr.decode()[-2000:]}"
        )
    # Faust may write terminal controls before the line: parse from its brace.
    line = [line for line in finished.stdout.splitlines() if b'{"' in line][-1]
    result: dict[str, Any] = orjson.loads(line[line.index(b"{") :])
    return result


def bare(settings: Settings, topic: str, events: int) -> dict[str, Any]:
    log("bare consumer: reading the topic")
    result = run_json(
        [
            sys.executable,
            str(ROOT / "bench" / "bare.py"),
            "--bootstrap",
            settings.kafka_bootstrap,
            "--topic",
            topic,
            "--expect",
            str(events),
        ],
        timeout=1800,
    )
    result["rate"] = events / result["seconds"]
    result["rate_from_first"] = events / result["seconds_from_first"]
    log(f"bare consumer: {result['rate']:,.0f} events/s")
    return result


def peer(settings: Settings, topic: str, events: int, workdir: Path) -> dict[str, Any]:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        raise RuntimeError(
            f"no peer environment at {PEER_VENV}; create it with"
            " `.venv/bin/python bench/run.py --setup-peer`"
        )
    log("quix streams: counting per type in 1 h windows")
    suffix = uuid.uuid4().hex[:8]
    result = run_json(
        [
            str(python),
            str(ROOT / "bench" / "peer_quix.py"),
            "--bootstrap",
            settings.kafka_bootstrap,
            "--topic",
            topic,
            "--expect",
            str(events),
            "--group",
            f"bench-quix-{suffix}",
            "--state-dir",
            str(workdir / f"quix-{suffix}"),
        ],
        timeout=3600,
    )
    result["rate"] = events / result["seconds"]
    result["rate_from_first"] = events / result["seconds_from_first"]
    log(f"quix streams: {result['rate']:,.0f} events/s")
    return result


def faust_bare(
    settings: Settings, topic: str, events: int, workdir: Path
) -> dict[str, Any]:
    log("bare faust agent: reading the topic")
    suffix = uuid.uuid4().hex[:8]
    result = run_json(
        [
            sys.executable,
            str(ROOT / "bench" / "faust_bare.py"),
            "--bootstrap",
            settings.kafka_bootstrap,
            "--topic",
            topic,
            "--expect",
            str(events),
            "--group",
            f"bench-faust-{suffix}",
            "--datadir",
            str(workdir / f"faust-{suffix}"),
            "--uvloop",
        ],
        timeout=3600,
    )
    result["rate"] = events / result["seconds"]
    result["rate_from_first"] = events / result["seconds_from_first"]
    log(f"bare faust agent: {result['rate']:,.0f} events/s")
    return result


def idle_memory(settings: Settings, workdir: Path) -> dict[str, Any]:
    """RSS of a worker that has started on an empty topic and settled."""
    log("idle worker: measuring its memory")
    topic = f"bench-idle-{uuid.uuid4().hex[:8]}"
    worker = Worker(settings, topic, workdir)
    worker.start()
    try:
        worker.wait_for(
            lambda s: (
                s.metrics.get("crm_kpi_state_owned", 0) == 1
                or time.monotonic() - worker.started > 20
            ),
            timeout=90,
            what="the idle worker's web server",
        )
        time.sleep(5)
        sample = worker.sample()
        assert sample is not None
        return {"rss_bytes": sample.rss_bytes, **memory(worker.pid)}
    finally:
        worker.stop()


def throughput(
    worker: Worker, events: int, profile: Path | None = None
) -> dict[str, Any]:
    """Time the worker from its start to every event applied.

    With `profile`, py-spy samples the worker meanwhile and writes collapsed
    stacks there (it slows the worker a little).
    """
    log("worker: applying the topic")
    samples: list[Sample] = []
    worker.start()
    profiler = None
    if profile is not None:
        profiler = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(worker.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--nonblocking",
                "--output",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    first = worker.wait_for(
        lambda s: s.metrics.get("crm_records_consumed_total", 0) > 0,
        timeout=120,
        what="the worker's first record",
        interval=0.05,
        samples=samples,
    )
    done = worker.wait_for(
        lambda s: done_events(s) >= events,
        timeout=3600,
        what="every event applied",
        samples=samples,
    )
    peak = memory(worker.pid)["VmHWM"]
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)

    # The publish timer sets the tracked-entity gauge on its next tick.
    time.sleep(1.0)
    settled = worker.sample()
    assert settled is not None
    seconds = done.at - worker.started
    from_first = done.at - first.at
    result = {
        "seconds": seconds,
        "seconds_from_first": from_first,
        "startup_seconds": first.at - worker.started,
        "rate": events / seconds,
        "rate_from_first": events / from_first,
        "cpu_seconds": done.cpu_seconds,
        "rss_bytes": settled.rss_bytes,
        "peak_rss_bytes": peak,
        "tracked_entities": settled.metrics.get("crm_tracked_entities", 0),
        "checkpoint_bytes": settled.metrics.get("crm_checkpoint_bytes", 0),
        "applied": settled.metrics.get("crm_events_total", 0),
        "samples": [
            (s.at - worker.started, done_events(s), s.rss_bytes, s.cpu_seconds)
            for s in samples
        ],
    }
    log(
        f"worker: {result['rate']:,.0f} events/s from start,"
        f" {result['rate_from_first']:,.0f} from its first record"
    )
    return result


def delay_buckets(sample: Sample) -> list[tuple[float, float]]:
    prefix = 'crm_event_to_kpi_delay_seconds_bucket{le="'
    buckets = [
        (float(name[len(prefix) : -2]), count)
        for name, count in sample.metrics.items()
        if name.startswith(prefix)
    ]
    return sorted(buckets)


def histogram_quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """Prometheus's histogram_quantile over the difference of two readings."""
    counts = [(le, a - b) for (le, b), (_, a) in zip(before, after, strict=True)]
    total = counts[-1][1]
    if total == 0:
        return float("nan")
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in counts:
        if count >= rank:
            if le == float("inf"):
                return lower_le
            share = (rank - lower_count) / (count - lower_count or 1)
            return lower_le + (le - lower_le) * share
        lower_le, lower_count = le, count
    return lower_le


async def markers(
    settings: Settings,
    topic: str,
    worker: Worker,
    seconds: float,
    stop: asyncio.Event,
) -> list[float]:
    """Send a marker event each second; time it until /metrics shows its time.

    A marker's event time is half an hour past the wall clock (Kafka 4 refuses
    record timestamps more than an hour ahead, which a peer reading the topic
    would copy), a millisecond later than the marker before, so the watermark
    gauge shows it exactly when the marker has gone through the whole
    pipeline. The load's events,
    at the wall clock, stay well within every window.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0
    )
    await producer.start()
    client = httpx.AsyncClient(timeout=5)
    delays: list[float] = []
    base = datetime.now(UTC) + timedelta(minutes=30)
    try:
        number = 0
        while not stop.is_set():
            await asyncio.sleep(1.0)
            number += 1
            moment = base + timedelta(milliseconds=number)
            millis = int(moment.timestamp() * 1000)
            value = orjson.dumps(
                {
                    "event_id": f"bench-marker-{uuid.uuid4().hex}",
                    "type": "newsletter.subscribed",
                    "occurred_at": moment.isoformat(timespec="milliseconds"),
                    "schema_version": 1,
                    "contact_id": f"marker-{number}",
                }
            )
            sent = time.monotonic()
            await producer.send_and_wait(topic, value=value, key=record_key(value))
            while time.monotonic() - sent < 30:
                text = (await client.get(worker.url)).text
                shown = parse_metrics(text).get("crm_watermark_timestamp_seconds", 0)
                if round(shown * 1000) >= millis:
                    delays.append(time.monotonic() - sent)
                    break
                # Every read costs the worker ~10 ms: 20 a second at most.
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
        await producer.stop()
    return delays


async def latency(
    settings: Settings, topic: str, worker: Worker, rate: float, seconds: float
) -> dict[str, Any]:
    """Produce at `rate` for `seconds`; read the delays the worker shows."""
    log(f"latency: producing {rate:,.0f} events/s for {seconds:.0f} s")
    before = worker.sample()
    assert before is not None
    start = datetime.now(UTC)
    count = int(rate * seconds)
    # A paced producer of its own, so that the markers' event loop stays free.
    load_process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "simulate",
            "--events",
            str(count),
            "--rate",
            str(rate),
            "--days",
            repr(seconds / 86_400),
            "--start",
            start.isoformat(),
            "--seed",
            "11",
            "--quiet",
        ],
        cwd=ROOT,
        env={**worker.environment, "CRM_EVENTS_TOPIC": topic},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stop = asyncio.Event()
    timing = asyncio.create_task(markers(settings, topic, worker, seconds, stop))
    cpu_before = cpu_seconds(worker.pid)
    started = time.monotonic()
    while load_process.poll() is None:
        await asyncio.sleep(0.2)
    produced_seconds = time.monotonic() - started
    stop.set()
    delays = await timing
    _, errors = load_process.communicate()
    if load_process.returncode != 0:
        raise RuntimeError(f"the paced producer failed: {errors.decode()[-2000:]}")

    expected = done_events(before) + count + len(delays)
    after = await asyncio.to_thread(
        worker.wait_for,
        lambda s: done_events(s) >= expected,
        300,
        "the paced events applied",
    )
    await asyncio.sleep(1)
    after = worker.sample() or after
    buckets_before, buckets_after = delay_buckets(before), delay_buckets(after)
    result = {
        "rate": rate,
        "produced": count,
        "produced_seconds": produced_seconds,
        "achieved_rate": count / produced_seconds,
        "worker_cpu_share": (cpu_seconds(worker.pid) - cpu_before) / produced_seconds,
        "histogram_p50": histogram_quantile(buckets_before, buckets_after, 0.5),
        "histogram_p99": histogram_quantile(buckets_before, buckets_after, 0.99),
        "histogram": [
            (le, a - b)
            for (le, b), (_, a) in zip(buckets_before, buckets_after, strict=True)
        ],
        "markers": len(delays),
        "marker_p50": statistics.median(delays) if delays else None,
        "marker_p99": quantile(delays, 0.99),
        "marker_max": max(delays) if delays else None,
    }
    log(
        f"latency: histogram p50 {result['histogram_p50']:.3f} s,"
        f" p99 {result['histogram_p99']:.3f} s; markers p50"
        f" {result['marker_p50']} s, max {result['marker_max']} s"
    )
    return result


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sustained(
    settings: Settings, events: int, days: float, workdir: Path
) -> dict[str, Any]:
    """Replay a long span of event time; sample memory as windows expire."""
    topic = f"bench-sustained-{uuid.uuid4().hex[:8]}"
    log(f"sustained: loading {events:,} events over {days:g} days")
    await load(settings, topic, events, days, seed=13)
    worker = Worker(settings, topic, workdir)
    samples: list[Sample] = []
    worker.start()
    try:
        await asyncio.to_thread(
            worker.wait_for,
            lambda s: done_events(s) >= events,
            3600,
            "every sustained event applied",
            1.0,
            samples,
        )
        peak = memory(worker.pid)["VmHWM"]
    finally:
        worker.stop()
    rows = [
        (
            s.at - worker.started,
            done_events(s),
            s.metrics.get("crm_watermark_timestamp_seconds", 0),
            s.metrics.get("crm_tracked_entities", 0),
            s.rss_bytes,
        )
        for s in samples
        if done_events(s) > 0
    ]
    return {"events": events, "days": days, "peak_rss_bytes": peak, "rows": rows}


# --- the report -----------------------------------------------------------------


@dataclass
class Report:
    options: argparse.Namespace
    figures: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        f = self.figures
        m = f["machine"]
        lines = [
            f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB,"
            f" Python {m['python']}, load average at start"
            f" {', '.join(f'{x:.2f}' for x in m['load_average'])}",
            "versions: "
            + ", ".join(
                f"{k} {v}" for k, v in {**m["versions"], **m["peer_versions"]}.items()
            ),
            "",
            f"events: {self.options.events:,} over {self.options.days:g} days,"
            f" {f['load']['bytes'] / self.options.events:.0f} bytes each,"
            f" {PARTITIONS} partitions",
            "",
            "| consumer | events/s (from start) | events/s (from first record)"
            " | CPU s | peak RSS MB |",
            "|---|---:|---:|---:|---:|",
        ]
        rows = [("bare aiokafka + orjson", b) for b in f["bare"]]
        rows.append(("bare Faust agent (take_events + orjson)", f["faust"]))
        rows.append(("crm-kpi worker (21 KPIs)", f["worker"]))
        if "peer" in f:
            rows.append(("Quix Streams (count per type, 1 h)", f["peer"]))
        for name, r in rows:
            lines.append(
                f"| {name} | {r['rate']:,.0f} | {r['rate_from_first']:,.0f}"
                f" | {r['cpu_seconds']:.1f}"
                f" | {r.get('peak_rss_bytes', r.get('max_rss_bytes', 0)) / 1e6:.0f} |"
            )
        worker = f["worker"]
        bare_rate = statistics.mean(b["rate_from_first"] for b in f["bare"])
        lines += [
            "",
            f"worker / bare (from first record): "
            f"{worker['rate_from_first'] / bare_rate:.0%}",
        ]
        if "peer" in f:
            lines.append(
                "worker / quix (from first record): "
                f"{worker['rate_from_first'] / f['peer']['rate_from_first']:.2f}x"
            )
        per_event = worker["cpu_seconds"] / self.options.events * 1e6
        lines.append(f"worker CPU per event: {per_event:.1f} us (start-up included)")
        if "latency" in f:
            lat = f["latency"]
            lines += [
                "",
                f"delay at {lat['rate']:,.0f} events/s (achieved"
                f" {lat['achieved_rate']:,.0f}/s, worker CPU"
                f" {lat['worker_cpu_share']:.0%}): histogram p50"
                f" {lat['histogram_p50']:.3f} s, p99 {lat['histogram_p99']:.3f} s;"
                f" {lat['markers']} markers p50 {fmt(lat['marker_p50'])} s,"
                f" p99 {fmt(lat['marker_p99'])} s, max {fmt(lat['marker_max'])} s",
            ]
        idle = f["idle"]["rss_bytes"]
        entities = worker["tracked_entities"]
        lines += [
            "",
            f"memory: idle worker {idle / 1e6:.0f} MB; after the run"
            f" {worker['rss_bytes'] / 1e6:.0f} MB (peak"
            f" {worker['peak_rss_bytes'] / 1e6:.0f} MB) for {entities:,.0f}"
            f" tracked entities: {(worker['rss_bytes'] - idle) / entities:.0f}"
            f" bytes each ({(worker['peak_rss_bytes'] - idle) / entities:.0f} at"
            " peak)",
        ]
        if "sustained" in f:
            s = f["sustained"]
            lines += [
                "",
                f"sustained: {s['events']:,} events over {s['days']:g} days",
                "",
                "| event time (day) | events applied | tracked entities | RSS MB |",
                "|---:|---:|---:|---:|",
            ]
            first_watermark = next((r[2] for r in s["rows"] if r[2]), 0)
            shown_day = -1
            step = max(1, int(s["days"] // 12))
            for _, applied, watermark, entities_now, rss in s["rows"]:
                if not watermark:
                    continue
                day = int((watermark - first_watermark) // 86_400)
                if day >= shown_day + step:
                    shown_day = day
                    lines.append(
                        f"| {day} | {applied:,.0f} | {entities_now:,.0f}"
                        f" | {rss / 1e6:.0f} |"
                    )
            last = s["rows"][-1]
            lines.append(
                f"| end | {last[1]:,.0f} | {last[3]:,.0f} | {last[4] / 1e6:.0f} |"
            )
        return "\n".join(lines)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


async def main_async(options: argparse.Namespace) -> Report:
    settings = Settings()
    report = Report(options)
    f = report.figures
    f["machine"] = machine()
    f["command"] = " ".join(sys.argv)
    topic = options.topic or f"bench-events-{uuid.uuid4().hex[:8]}"

    with tempfile.TemporaryDirectory(prefix="crm-bench-") as directory:
        workdir = Path(directory)
        if options.topic is None:
            log(f"loading {options.events:,} events into {topic}")
            f["load"] = await load(
                settings, topic, options.events, options.days, seed=7
            )
            log(f"loaded in {f['load']['seconds']:.1f} s")
        else:
            f["load"] = {"records": options.events, "bytes": 0, "seconds": 0}

        f["idle"] = (
            idle_memory(settings, workdir)
            if not options.skip_idle
            else {"rss_bytes": 0}
        )
        f["bare"] = [bare(settings, topic, options.events)]
        f["faust"] = faust_bare(settings, topic, options.events, workdir)

        worker = Worker(settings, topic, workdir)
        try:
            f["worker"] = throughput(worker, options.events, options.profile)
            # The peer reads the topic before the latency phase adds to it;
            # the worker waits meanwhile, idle.
            if not options.skip_peer:
                f["peer"] = peer(settings, topic, options.events, workdir)
            if options.latency_seconds > 0:
                f["latency"] = await latency(
                    settings,
                    topic,
                    worker,
                    f["worker"]["rate_from_first"] / 2,
                    options.latency_seconds,
                )
        finally:
            worker.stop()
        f["worker"]["log"] = str(worker.log_path)
        f["bare"].append(bare(settings, topic, options.events))

        if options.sustained_events > 0:
            f["sustained"] = await sustained(
                settings, options.sustained_events, options.sustained_days, workdir
            )
    f["machine"]["load_average_end"] = os.getloadavg()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--sustained-events", type=int, default=1_000_000)
    parser.add_argument("--sustained-days", type=float, default=120.0)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument(
        "--topic", default=None, help="reuse a topic loaded before with --events"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the worker into this file"
    )
    parser.add_argument("--json", type=Path, default=None, help="write figures here")
    parser.add_argument(
        "--setup-peer", action="store_true", help="create the peer's venv and exit"
    )
    options = parser.parse_args()
    if options.setup_peer:
        setup_peer()
        return

    report = asyncio.run(main_async(options))
    if options.json is not None:
        options.json.write_text(json.dumps(report.figures, indent=1, default=str))
    print(report.markdown())


if __name__ == "__main__":
    main()
