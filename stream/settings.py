"""The one settings class: every knob of the worker, simulator and stack."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_RATES: dict[str, Decimal] = {
    "EUR": Decimal("1"),
    "USD": Decimal("0.92"),
    "GBP": Decimal("1.17"),
    "CHF": Decimal("1.05"),
    "SEK": Decimal("0.088"),
    "JPY": Decimal("0.0061"),
}


class Settings(BaseSettings):
    """Settings read from `CRM_*` environment variables or a `.env` file.

    Nested values (the rate table) are given as JSON, for example
    `CRM_RATES='{"EUR": "1", "USD": "0.92"}'`.
    """

    model_config = SettingsConfigDict(
        env_prefix="CRM_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Kafka
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    app_id: str = Field(
        "crm-kpi-stream",
        description="Faust application id: consumer group and internal topic prefix.",
    )
    events_topic: str = Field("crm-events", description="Topic of incoming CRM events.")
    events_partitions: int = Field(
        4,
        ge=1,
        description="Partitions of the events topic when the worker creates it.",
    )
    dead_letter_topic: str = Field(
        "crm-events-dead", description="Topic of invalid records, with their reason."
    )
    late_topic: str = Field(
        "crm-events-late", description="Topic of events too late to apply."
    )
    kpi_topic: str = Field(
        "crm-kpis", description="Compacted topic of KPI snapshots, keyed by series."
    )
    replication_factor: int = Field(
        1, ge=1, description="Replication factor of the topics the worker creates."
    )
    max_record_bytes: int = Field(
        65536, ge=256, description="Largest accepted event record; larger is invalid."
    )

    # Event contract
    reporting_currency: str = Field(
        "EUR", pattern=r"^[A-Z]{3}$", description="Currency every money KPI is in."
    )
    rates: dict[str, Decimal] = Field(
        default_factory=lambda: dict(DEFAULT_RATES),
        description=(
            "Conversion rates: units of the reporting currency for one unit of"
            " each accepted currency. A currency missing here is invalid."
        ),
    )
    earliest_year: int = Field(
        2000, description="Event times before January 1st of this year are absurd."
    )
    latest_year: int = Field(
        2099, description="Event times after the end of this year are absurd."
    )
    future_tolerance_seconds: int = Field(
        86400,
        ge=0,
        description="How far past the wall clock an event time may lie before it is"
        " rejected as absurd.",
    )

    # Time and windows
    timezone: str = Field(
        "UTC", description="IANA time zone of the calendar windows (day, month)."
    )
    dedupe_horizon_seconds: int = Field(
        86400, ge=0, description="How long a seen event id is remembered."
    )
    late_grace_seconds: int = Field(
        3600, ge=0, description="Grace past the largest window before an event is late."
    )
    active_horizon_days: int = Field(
        90, ge=1, description="A customer with an order this recent is active."
    )
    daily_lead_target: int = Field(
        100, ge=0, description="Leads per day aimed for; 0 leaves the ratio out."
    )
    idle_advance: bool = Field(
        False,
        description="Let the watermark follow the wall clock while the stream is"
        " idle (live mode). Replays of history leave it off.",
    )

    # Outputs
    web_host: str = Field(
        "127.0.0.1", description="Address the worker's HTTP serves on."
    )
    web_port: int = Field(6066, description="Port of the worker's HTTP server.")
    snapshot_interval_seconds: float = Field(
        1.0, gt=0, description="Least time between two snapshots of the same KPI key."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis holding the latest KPI values."
    )
    redis_prefix: str = Field("crm:kpi", description="Prefix of the Redis keys.")
    redis_channel: str = Field(
        "crm:kpi:changes", description="Redis pub/sub channel announcing changes."
    )

    # Checkpoints of the KPI state
    checkpoint_interval_seconds: float = Field(
        5.0, gt=0, description="Least time between two checkpoints of the KPI state."
    )
    data_dir: Path = Field(
        Path("var/worker"), description="Directory of the worker's local table data."
    )

    # Local stack
    stack_dir: Path = Field(
        Path(".stack"), description="Where the local stack keeps its data and logs."
    )
    kafka_version: str = Field("4.0.2", description="Apache Kafka of the local stack.")
    kafka_heap: str = Field("-Xms256m -Xmx768m", description="JVM heap of the broker.")
    kafka_port: int = Field(9092, description="Broker port of the local stack.")
    kafka_controller_port: int = Field(
        9093, description="KRaft controller port of the local stack."
    )
    redis_port: int = Field(6379, description="Redis port of the local stack.")
    prometheus_port: int = Field(
        9090, description="Prometheus port of the local stack."
    )
    prometheus_url: str = Field(
        "http://127.0.0.1:9090", description="Prometheus the tests and tools query."
    )
    prometheus_targets: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:6066"],
        description="Worker HTTP addresses (host:port) the local Prometheus scrapes.",
    )
    stack_cache_dir: Path = Field(
        Path(".cache"),
        description="Where the local stack keeps the Maven repository and Kafka"
        " jars; `stack reset` leaves it alone.",
    )
    stack_start_timeout_seconds: float = Field(
        90.0, gt=0, description="How long `stack up` waits for each service to answer."
    )
    stack_stop_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="How long `stack down` waits after SIGTERM before SIGKILL.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
