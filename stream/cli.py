"""The `crm-kpi` command: worker, simulator, replay, local stack and generators."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from stream.errors import CrmKpiError
from stream.settings import get_settings

logger = logging.getLogger(__name__)


def _worker(args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from stream.topics import ensure_topics

    settings = get_settings()
    # Faust creates its data directory but not the directories above it.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(settings))

    # uvloop runs Faust's many small tasks and callbacks faster than asyncio's
    # own loop; mode selects it for the Worker it creates next.
    import mode.loop

    mode.loop.use("uvloop")

    from stream.app import app

    # The KPI state holds hundreds of thousands of long-lived objects, and
    # Faust allocates several per record: at the default thresholds the
    # collector runs a full pass over the state every few seconds (tens to
    # hundreds of milliseconds each). Rarer young collections make rarer full
    # ones; freezing what is loaded by now keeps it out of every pass.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

    worker = Worker(app, loglevel=args.loglevel, quiet=True)
    worker.execute_from_commandline()
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from stream import simulator

    settings = get_settings()
    start = (
        datetime.fromisoformat(args.start)
        if args.start
        else datetime.now(UTC) - timedelta(days=args.days)
    )
    # Spread the requested events over the requested span of history, so the
    # last event lands near the wall clock rather than in the future.
    events = args.events or None
    density = events / (args.days * 86400) if events and not args.live else 0.02
    options = simulator.SimulationOptions(
        seed=args.seed,
        events=events,
        density=density,
        start=start,
        live=args.live,
        duplicate_rate=args.duplicates,
        out_of_order_rate=args.out_of_order,
        late_rate=args.late,
        invalid_rate=args.invalid,
        scenario=args.scenario,
    )
    records = simulator.generate(options)
    if args.output:
        target = sys.stdout if args.output == "-" else Path(args.output)
        simulator.write_jsonl(records, target)
        return 0
    summary = asyncio.run(
        simulator.produce(records, settings, rate=args.rate, progress=not args.quiet)
    )
    print(summary, file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from stream import replay

    summary = asyncio.run(
        replay.replay(
            Path(args.file), get_settings(), rate=args.rate, progress=not args.quiet
        )
    )
    print(summary, file=sys.stderr)
    return 0


def _stack(args: argparse.Namespace) -> int:
    from stream import stack

    settings = get_settings()
    action = {
        "up": stack.up,
        "down": stack.down,
        "status": stack.status,
        "reset": stack.reset,
    }[args.action]
    print(action(settings).describe())
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from schemas.publish import write_json_schemas

    for path in write_json_schemas(Path(args.directory)):
        print(path)
    return 0


def _docs(args: argparse.Namespace) -> int:
    from stream.docs import write_docs

    for path in write_docs(Path(args.directory)):
        print(path)
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Run bench/run.py of this checkout with the given arguments."""
    script = Path(__file__).resolve().parents[1] / "bench" / "run.py"
    if not script.exists():
        print(
            f"crm-kpi: no benchmark at {script}; `crm-kpi bench` runs from a"
            " checkout of the repository",
            file=sys.stderr,
        )
        return 2
    return subprocess.run([sys.executable, str(script), *args.arguments]).returncode


def _demo(args: argparse.Namespace) -> int:
    """Bring up the stack, run a worker fed by a live simulator, until Ctrl-C."""
    from stream import stack

    settings = get_settings()
    print(stack.up(settings).describe())
    environment = dict(os.environ)
    command = [sys.executable, "-m", "stream.cli"]

    worker = subprocess.Popen([*command, "worker"], env=environment)
    simulator = subprocess.Popen(
        [*command, "simulate", "--live", "--rate", str(args.rate), "--events", "0"],
        env=environment,
    )
    print(
        f"worker metrics:   http://{settings.web_host}:{settings.web_port}/metrics\n"
        f"worker KPIs:      http://{settings.web_host}:{settings.web_port}/kpis\n"
        f"prometheus:       {settings.prometheus_url}/graph\n"
        "Ctrl-C stops the worker and the simulator; `crm-kpi stack down` stops"
        " the stack.",
        flush=True,
    )
    try:
        while worker.poll() is None and simulator.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in (simulator, worker):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (simulator, worker):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    for name, process in (("worker", worker), ("simulator", simulator)):
        if process.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
            print(f"crm-kpi: the {name} stopped with status {process.returncode}")
            return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the `crm-kpi` command line."""
    parser = argparse.ArgumentParser(
        prog="crm-kpi", description="Real-time CRM KPIs from Kafka events."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a stream-processing worker")
    worker.add_argument("--loglevel", default="info")
    worker.set_defaults(handler=_worker)

    simulate = commands.add_parser("simulate", help="produce a simulated CRM stream")
    simulate.add_argument("--events", type=int, default=100_000, help="0: no end")
    simulate.add_argument("--rate", type=float, default=None, help="events/s")
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument("--days", type=float, default=30.0, help="history span")
    simulate.add_argument("--start", help="first event time, ISO 8601 with offset")
    simulate.add_argument("--live", action="store_true", help="follow the clock")
    simulate.add_argument("--duplicates", type=float, default=0.0)
    simulate.add_argument("--out-of-order", type=float, default=0.0)
    simulate.add_argument("--late", type=float, default=0.0)
    simulate.add_argument("--invalid", type=float, default=0.0)
    simulate.add_argument("--scenario", default=None)
    simulate.add_argument("--output", help="write JSON lines here ('-' = stdout)")
    simulate.add_argument("--quiet", action="store_true")
    simulate.set_defaults(handler=_simulate)

    replay = commands.add_parser("replay", help="load a JSON-lines file of events")
    replay.add_argument("file")
    replay.add_argument("--rate", type=float, default=None, help="events/s")
    replay.add_argument("--quiet", action="store_true")
    replay.set_defaults(handler=_replay)

    stack = commands.add_parser(
        "stack", help="control the local Kafka/Redis/Prometheus"
    )
    stack.add_argument("action", choices=["up", "down", "status", "reset"])
    stack.set_defaults(handler=_stack)

    schemas = commands.add_parser("schemas", help="regenerate the JSON Schema files")
    schemas.add_argument("--directory", default="schemas/json")
    schemas.set_defaults(handler=_schemas)

    docs = commands.add_parser("docs", help="regenerate docs/settings.md")
    docs.add_argument("--directory", default="docs")
    docs.set_defaults(handler=_docs)

    bench = commands.add_parser(
        "bench",
        help="throughput, delay and memory beside a bare consumer and a peer"
        " (bench/run.py; its options follow, see docs/benchmarks.md)",
        add_help=False,
    )
    bench.set_defaults(handler=_bench)

    demo = commands.add_parser(
        "demo", help="stack up, then a worker fed by a live simulator"
    )
    demo.add_argument("--rate", type=float, default=200.0, help="events/s")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `crm-kpi` command line; return the exit status."""
    parser = build_parser()
    # `bench` hands every argument after it to bench/run.py.
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.arguments = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command != "worker":
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    try:
        status: int = args.handler(args)
    except CrmKpiError as error:
        print(f"crm-kpi: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        # Settings come from CRM_* variables; say which one is wrong.
        problems = "; ".join(
            f"CRM_{'_'.join(str(part) for part in e['loc']).upper()}: {e['msg']}"
            for e in error.errors()
        )
        print(f"crm-kpi: invalid settings: {problems}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
