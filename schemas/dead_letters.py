"""Dead-letter model: an invalid record as written to the dead-letter topic."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class DeadLetter(BaseModel):
    """A record that is not a valid CRM event, with why and where it was read.

    The original bytes travel base64-encoded so that any record, JSON or not,
    survives; `payload_preview` is for a person skimming the topic.
    """

    model_config = ConfigDict(frozen=True)

    reason: str = Field(description="Short stable code of the class of bad input.")
    detail: str = Field(
        description="The field, what was expected and the value that was found."
    )
    topic: str = Field(description="Topic the record was read from.")
    partition: int = Field(description="Partition the record was read from.")
    offset: int = Field(description="Offset of the record in its partition.")
    timestamp_ms: int | None = Field(
        description="Kafka timestamp of the record, milliseconds since the epoch."
    )
    event_id: str | None = Field(
        None, description="The record's `event_id`, when it could be read."
    )
    type: str | None = Field(
        None, description="The record's `type`, when it could be read."
    )
    payload_base64: str = Field(
        description="The record's bytes in base64 (RFC 4648), cut to the size limit.",
        json_schema_extra={"contentEncoding": "base64"},
    )
    payload_size: int = Field(description="Size of the original record in bytes.")
    payload_truncated: bool = Field(
        description="True when the record was larger than the size limit and only its"
        " first `max_record_bytes` bytes are kept."
    )
    payload_preview: str = Field(
        description="The start of the record as printable text, for reading by eye."
    )
    rejected_at: AwareDatetime = Field(description="Wall-clock time of the rejection.")
