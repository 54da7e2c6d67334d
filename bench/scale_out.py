"""Scale-out benchmark: one worker, then two, on the same log; events per second.

Loads `--events` simulated events (clean, spread over `--days` of event time)
into a fresh topic of 4 partitions once, then for each worker count runs that
many `crm-kpi worker` processes of a fresh application id on it, started
together (the second one on the next web port), and samples every worker's
/metrics and CPU time until the KPI stage has taken every event.

For each run it reports:

- the rate from the workers' start to the last event applied, and from the
  first record read (which leaves out starting and joining the group);
- the steady rate, between 20 % and 80 % of the events applied, which leaves
  out the start (group join, rebalance) and the tail;
- the validation (ingest) rate over the same span, from the records the
  workers consumed;
- each worker's CPU seconds and whether it held the KPI state.

The ingest stage's partitions are shared by the workers; the KPI stage is the
single partition of the admitted topic, so one process applies every event
whatever the number of workers. docs/architecture.md explains the figures.

    .venv/bin/python bench/scale_out.py [--events 100000] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream import simulator  # noqa: E402
from stream.producer import send  # noqa: E402
from stream.settings import Settings  # noqa: E402

PARTITIONS = 4
POLL_SECONDS = 0.5
"""How often every worker's /metrics is read; each read costs it ~10 ms."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STEADY = (0.2, 0.8)
"""Share of the events between which the steady rate is measured."""


def log(message: str) -> None:
    """Show progress on stderr; the report goes to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def totals(text: str) -> dict[str, float]:
    """Sum every sample of an exposition text by metric name."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


@dataclass
class Moment:
    """What every worker of a run showed at one time."""

    at: float
    taken: float
    """Events the KPI stage dealt with (applied, duplicate or late), summed."""
    consumed: float
    """Records read from the events topic, summed over the workers."""
    cpu: list[float]
    owned: list[float]


@dataclass
class Run:
    """Workers of one application id on the loaded topic."""

    settings: Settings
    topic: str
    workers: int
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: float = 0.0

    def __post_init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.environment = dict(os.environ)
        self.environment.update(
            {
                "CRM_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
                "CRM_APP_ID": f"bench-scale-{suffix}",
                "CRM_EVENTS_TOPIC": self.topic,
                "CRM_DEAD_LETTER_TOPIC": f"bench-scale-{suffix}-dead",
                "CRM_LATE_TOPIC": f"bench-scale-{suffix}-late",
                "CRM_KPI_TOPIC": f"bench-scale-{suffix}-kpis",
                "CRM_REDIS_PREFIX": f"bench-scale-{suffix}:kpi",
                "CRM_REDIS_CHANNEL": f"bench-scale-{suffix}:changes",
            }
        )
        self.ports = [self.settings.web_port + i for i in range(self.workers)]
        self.log_path = self.workdir / f"workers-{suffix}.log"
        self.client = httpx.Client(timeout=10)

    def start(self) -> None:
        """Start every worker at once."""
        self.started = time.monotonic()
        with self.log_path.open("ab") as log_file:
            for index, port in enumerate(self.ports):
                environment = dict(self.environment)
                environment["CRM_WEB_PORT"] = str(port)
                environment["CRM_DATA_DIR"] = str(self.workdir / f"data-{port}")
                self.processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "stream.cli",
                            "worker",
                            "--loglevel",
                            "warning",
                        ],
                        cwd=ROOT,
                        env=environment,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                    )
                )
                log(f"worker {index + 1} started on port {port}")

    def sample(self) -> Moment | None:
        """Read every worker; None while one of them does not answer yet."""
        shown = []
        for process, port in zip(self.processes, self.ports, strict=True):
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited; see {self.log_path}")
            try:
                text = self.client.get(f"http://127.0.0.1:{port}/metrics").text
            except httpx.HTTPError:
                return None
            shown.append(totals(text))
        return Moment(
            at=time.monotonic(),
            taken=sum(m.get("crm_events_total", 0.0) for m in shown),
            consumed=sum(m.get("crm_records_consumed_total", 0.0) for m in shown),
            cpu=[cpu_seconds(p.pid) for p in self.processes],
            owned=[m.get("crm_kpi_state_owned", 0.0) for m in shown],
        )

    def stop(self) -> None:
        self.client.close()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def crossing(moments: list[Moment], attribute: str, level: float) -> float:
    """Return when a summed counter first reached `level`, interpolated."""
    previous: Moment | None = None
    for moment in moments:
        value = getattr(moment, attribute)
        if value >= level:
            if previous is None:
                return moment.at
            before = getattr(previous, attribute)
            share = (level - before) / (value - before) if value > before else 1.0
            return previous.at + share * (moment.at - previous.at)
        previous = moment
    raise ValueError(f"{attribute} never reached {level}")


def measure(run: Run, events: int, timeout: float) -> dict[str, Any]:
    """Run the workers until every event is taken; return the run's figures."""
    moments: list[Moment] = []
    owners: set[int] = set()
    run.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout} s; see {run.log_path}")
            moment = run.sample()
            if moment is not None:
                moments.append(moment)
                owners.update(i for i, owned in enumerate(moment.owned) if owned)
                if moment.taken >= events:
                    break
            time.sleep(POLL_SECONDS)
    finally:
        run.stop()

    done = moments[-1]
    first_record = crossing(moments, "consumed", 1)
    low, high = (share * events for share in STEADY)
    steady_from = crossing(moments, "taken", low)
    steady_to = crossing(moments, "taken", high)
    ingest_from = crossing(moments, "consumed", low)
    ingest_to = crossing(moments, "consumed", high)
    return {
        "workers": run.workers,
        "seconds": done.at - run.started,
        "rate": events / (done.at - run.started),
        "rate_from_first_record": events / (done.at - first_record),
        "steady_rate": (high - low) / (steady_to - steady_from),
        "ingest_steady_rate": (high - low) / (ingest_to - ingest_from),
        "cpu_seconds": done.cpu,
        "state_owners": sorted(owners),
        "taken": done.taken,
        "consumed": done.consumed,
        "log": str(run.log_path),
    }


def simulated(events: int, days: float) -> Iterator[tuple[bytes | None, bytes]]:
    """Yield a clean simulated stream of `events` over `days` of event time."""
    options = simulator.SimulationOptions(
        seed=5,
        events=events,
        density=events / (days * 86_400),
        start=datetime.now(UTC) - timedelta(days=days),
    )
    for record in simulator.generate(options):
        yield record.key, record.value


async def load(settings: Settings, topic: str, events: int, days: float) -> float:
    """Produce the events into a fresh 4-partition topic; return the seconds."""
    delivery = await send(
        simulated(events, days),
        settings.model_copy(update={"events_partitions": PARTITIONS}),
        topic=topic,
    )
    return delivery.elapsed_seconds


def report(runs: list[dict[str, Any]], events: int) -> str:
    """Return the figures as a Markdown table."""
    lines = [
        f"{events:,} events, {PARTITIONS} partitions, {os.cpu_count()} cores,"
        f" load average {os.getloadavg()[0]:.1f} at the end",
        "",
        "| workers | from start (events/s) | from first record (events/s)"
        " | steady ingest (records/s) | steady KPI stage (events/s)"
        " | CPU s per worker | state held by |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        cpu = ", ".join(f"{seconds:.1f}" for seconds in run["cpu_seconds"])
        owners = ", ".join(f"worker {i + 1}" for i in run["state_owners"])
        lines.append(
            f"| {run['workers']} | {run['rate']:,.0f}"
            f" | {run['rate_from_first_record']:,.0f}"
            f" | {run['ingest_steady_rate']:,.0f} | {run['steady_rate']:,.0f}"
            f" | {cpu} | {owners} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", type=Path, default=None, help="write figures here")
    options = parser.parse_args()

    settings = Settings()
    topic = f"bench-scale-events-{uuid.uuid4().hex[:8]}"
    log(f"loading {options.events:,} events into {topic}")
    seconds = asyncio.run(load(settings, topic, options.events, options.days))
    log(f"loaded in {seconds:.1f} s")

    runs = []
    with tempfile.TemporaryDirectory(prefix="crm-scale-") as directory:
        for workers in options.workers:
            log(f"{workers} worker(s): taking the topic")
            run = Run(settings, topic, workers, Path(directory))
            figures = measure(run, options.events, options.timeout)
            log(f"{workers} worker(s): {figures['steady_rate']:,.0f} events/s steady")
            runs.append(figures)

    if options.json is not None:
        options.json.write_text(json.dumps({"events": options.events, "runs": runs}))
    print(report(runs, options.events))


if __name__ == "__main__":
    main()
