"""The one settings class: every knob of the worker, simulator and stack."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.errors import SettingsError

DEFAULT_RATES: dict[str, Decimal] = {
    "EUR": Decimal("1"),
    "USD": Decimal("0.92"),
    "GBP": Decimal("1.17"),
    "CHF": Decimal("1.05"),
    "SEK": Decimal("0.088"),
    "JPY": Decimal("0.0061"),
}

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


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
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT",
        description="How every Kafka client talks to the brokers: PLAINTEXT, SSL"
        " (TLS), SASL_PLAINTEXT (SASL without TLS) or SASL_SSL (SASL over TLS).",
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "PLAIN",
        description="SASL mechanism of SASL_PLAINTEXT and SASL_SSL: PLAIN,"
        " SCRAM-SHA-256 or SCRAM-SHA-512.",
    )
    kafka_sasl_username: str | None = Field(
        None, description="SASL user name; required by the SASL protocols."
    )
    kafka_sasl_password: SecretStr | None = Field(
        None,
        description="SASL password; required by the SASL protocols. Never shown"
        " in logs or in the settings' repr.",
    )
    kafka_ssl_cafile: Path | None = Field(
        None,
        description="PEM file of the CAs that sign the brokers' certificates;"
        " the system's CAs when unset. SSL and SASL_SSL only.",
    )
    kafka_ssl_certfile: Path | None = Field(
        None,
        description="PEM client certificate, for brokers that ask for one"
        " (ssl.client.auth=required). SSL and SASL_SSL only.",
    )
    kafka_ssl_keyfile: Path | None = Field(
        None,
        description="PEM private key of the client certificate; unset when the"
        " certificate file holds the key too.",
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted client key file."
    )
    kafka_ssl_check_hostname: bool = Field(
        True,
        description="Check that a broker's certificate names the host connected"
        " to. Turn off only for certificates issued to another name.",
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
    kafka_session_timeout_seconds: float = Field(
        10.0,
        ge=6,
        le=300,
        description="How long the group waits for a silent worker before its"
        " partitions move to another: the recovery time after a crash.",
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

    # Outputs
    web_host: str = Field(
        "127.0.0.1", description="Address the worker's HTTP serves on."
    )
    web_port: int = Field(6066, description="Port of the worker's HTTP server.")
    snapshot_interval_seconds: float = Field(
        1.0, gt=0, description="Least time between two snapshots of the same KPI key."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis holding the latest KPI values; rediss:// for TLS. A"
        " password in the URL is moved to redis_password.",
    )
    redis_password: SecretStr | None = Field(
        None,
        description="Password of Redis AUTH (with the URL's user name, if any)."
        " Never shown in logs or in the settings' repr.",
    )
    redis_ssl_cafile: Path | None = Field(
        None,
        description="PEM file of the CAs that sign Redis's certificate, for a"
        " rediss:// URL; the system's CAs when unset.",
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

    @model_validator(mode="after")
    def _password_out_of_redis_url(self) -> Settings:
        """Move a password written into `redis_url` to `redis_password`.

        The URL is shown in logs and error messages; the password then is not.
        A `redis_password` given on its own takes precedence over the URL's.
        """
        parts = urlsplit(self.redis_url)
        if parts.password is None:
            return self

        host = parts.netloc.rpartition("@")[2]
        user = f"{parts.username}@" if parts.username else ""
        self.redis_url = urlunsplit(parts._replace(netloc=user + host))
        if self.redis_password is None:
            self.redis_password = SecretStr(unquote(parts.password))
        return self

    @model_validator(mode="after")
    def _check_rates(self) -> Settings:
        """Refuse a rate table that would distort money amounts.

        Raises:
            SettingsError: a rate is zero or negative, or the reporting currency
                is missing from the table or not at rate 1.
        """
        currency = self.reporting_currency
        wrong = sorted(code for code, rate in self.rates.items() if not rate > 0)
        if wrong:
            shown = ", ".join(f"{code}={self.rates[code]}" for code in wrong)
            raise SettingsError(
                f"CRM_RATES has rates that are not positive ({shown}); give each"
                f" currency the units of {currency} that one unit of it is worth,"
                ' such as "0.92"'
            )

        rate = self.rates.get(currency)
        if rate is None:
            raise SettingsError(
                f"CRM_RATES lacks the reporting currency {currency}"
                f' (CRM_REPORTING_CURRENCY); add "{currency}": "1"'
            )
        if rate != 1:
            raise SettingsError(
                f"CRM_RATES gives the reporting currency {currency}"
                f" (CRM_REPORTING_CURRENCY) the rate {rate}; it must be 1, with the"
                f" other rates in units of {currency}"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
