"""Connection options from the settings: Kafka SASL and TLS, Redis AUTH and TLS."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faust.types.auth import AuthProtocol

from stream.connections import (
    faust_credentials,
    kafka_options,
    kafka_ssl_context,
    redis_options,
)
from stream.errors import SettingsError
from stream.settings import Settings
from tests.certificates import Certificates, issue

KAFKA_SECRET = "kafka-password-7f3a"
REDIS_SECRET = "redis-password-91c2"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return issue(tmp_path_factory.mktemp("tls"))


def settings(**values: Any) -> Settings:
    """Settings from `values` alone: no CRM_* variable or .env file of the caller."""
    defaults: dict[str, Any] = {"kafka_bootstrap": "broker-1:9094,broker-2:9094"}
    return Settings(_env_file=None, **{**defaults, **values})  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def no_crm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CRM_"):
            monkeypatch.delenv(name)


def sasl_ssl(certificates: Certificates, **values: Any) -> Settings:
    return settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="crm",
        kafka_sasl_password=KAFKA_SECRET,
        kafka_ssl_cafile=certificates.ca,
        **values,
    )


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    plain = settings()

    assert kafka_options(plain) == {
        "bootstrap_servers": "broker-1:9094,broker-2:9094",
        "security_protocol": "PLAINTEXT",
    }
    assert faust_credentials(plain) is None
    assert redis_options(plain) == {}


def test_sasl_ssl_gives_aiokafka_the_mechanism_credentials_and_a_verifying_context(
    certificates: Certificates,
) -> None:
    options = kafka_options(sasl_ssl(certificates))
    context = options.pop("ssl_context")

    assert options == {
        "bootstrap_servers": "broker-1:9094,broker-2:9094",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "crm",
        "sasl_plain_password": KAFKA_SECRET,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    # The one CA of the file, not the system's.
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("commonName", "crm-kpi test CA"),),)
    ]


async def test_aiokafka_clients_accept_the_options(
    certificates: Certificates,
) -> None:
    options = kafka_options(sasl_ssl(certificates))

    # Built, not started: the constructors check the options and connect later.
    producer = AIOKafkaProducer(**options)
    consumer = AIOKafkaConsumer(**options)
    admin = AIOKafkaAdminClient(**options)

    for client in (producer.client, consumer._client, admin._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_password == KAFKA_SECRET


def test_sasl_plaintext_has_no_tls_context() -> None:
    options = kafka_options(
        settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_username="crm",
            kafka_sasl_password=KAFKA_SECRET,
        )
    )

    assert options == {
        "bootstrap_servers": "broker-1:9094,broker-2:9094",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "crm",
        "sasl_plain_password": KAFKA_SECRET,
    }


def test_hostname_check_can_be_turned_off(certificates: Certificates) -> None:
    context = kafka_ssl_context(
        settings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=certificates.ca,
            kafka_ssl_check_hostname=False,
        )
    )

    assert context is not None
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_client_certificate_is_loaded_into_the_context(
    certificates: Certificates,
) -> None:
    context = kafka_ssl_context(
        settings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=certificates.ca,
            kafka_ssl_certfile=certificates.certificate,
            kafka_ssl_keyfile=certificates.key,
        )
    )

    assert context is not None


def test_faust_gets_sasl_credentials_over_tls(certificates: Certificates) -> None:
    credentials = faust_credentials(sasl_ssl(certificates))

    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("crm", KAFKA_SECRET)
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert KAFKA_SECRET not in repr(credentials)


def test_faust_gets_sasl_credentials_without_tls() -> None:
    credentials = faust_credentials(
        settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="crm",
            kafka_sasl_password=KAFKA_SECRET,
        )
    )

    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.ssl_context is None


def test_faust_gets_tls_credentials_for_ssl(certificates: Certificates) -> None:
    credentials = faust_credentials(
        settings(kafka_security_protocol="SSL", kafka_ssl_cafile=certificates.ca)
    )

    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol is AuthProtocol.SSL


def test_sasl_without_password_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        kafka_options(
            settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="crm")
        )

    assert str(raised.value) == (
        "CRM_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs CRM_KAFKA_SASL_USERNAME and"
        " CRM_KAFKA_SASL_PASSWORD; set both"
    )


def test_tls_file_without_tls_protocol_is_refused(certificates: Certificates) -> None:
    with pytest.raises(SettingsError) as raised:
        kafka_options(settings(kafka_ssl_cafile=certificates.ca))

    assert str(raised.value) == (
        "CRM_KAFKA_SSL_CAFILE set but CRM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does"
        " not use TLS; set it to SSL or SASL_SSL, or unset the files"
    )


def test_sasl_user_without_sasl_protocol_is_refused(
    certificates: Certificates,
) -> None:
    with pytest.raises(SettingsError) as raised:
        faust_credentials(
            settings(
                kafka_security_protocol="SSL",
                kafka_ssl_cafile=certificates.ca,
                kafka_sasl_username="crm",
            )
        )

    assert str(raised.value).startswith(
        "CRM_KAFKA_SASL_USERNAME set but CRM_KAFKA_SECURITY_PROTOCOL=SSL does not"
        " use SASL"
    )


def test_unreadable_ca_file_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"

    with pytest.raises(SettingsError) as raised:
        kafka_ssl_context(
            settings(kafka_security_protocol="SSL", kafka_ssl_cafile=missing)
        )

    assert str(raised.value).startswith(f"CRM_KAFKA_SSL_CAFILE={missing}: cannot load")


def test_redis_password_in_the_url_moves_to_the_password_setting() -> None:
    moved = settings(redis_url="redis://reader:p%40ss%3Aword@cache:6380/2")

    assert moved.redis_url == "redis://reader@cache:6380/2"
    assert redis_options(moved) == {"password": "p@ss:word"}


def test_redis_password_setting_wins_over_the_url() -> None:
    both = settings(
        redis_url="redis://:from-url@cache:6380/2", redis_password=REDIS_SECRET
    )

    assert both.redis_url == "redis://cache:6380/2"
    assert redis_options(both) == {"password": REDIS_SECRET}


def test_redis_tls_takes_the_ca_file(certificates: Certificates) -> None:
    secured = settings(
        redis_url="rediss://cache:6380/0",
        redis_password=REDIS_SECRET,
        redis_ssl_cafile=certificates.ca,
    )

    assert redis_options(secured) == {
        "password": REDIS_SECRET,
        "ssl_ca_certs": str(certificates.ca),
    }


def test_redis_ca_file_without_tls_is_refused(certificates: Certificates) -> None:
    with pytest.raises(SettingsError) as raised:
        redis_options(settings(redis_ssl_cafile=certificates.ca))

    assert str(raised.value) == (
        "CRM_REDIS_SSL_CAFILE is set but CRM_REDIS_URL uses redis://, which does"
        " not use TLS; write the URL as rediss://host:port/db or unset the CA file"
    )


def test_settings_never_show_a_secret(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_KAFKA_SASL_PASSWORD", KAFKA_SECRET)
    monkeypatch.setenv("CRM_KAFKA_SSL_KEY_PASSWORD", KAFKA_SECRET + "-key")
    monkeypatch.setenv("CRM_REDIS_URL", f"rediss://:{REDIS_SECRET}@cache:6380/0")
    from_environment = Settings(_env_file=None)  # type: ignore[call-arg]

    shown = [
        repr(from_environment),
        str(from_environment),
        from_environment.model_dump_json(),
        repr(from_environment.model_dump()),
    ]

    for text in shown:
        assert KAFKA_SECRET not in text
        assert REDIS_SECRET not in text
    assert from_environment.kafka_sasl_password is not None
    assert from_environment.kafka_sasl_password.get_secret_value() == KAFKA_SECRET
    assert redis_options(from_environment) == {"password": REDIS_SECRET}
