"""The ceiling of a Python consumer: read a topic with aiokafka, JSON-decode each value.

Prints one JSON line: records read, seconds from start to the last record,
seconds from the first record to the last, and the process's CPU seconds.

    .venv/bin/python bench/bare.py --bootstrap 127.0.0.1:9092 --topic T --expect N
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer


async def consume(bootstrap: str, topic: str, expected: int) -> dict[str, Any]:
    """Read `expected` records from the start of `topic`; return the timings."""
    loads = orjson.loads
    started = time.monotonic()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    count = 0
    first: float | None = None
    try:
        while count < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    loads(record.value)
                count += len(records)
            if first is None and count:
                first = time.monotonic()
    finally:
        done = time.monotonic()
        await consumer.stop()

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "records": count,
        "seconds": done - started,
        "seconds_from_first": done - (first or started),
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "max_rss_bytes": usage.ru_maxrss * 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    options = parser.parse_args()
    result = asyncio.run(consume(options.bootstrap, options.topic, options.expect))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
