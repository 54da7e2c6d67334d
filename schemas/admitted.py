"""The internal record passed from ingestion to the KPI stage: valid events."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from schemas.events import Event


class AdmittedEvent(BaseModel):
    """A valid event, money in the reporting currency, with where it came from."""

    model_config = ConfigDict(frozen=True)

    partition: int
    offset: int
    produced_ms: int
    event: Event


class AdmittedBatch(BaseModel):
    """Valid events of one ingestion batch, in the order they were read."""

    model_config = ConfigDict(frozen=True)

    topic: str
    events: list[AdmittedEvent]
