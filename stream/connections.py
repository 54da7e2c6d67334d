"""Kafka and Redis connection options from the settings.

Every Kafka client of the project (Faust's, the producers, the admin clients
and the snapshot reader) and every Redis client takes its security options
from here, so that one set of settings secures them all:

- `kafka_options`: keyword arguments of aiokafka's producer, consumer and
  admin client (bootstrap servers, security protocol, SASL, TLS);
- `faust_credentials`: the same for `faust.App(broker_credentials=...)`;
- `redis_options`: keyword arguments of `redis.asyncio.Redis.from_url`.

Secrets leave the settings' `SecretStr` only here, into the client objects;
nothing in this module logs them.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stream.errors import SettingsError
from stream.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Return the TLS context of the Kafka clients; None without TLS.

    The context verifies the broker's certificate against `kafka_ssl_cafile`
    (the system's CAs when unset) and presents the client certificate when
    one is given.

    Raises:
        SettingsError: a TLS file is set without a TLS protocol, or a file
            cannot be read as PEM.
    """
    _check_kafka_settings(settings)
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None

    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(
            cafile=str(cafile) if cafile is not None else None
        )
    except (OSError, ssl.SSLError) as error:
        raise SettingsError(
            _unreadable("CRM_KAFKA_SSL_CAFILE", cafile, error)
        ) from error
    context.check_hostname = settings.kafka_ssl_check_hostname

    certfile = settings.kafka_ssl_certfile
    if certfile is not None:
        keyfile = settings.kafka_ssl_keyfile
        password = settings.kafka_ssl_key_password
        try:
            context.load_cert_chain(
                str(certfile),
                str(keyfile) if keyfile is not None else None,
                password.get_secret_value() if password is not None else None,
            )
        except (OSError, ssl.SSLError) as error:
            raise SettingsError(
                _unreadable("CRM_KAFKA_SSL_CERTFILE and _KEYFILE", certfile, error)
            ) from error
    return context


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Return the connection keyword arguments of aiokafka's clients.

    They suit `AIOKafkaProducer`, `AIOKafkaConsumer` and `AIOKafkaAdminClient`
    alike: bootstrap servers, security protocol and, as the protocol needs
    them, the SASL mechanism and credentials and the TLS context.

    Raises:
        SettingsError: the security settings do not fit together.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": protocol,
    }
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol in SASL_PROTOCOLS:
        username, password = _sasl_credentials(settings)
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = username
        options["sasl_plain_password"] = password
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Return the `broker_credentials` of the Faust app; None for PLAINTEXT.

    Faust hands them to aiokafka for its consumer, producer and topic
    creation, as `kafka_options` does for the project's own clients.

    Raises:
        SettingsError: the security settings do not fit together.
    """
    # Faust takes most of a second to import; the producer and the admin
    # clients, which also import this module, do without it.
    import faust

    protocol = settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        username, password = _sasl_credentials(settings)
        # Faust picks SASL_SSL over SASL_PLAINTEXT when given a TLS context.
        return faust.SASLCredentials(
            username=username,
            password=password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def redis_options(settings: Settings) -> dict[str, Any]:
    """Return the security keyword arguments of `Redis.from_url(redis_url)`.

    TLS itself comes from the URL's scheme (rediss://); the password and the
    CA file come from the settings.

    Raises:
        SettingsError: a CA file is given for a URL without TLS.
    """
    options: dict[str, Any] = {}
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()

    cafile = settings.redis_ssl_cafile
    if cafile is not None:
        scheme = urlsplit(settings.redis_url).scheme
        if scheme != "rediss":
            raise SettingsError(
                f"CRM_REDIS_SSL_CAFILE is set but CRM_REDIS_URL uses {scheme}://,"
                " which does not use TLS; write the URL as rediss://host:port/db"
                " or unset the CA file"
            )
        options["ssl_ca_certs"] = str(cafile)
    return options


def _check_kafka_settings(settings: Settings) -> None:
    """Refuse security settings that the chosen protocol would ignore.

    A CA file or a SASL user with PLAINTEXT means the operator believes the
    connection is protected while it is not; saying so beats ignoring them.
    """
    protocol = settings.kafka_security_protocol
    tls_files = {
        "CRM_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "CRM_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "CRM_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    given = [name for name, value in tls_files.items() if value is not None]
    if given and protocol not in TLS_PROTOCOLS:
        raise SettingsError(
            f"{', '.join(given)} set but CRM_KAFKA_SECURITY_PROTOCOL={protocol}"
            " does not use TLS; set it to SSL or SASL_SSL, or unset the files"
        )

    sasl = settings.kafka_sasl_username is not None
    if sasl and protocol not in SASL_PROTOCOLS:
        raise SettingsError(
            f"CRM_KAFKA_SASL_USERNAME set but CRM_KAFKA_SECURITY_PROTOCOL={protocol}"
            " does not use SASL; set it to SASL_SSL (or SASL_PLAINTEXT on a"
            " trusted network), or unset the user"
        )


def _sasl_credentials(settings: Settings) -> tuple[str, str]:
    """Return the SASL user name and password; both are required."""
    username = settings.kafka_sasl_username
    password = settings.kafka_sasl_password
    if username is None or password is None:
        raise SettingsError(
            f"CRM_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs"
            " CRM_KAFKA_SASL_USERNAME and CRM_KAFKA_SASL_PASSWORD; set both"
        )
    return username, password.get_secret_value()


def _unreadable(setting: str, path: Path | None, error: BaseException) -> str:
    """Return the message of a TLS file that could not be loaded."""
    return (
        f"{setting}={path}: cannot load it as PEM ({error}); give a readable PEM file"
    )
