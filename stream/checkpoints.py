"""Checkpoints of the KPI state: split into chunks, stored in a Faust table.

A checkpoint is the serialized engine plus the offset of the last record of
the admitted-events topic it includes, and the last events-topic offset taken
from each partition (to recognise a batch the ingest stage forwards again).
It is written as numbered chunks under one of two alternating generations,
then a head record naming the generation. All records go to the same
changelog partition, and Kafka keeps the order of a partition, so a restored
head always points at a complete generation: a crash while chunks are written
leaves the previous head and its generation intact.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.errors import CheckpointError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024
"""Chunk size, well under the broker's default 1 MiB message limit."""

HEAD_KEY = "head"


@dataclass(frozen=True)
class Checkpoint:
    """A stored KPI state and the last admitted-topic offset it includes."""

    state: bytes
    offset: int
    generation: int
    sources: dict[tuple[str, int], int] = field(default_factory=dict)
    """The highest events-topic offset taken, by topic and partition."""


def chunk_key(generation: int, index: int) -> str:
    """Return the table key of one chunk of a generation."""
    return f"chunk:{generation % 2}:{index}"


def write(
    table: MutableMapping[str, bytes],
    state: bytes,
    offset: int,
    generation: int,
    sources: Mapping[tuple[str, int], int] | None = None,
) -> int:
    """Store `state` as generation `generation`; return the number of chunks.

    The chunks are written first and the head last, see the module docstring.
    """
    chunks = [
        state[start : start + CHUNK_BYTES]
        for start in range(0, max(len(state), 1), CHUNK_BYTES)
    ]

    for index, chunk in enumerate(chunks):
        table[chunk_key(generation, index)] = generation.to_bytes(8, "big") + chunk

    head = {
        "generation": generation,
        "chunks": len(chunks),
        "offset": offset,
        "bytes": len(state),
        "sha256": hashlib.sha256(state).hexdigest(),
        "sources": [[t, p, at] for (t, p), at in (sources or {}).items()],
    }
    table[HEAD_KEY] = orjson.dumps(head)
    return len(chunks)


def read(table: Mapping[str, bytes]) -> Checkpoint | None:
    """Return the checkpoint stored in `table`, or None when there is none.

    Raises:
        CheckpointError: the head names chunks that are missing or damaged.
    """
    raw_head = table.get(HEAD_KEY)
    if raw_head is None:
        return None

    head: dict[str, Any] = orjson.loads(raw_head)
    generation = int(head["generation"])
    parts = []
    for index in range(int(head["chunks"])):
        value = table.get(chunk_key(generation, index))
        if value is None or int.from_bytes(value[:8], "big") != generation:
            raise CheckpointError(
                f"checkpoint generation {generation} lacks chunk {index}; the"
                " changelog topic was truncated or written by another version."
                " Delete the application's internal topics to start afresh."
            )
        parts.append(value[8:])

    state = b"".join(parts)
    if hashlib.sha256(state).hexdigest() != head["sha256"]:
        raise CheckpointError(
            f"checkpoint generation {generation} does not match its checksum;"
            " delete the application's internal topics to start afresh."
        )
    logger.info(
        "checkpoint read generation=%s offset=%s bytes=%s",
        generation,
        head["offset"],
        len(state),
    )
    # A head written before sources were kept has none: a batch forwarded
    # again is then caught by the event-id check alone, as it was.
    sources = {
        (str(topic), int(part)): int(at) for topic, part, at in head.get("sources", [])
    }
    return Checkpoint(
        state=state,
        offset=int(head["offset"]),
        generation=generation,
        sources=sources,
    )
