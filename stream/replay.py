"""Replay a JSON-lines file of CRM events into the input topic, byte for byte."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from stream.errors import CrmKpiError
from stream.producer import record_key, send
from stream.settings import Settings

logger = logging.getLogger(__name__)


class ReplayError(CrmKpiError):
    """A file to replay cannot be opened or read."""


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay sent and how long it took."""

    records: int
    """Records produced and acknowledged: the file's non-blank lines."""
    skipped_lines: int
    """Blank lines, not produced."""
    bytes: int
    """Sum of the produced values' sizes (without line ends)."""
    elapsed_seconds: float

    @property
    def rate(self) -> float:
        """Records per second over the run; 0 for an empty or instant run."""
        return self.records / self.elapsed_seconds if self.elapsed_seconds else 0.0

    def __str__(self) -> str:
        return (
            f"{self.records:,} records, {self.skipped_lines:,} blank lines skipped,"
            f" {self.bytes:,} bytes, {self.elapsed_seconds:,.2f} s,"
            f" {self.rate:,.0f} records/s"
        )


class _Lines:
    """The records of a JSON-lines stream, counting the blank lines passed over."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.skipped = 0

    def records(self) -> Iterator[tuple[bytes | None, bytes]]:
        """Yield the key and exact bytes of each non-blank line, without its end."""
        for line in self._stream:
            if line.endswith(b"\n"):
                line = line[:-1]
                if line.endswith(b"\r"):
                    line = line[:-1]
            if not line.strip():
                self.skipped += 1
                continue
            yield record_key(line), line


async def replay(
    path: Path,
    settings: Settings,
    rate: float | None = None,
    progress: bool = False,
) -> ReplaySummary:
    """Produce every line of a JSON-lines file to `settings.events_topic`.

    Each non-blank line is one record, sent as is (only its line end removed),
    invalid ones included: the worker dead-letters those. A line that is a JSON
    object is keyed like the simulator keys its records (`producer.event_key`);
    other lines get no key.

    Args:
        path: the file, as written by `simulator.write_jsonl` or any source.
        settings: Kafka bootstrap servers and topic.
        rate: records per second to keep to, `None` for as fast as possible.
        progress: show progress on stderr while producing.

    Raises:
        ReplayError: the file cannot be opened or read.
        ProduceError: Kafka is unreachable or did not acknowledge every record.
    """
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise ReplayError(
            f"cannot open {str(path)!r} to replay: {exc.strerror or exc}"
        ) from exc

    lines = _Lines(stream)
    try:
        delivery = await send(
            lines.records(), settings, rate=rate, progress=progress, what="replay"
        )
    except OSError as exc:
        raise ReplayError(f"cannot read {str(path)!r} to replay: {exc}") from exc
    finally:
        stream.close()

    logger.info(
        "replayed path=%s records=%d skipped=%d", path, delivery.records, lines.skipped
    )
    return ReplaySummary(
        records=delivery.records,
        skipped_lines=lines.skipped,
        bytes=delivery.bytes,
        elapsed_seconds=delivery.elapsed_seconds,
    )
