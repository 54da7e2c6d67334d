"""The peer: Quix Streams counting events per type in tumbling 1 h windows.

Runs in its own virtual environment (see bench/requirements-peer.txt: Quix
Streams pins an older pydantic than the worker). The job is simpler than the
worker's: re-key each event by its `type` (a repartition topic through Kafka,
as Quix Streams groups by key), then count per key in tumbling windows of one
hour of event time (`occurred_at`), with RocksDB state and its changelog. It
stops once every record has gone through the window and prints one JSON line
like bench/bare.py.

    .cache/bench-peer/bin/python bench/peer_quix.py --bootstrap B --topic T \
        --expect N --group G --state-dir D
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import orjson
from quixstreams import Application
from quixstreams.models import TimestampType

WINDOW = timedelta(hours=1)
GRACE = timedelta(days=31)
"""How far event time may go back within a window key's stream. Quix Streams
reads the four partitions at their own paces, and the repartition topic
mixes them per type far out of event-time order; with less grace most
records would be late, skipped instead of counted."""


def event_time(
    value: Any, headers: Any, timestamp: float, timestamp_type: TimestampType
) -> int:
    """Return an event's `occurred_at` in epoch milliseconds."""
    return int(datetime.fromisoformat(value["occurred_at"]).timestamp() * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    options = parser.parse_args()

    started = time.monotonic()
    tally = {"records": 0, "late": 0, "windows": 0}
    marks: dict[str, float] = {}

    app = Application(
        broker_address=options.bootstrap,
        consumer_group=options.group,
        auto_offset_reset="earliest",
        state_dir=options.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(
        options.topic, value_deserializer="json", timestamp_extractor=event_time
    )

    def counted() -> None:
        tally["records"] += 1
        if tally["records"] == 1:
            marks["first"] = time.monotonic()
        if tally["records"] >= options.expect and "done" not in marks:
            marks["done"] = time.monotonic()
            app.stop()

    # Each record updates one window, or is late for it: both count as done.
    def updated(*args: Any) -> bool:
        counted()
        return False

    def late(*args: Any) -> bool:
        tally["late"] += 1
        counted()
        return False

    def closed(value: Any) -> None:
        tally["windows"] += 1

    sdf = app.dataframe(topic)
    sdf = sdf.group_by("type")
    window = sdf.tumbling_window(
        WINDOW, grace_ms=GRACE, on_late=late, after_update=updated
    )
    sdf = window.count().final()
    sdf = sdf.update(closed)
    app.run()
    done = marks.get("done", time.monotonic())

    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        **tally,
        "seconds": done - started,
        "seconds_from_first": done - marks.get("first", started),
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "max_rss_bytes": usage.ru_maxrss * 1024,
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
