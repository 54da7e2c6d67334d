"""The internal record passed from ingestion to the KPI stage: valid events."""

from __future__ import annotations

import typing
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict

from schemas.events import EVENT_MODELS, EVENT_TYPES, Event


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


Source = tuple[int, int, int, Event]
"""An admitted event as ingestion has it: partition, offset, produced_ms, event."""

_MODELS: dict[str, type[BaseModel]] = dict(zip(EVENT_TYPES, EVENT_MODELS, strict=True))


def _holds(annotation: Any, kinds: tuple[type, ...]) -> bool:
    """Tell whether a field annotation is one of `kinds`, optional or annotated."""
    if annotation in kinds:
        return True
    return any(_holds(part, kinds) for part in typing.get_args(annotation))


def _fields_of(model: type[BaseModel], kinds: tuple[type, ...]) -> tuple[str, ...]:
    """Return the fields of `model` holding one of `kinds`."""
    return tuple(
        name
        for name, field in model.model_fields.items()
        if _holds(field.annotation, kinds)
    )


# JSON has no instants nor decimals: these fields travel as strings.
_TIMES = {name: _fields_of(m, (datetime, AwareDatetime)) for name, m in _MODELS.items()}
_MONEY = {name: _fields_of(m, (Decimal,)) for name, m in _MODELS.items()}


def _decimal_as_text(value: Any) -> str:
    if isinstance(value, Decimal):
        # str() of a Decimal reads back as the same Decimal, every digit kept.
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot go into an admitted batch")


def encode_batch(topic: str, events: Iterable[Source]) -> bytes:
    """Return the JSON of the `AdmittedBatch` of `events`, without building it.

    Building the models only to serialize them costs as much as validating
    the record did; the JSON is the one `AdmittedBatch.model_dump_json` gives,
    up to the spelling of UTC offsets.
    """
    return orjson.dumps(
        {
            "topic": topic,
            "events": [
                {
                    "partition": partition,
                    "offset": offset,
                    "produced_ms": produced_ms,
                    # A model's __dict__ holds exactly its fields.
                    "event": event.__dict__,
                }
                for partition, offset, produced_ms, event in events
            ],
        },
        default=_decimal_as_text,
    )


_Model = TypeVar("_Model", bound=BaseModel)


def _built(model: type[_Model], values: dict[str, Any]) -> _Model:
    # What `model_construct` does, less its handling of defaults and aliases,
    # which a batch written by `encode_batch` never needs: every field is there.
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


def decode_batch(raw: bytes) -> AdmittedBatch:
    """Read a batch written by `encode_batch`, trusting it: no validation.

    Only the ingest stage writes the admitted topic, and only events it has
    validated, so validating them again would double the cost of every event
    for nothing. A batch from anything else must be read with
    `AdmittedBatch.model_validate_json` instead.
    """
    data = orjson.loads(raw)
    fromisoformat = datetime.fromisoformat
    admitted = []
    for item in data["events"]:
        values = item["event"]
        kind = values["type"]
        for name in _TIMES[kind]:
            if values[name] is not None:
                values[name] = fromisoformat(values[name])
        for name in _MONEY[kind]:
            if values[name] is not None:
                values[name] = Decimal(values[name])
        item["event"] = _built(_MODELS[kind], values)
        admitted.append(_built(AdmittedEvent, item))
    return _built(AdmittedBatch, {"topic": data["topic"], "events": admitted})
