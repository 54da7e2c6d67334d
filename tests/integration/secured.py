"""A Kafka broker with SASL_SSL and SCRAM and a Redis with TLS and AUTH, for tests.

Both run apart from the local stack, on free loopback ports and in a
directory of the test's own, with certificates from `tests.certificates`. The
broker is the stack's Kafka (same jars, same configuration template) with its
client listener replaced by a SASL_SSL one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from stream import stack
from stream.connections import kafka_options, redis_options
from stream.settings import Settings
from tests.certificates import Certificates, issue

T = TypeVar("T")

MECHANISM = "SCRAM-SHA-512"
CLIENT_USER = "crm"
BROKER_USER = "broker"
KAFKA_HEAP = "-Xms128m -Xmx512m"
START_SECONDS = 90.0
STOP_SECONDS = 20.0


@dataclass(frozen=True)
class SecuredServices:
    """Where the secured broker and Redis listen, and how to reach them."""

    kafka_port: int
    redis_port: int
    certificates: Certificates
    kafka_password: str
    redis_password: str
    directory: Path

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def kafka_log(self) -> Path:
        """The broker's server.log, where it reports failed authentications."""
        return self.directory / "kafka" / "logs" / "server.log"

    def environment(self) -> dict[str, str]:
        """Return the CRM_* variables of a worker that uses both services.

        The Redis password is written into the URL, as an operator might,
        so the worker has to keep it out of what it logs.
        """
        return {
            "CRM_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "CRM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CRM_KAFKA_SASL_MECHANISM": MECHANISM,
            "CRM_KAFKA_SASL_USERNAME": CLIENT_USER,
            "CRM_KAFKA_SASL_PASSWORD": self.kafka_password,
            "CRM_KAFKA_SSL_CAFILE": str(self.certificates.ca),
            "CRM_REDIS_URL": (
                f"rediss://:{self.redis_password}@127.0.0.1:{self.redis_port}/0"
            ),
            "CRM_REDIS_SSL_CAFILE": str(self.certificates.ca),
        }

    def settings(self, **overrides: Any) -> Settings:
        """Return client settings for both services (overrides win)."""
        values: dict[str, Any] = {
            "kafka_bootstrap": self.kafka_bootstrap,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": MECHANISM,
            "kafka_sasl_username": CLIENT_USER,
            "kafka_sasl_password": self.kafka_password,
            "kafka_ssl_cafile": self.certificates.ca,
            "redis_url": f"rediss://127.0.0.1:{self.redis_port}/0",
            "redis_password": self.redis_password,
            "redis_ssl_cafile": self.certificates.ca,
        }
        values.update(overrides)
        return Settings(**values)


def free_port() -> int:
    """Return a loopback port nothing listens on at the moment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on a fresh event loop in another thread.

    Sync fixtures run while the test session's event loop is idle but set;
    a thread of its own keeps the two loops apart.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def secured_kafka_properties(
    base: str,
    port: int,
    controller_port: int,
    certificates: Certificates,
    broker_password: str,
) -> str:
    """Return the stack's broker configuration with a SASL_SSL client listener.

    The lines are appended: a Java properties file keeps the last value of a
    key, so they replace the stack's PLAINTEXT listener. Brokers talk to each
    other over the same SASL_SSL listener as user `broker`; the KRaft
    controller listener stays PLAINTEXT on loopback.
    """
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required"
        f' username="{BROKER_USER}" password="{broker_password}";'
    )
    lines = [
        "",
        "# SASL_SSL with SCRAM-SHA-512 for clients and between brokers.",
        f"listeners=SECURE://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SECURE://127.0.0.1:{port}",
        "listener.security.protocol.map=SECURE:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=SECURE",
        f"sasl.enabled.mechanisms={MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
        f"listener.name.secure.{MECHANISM.lower()}.sasl.jaas.config={jaas}",
        # PEM key and trust stores (KIP-651): no Java key store to build.
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={certificates.bundle}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={certificates.ca}",
        "ssl.client.auth=none",
    ]
    return base + "\n".join(lines) + "\n"


@contextmanager
def secured_services(directory: Path, tag: str) -> Iterator[SecuredServices]:
    """Run a SASL_SSL Kafka and a TLS Redis with AUTH; stop both at the end.

    Fails the test (never skips) when java or redis-server is missing.
    """
    java = shutil.which("java")
    server = shutil.which("redis-server")
    if java is None or server is None:
        pytest.fail(
            "the security test runs its own Kafka and Redis: install"
            " openjdk-17-jre-headless and redis-server (bash .ci/install.sh)"
        )

    certificates = issue(directory / "tls")
    services = SecuredServices(
        kafka_port=free_port(),
        redis_port=free_port(),
        certificates=certificates,
        kafka_password=f"kafka-{tag}",
        redis_password=f"redis-{tag}",
        directory=directory,
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(_start_redis(server, services))
        processes.append(_start_kafka(java, services))
        yield services
    finally:
        for process in processes:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a service's process group, SIGKILL it if it lingers; reap it."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=STOP_SECONDS)


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # Each service leads a process group of its own (start_new_session).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _start_redis(server: str, services: SecuredServices) -> subprocess.Popen[bytes]:
    """Start Redis with TLS only (no plain port) and a password."""
    directory = services.directory / "redis"
    directory.mkdir(parents=True)
    certificates = services.certificates
    command = [
        server,
        "--port",
        "0",
        "--tls-port",
        str(services.redis_port),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        str(certificates.certificate),
        "--tls-key-file",
        str(certificates.key),
        "--tls-ca-cert-file",
        str(certificates.ca),
        # Clients prove themselves with the password, not a certificate.
        "--tls-auth-clients",
        "no",
        "--requirepass",
        services.redis_password,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
    ]
    process = _spawn(command, directory / "redis.log", directory)
    settings = services.settings()

    def answers() -> bool:
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2, **redis_options(settings)
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    _wait(process, answers, "redis", directory / "redis.log")
    return process


def _start_kafka(java: str, services: SecuredServices) -> subprocess.Popen[bytes]:
    """Format a KRaft node with SCRAM users, start it, wait for SASL_SSL."""
    libs = stack.fetch(Settings())
    directory = services.directory / "kafka"
    logs = directory / "logs"
    logs.mkdir(parents=True)
    broker_password = f"{services.kafka_password}-broker"

    config = directory / "server.properties"
    controller_port = free_port()
    # The template's PLAINTEXT listener is replaced, so its port is never bound.
    base = stack.render_kafka_properties(
        stack.KAFKA_TEMPLATE.read_text(),
        services.kafka_port,
        controller_port,
        directory / "data",
    )
    config.write_text(
        secured_kafka_properties(
            base,
            services.kafka_port,
            controller_port,
            services.certificates,
            broker_password,
        )
    )

    # KRaft keeps SCRAM credentials in the cluster metadata; the format tool
    # writes them into the bootstrap records (KIP-900) before the first start.
    format_command = [
        java,
        f"-Dkafka.logs.dir={logs}",
        f"-Dlog4j2.configurationFile={stack.KAFKA_LOG4J}",
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        stack.new_cluster_id(),
        "-c",
        str(config),
        "--add-scram",
        f"{MECHANISM}=[name={CLIENT_USER},password={services.kafka_password}]",
        "--add-scram",
        f"{MECHANISM}=[name={BROKER_USER},password={broker_password}]",
    ]
    format_log = directory / "format.log"
    with format_log.open("wb") as out:
        formatted = subprocess.run(
            format_command, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if formatted.returncode != 0:
        pytest.fail(f"formatting the secured broker failed: {format_log.read_text()}")

    command = stack.kafka_command(java, KAFKA_HEAP, libs, config, logs)
    process = _spawn(command, directory / "kafka.log", directory)
    settings = services.settings()

    async def describe() -> bool:
        # Until the port is bound, aiokafka would log every refused attempt.
        if not _port_open(services.kafka_port):
            return False
        admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=3000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return bool(cluster["brokers"])
        except KafkaError:
            return False
        finally:
            await admin.close()

    _wait(process, lambda: run(describe()), "kafka", logs / "server.log")
    return process


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _spawn(command: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )


def _wait(
    process: subprocess.Popen[bytes],
    answers: Callable[[], bool],
    name: str,
    log: Path,
) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not answers():
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            pytest.fail(f"the secured {name} did not come up; {log}:\n{tail}")
        time.sleep(0.5)
