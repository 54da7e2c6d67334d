"""KPI snapshot model: one value of one KPI series, as every feed carries it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class KpiSnapshot(BaseModel):
    """The value of one series of a KPI for one window and dimension value.

    `value` is null when the series has no value (a rate whose denominator is
    zero). `key` is the same string on the Kafka topic, in Redis and over HTTP.
    """

    model_config = ConfigDict(frozen=True)

    key: str = Field(description="'<series>|<window>|<dimension value or empty>'.")
    kpi: str = Field(description="KPI id from the catalogue.")
    series: str = Field(description="Series id: the headline or a figure beside it.")
    window: str = Field(description="1h, 24h, 7d, 30d, day, month, last_month or now.")
    dimension: str | None = Field(
        None, description="Name of the KPI's dimension (channel, reason, category)."
    )
    dimension_value: str | None = Field(
        None, description="Its value; 'all' for the overall figure."
    )
    value: float | None = Field(description="The figure, or null when it has none.")
    unit: Literal["ratio", "count", "money", "seconds"]
    currency: str | None = Field(None, description="Currency of a money series.")
    watermark: AwareDatetime = Field(description="Event time the value is computed at.")
    definition_version: int = Field(1, description="Version of the KPI's definition.")
    computed_at: datetime = Field(description="Wall-clock time of the computation.")


def snapshot_key(series: str, window: str, dimension_value: str | None) -> str:
    """Return the key of a series value on every feed."""
    return f"{series}|{window}|{dimension_value or ''}"
