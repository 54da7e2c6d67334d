"""Models of the worker's HTTP KPI API: `GET /kpis` and `GET /kpis/{id}`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class ThresholdView(BaseModel):
    """Where a KPI's headline turns from healthy to worrying."""

    model_config = ConfigDict(frozen=True)

    direction: Literal["below", "above"] = Field(
        description="Which side is bad: 'below' means low values are bad."
    )
    warning: float = Field(description="First colour step of the headline.")
    critical: float = Field(description="Second colour step; alerts fire here.")


class SeriesValue(BaseModel):
    """The latest value of a series for one window and dimension value."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(description="Snapshot key, as on the Kafka topic and in Redis.")
    window: str = Field(description="1h, 24h, 7d, 30d, day, month, last_month or now.")
    dimension_value: str | None = Field(
        description="Value of the KPI's dimension; 'all' for the overall figure,"
        " null for a KPI without dimension."
    )
    value: float | None = Field(
        description="The figure; null when it has none (a rate with a zero"
        " denominator) or when no snapshot of it was published yet."
    )
    watermark: AwareDatetime | None = Field(
        description="Event time the value was computed at; null with no snapshot."
    )
    computed_at: AwareDatetime | None = Field(
        description="Wall-clock time of the computation; null with no snapshot."
    )
    definition_version: int | None = Field(
        description="Version of the KPI definition that computed the value."
    )


class SeriesView(BaseModel):
    """One figure of a KPI with its values in every window and dimension."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Series id.")
    headline: bool = Field(description="Whether this series is the KPI's own value.")
    metric: str = Field(description="Name of the Prometheus metric of the series.")
    unit: Literal["ratio", "count", "money", "seconds"] = Field(
        description="ratio (0..1, shown as %), count, money or seconds."
    )
    currency: str | None = Field(description="ISO 4217 currency of a money series.")
    help: str = Field(description="What the series measures.")
    values: list[SeriesValue]


class KpiView(BaseModel):
    """A KPI of the catalogue with every value of every series."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="KPI id.")
    title: str
    formula: str = Field(description="How the KPI is computed.")
    definition_version: int = Field(
        description="Version of the KPI's definition in the catalogue."
    )
    dimension: str | None = Field(
        description="Name of the KPI's dimension (channel, reason, category)."
    )
    dimension_values: list[str] = Field(
        description="Values of the dimension, 'all' first; empty without dimension."
    )
    windows: list[str] = Field(description="Windows of the headline series.")
    threshold: ThresholdView | None
    series: list[SeriesView] = Field(description="The headline series first.")


class KpiListing(BaseModel):
    """Response of `GET /kpis`: every KPI of the catalogue."""

    model_config = ConfigDict(frozen=True)

    watermark: AwareDatetime | None = Field(
        description="Latest watermark among the values; null before any snapshot."
    )
    kpis: list[KpiView]


class KpiDocument(BaseModel):
    """Response of `GET /kpis/{id}`: one KPI."""

    model_config = ConfigDict(frozen=True)

    watermark: AwareDatetime | None = Field(
        description="Latest watermark among the KPI's values; null before any."
    )
    kpi: KpiView


class KpiNotFound(BaseModel):
    """Response of `GET /kpis/{id}` with status 404: the id is not a KPI."""

    model_config = ConfigDict(frozen=True)

    error: str = Field(description="What went wrong and what to do.")
    known_ids: list[str] = Field(description="Every KPI id of the catalogue.")


API_MODELS: dict[str, type[BaseModel]] = {
    "api/kpi-listing.json": KpiListing,
    "api/kpi-document.json": KpiDocument,
    "api/kpi-not-found.json": KpiNotFound,
}
"""Response models by the path of their JSON Schema under schemas/json."""


def api_json_schemas() -> dict[str, dict[str, Any]]:
    """Return the JSON Schema of every response, by path under schemas/json.

    The schemas describe the responses as the worker writes them
    (serialization mode).
    """
    return {
        path: model.model_json_schema(mode="serialization")
        for path, model in API_MODELS.items()
    }
