"""The ceiling of a Faust agent: read a topic in batches, JSON-decode each value.

The worker's `ingest` agent reads the same way (`take_events`, the same batch
size and wait), so the gap between this and bench/bare.py is what Faust's
per-record machinery costs before any of the worker's own work. Prints one
JSON line like bench/bare.py.

    .venv/bin/python bench/faust_bare.py --bootstrap B --topic T --expect N \
        --group G --datadir D
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from typing import Any, cast

import faust
import orjson
from faust.streams import Stream
from faust.types import StreamT


def build(options: argparse.Namespace) -> tuple[faust.App, dict[str, Any]]:
    """Return the app and the dict its agent fills with counts and times."""
    app = faust.App(
        options.group,
        broker=f"kafka://{options.bootstrap}",
        store="memory://",
        datadir=options.datadir,
        consumer_auto_offset_reset="earliest",
        topic_partitions=1,
        web_enabled=False,
    )
    topic = app.topic(
        options.topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    tally: dict[str, Any] = {"records": 0, "started": time.monotonic()}
    loads = orjson.loads

    @app.agent(topic)
    async def read(stream: StreamT[bytes]) -> None:
        async for batch in cast(Stream[bytes], stream).take_events(1000, within=0.02):
            for record in batch:
                loads(record.message.value)
            if not tally["records"]:
                tally["first"] = time.monotonic()
            tally["records"] += len(batch)
            if tally["records"] >= options.expect:
                report(tally)

    return app, tally


def report(tally: dict[str, Any]) -> None:
    """Print the figures and leave at once: the run is over."""
    done = time.monotonic()
    started = tally["started"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "records": tally["records"],
        "seconds": done - started,
        "seconds_from_first": done - tally.get("first", started),
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "max_rss_bytes": usage.ru_maxrss * 1024,
    }
    # Faust redirects sys.stdout to its logger: write to the descriptor.
    os.write(1, orjson.dumps(result) + b"\n")
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--uvloop", action="store_true")
    options = parser.parse_args()
    if options.uvloop:
        import mode.loop

        mode.loop.use("uvloop")

    app, _ = build(options)
    from faust.worker import Worker

    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
