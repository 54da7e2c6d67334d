"""A worker on a SASL_SSL (SCRAM-SHA-512) Kafka and a TLS Redis with AUTH.

The test runs its own broker and Redis (tests/integration/secured.py), not the
local stack's, so it needs java, the stack's Kafka jars and redis-server, and
fails when one is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from stream.connections import kafka_options
from stream.producer import send
from stream.settings import Settings
from stream.sinks import latest_key
from tests.integration.conftest import WorkerRun, metric_value, wait_until
from tests.integration.event_logs import lead_events
from tests.integration.secured import SecuredServices, free_port, run, secured_services

# The worker's own pages, and Faust's index page at "/".
PAGES = ["/", "/metrics", "/kpis", "/kpis/lead_conversion", "/kpis/stream", "/wall"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredServices]:
    """The SASL_SSL broker and the TLS Redis, stopped after the module."""
    tag = uuid.uuid4().hex[:16]
    with secured_services(tmp_path_factory.mktemp("secured"), tag) as services:
        yield services


@pytest.fixture(scope="module")
def secured_worker(
    secured: SecuredServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerRun]:
    """A worker configured for both secured services through CRM_* variables."""
    suffix = uuid.uuid4().hex[:8]
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("CRM_")
    }
    environment.update(secured.environment())
    environment.update(
        {
            "CRM_APP_ID": f"crm-kpi-secured-{suffix}",
            "CRM_EVENTS_TOPIC": f"crm-events-{suffix}",
            "CRM_REDIS_PREFIX": f"crm-secured-{suffix}:kpi",
            "CRM_CHECKPOINT_INTERVAL_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log: Path = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = WorkerRun(
        suffix=suffix, port=free_port(), environment=environment, log=log
    )
    worker.start()
    yield worker
    for process in worker.processes:
        worker.stop(process)


def test_worker_computes_kpis_over_sasl_ssl_and_tls_redis(
    secured: SecuredServices, secured_worker: WorkerRun
) -> None:
    settings = secured.settings(events_topic=secured_worker.events_topic)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    records = [*lead_events(start, created=40, converted=10), b"this is not json"]
    delivery = run(
        send(
            [(str(index).encode(), value) for index, value in enumerate(records)],
            settings,
        )
    )
    assert delivery.records == 51

    # All 50 events lie within one hour, so the 24 h window holds all of them:
    # 10 conversions for 40 leads created.
    labels = {"window": "24h"}
    wait_until(
        lambda: (
            metric_value(
                secured_worker.metrics_text(), "crm_lead_conversion_ratio", labels
            )
            == 0.25
        ),
        timeout=60,
        what="crm_lead_conversion_ratio{window='24h'} == 0.25 on /metrics",
    )
    text = secured_worker.metrics_text()
    assert metric_value(text, "crm_lead_volume", labels) == 40
    assert metric_value(text, "crm_events_invalid_total", {"reason": "not_json"}) == 1

    # The snapshot reaches Redis over TLS with the password...
    client = redis.Redis.from_url(
        f"rediss://127.0.0.1:{secured.redis_port}/0",
        password=secured.redis_password,
        ssl_ca_certs=str(secured.certificates.ca),
    )
    hash_key = latest_key(secured_worker.environment["CRM_REDIS_PREFIX"])

    def redis_value() -> float | None:
        body = client.hget(hash_key, "lead_conversion|24h|")
        return orjson.loads(body)["value"] if body else None  # type: ignore[arg-type]

    try:
        wait_until(lambda: redis_value() == 0.25, timeout=30, what="Redis snapshot")
    finally:
        client.close()
    assert metric_value(secured_worker.metrics_text(), "crm_redis_up", {}) == 1

    # ... and the KPI topic, which the HTTP API reads back over SASL_SSL.
    def api_value() -> float | None:
        url = f"{secured_worker.base_url}/kpis/lead_conversion"
        document = httpx.get(url, timeout=10).json()
        for series in document["kpi"]["series"]:
            for value in series["values"]:
                if value["key"] == "lead_conversion|24h|":
                    return value["value"]  # type: ignore[no-any-return]
        return None

    wait_until(lambda: api_value() == 0.25, timeout=30, what="GET /kpis value")


async def _bootstrap(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=5000)
    try:
        await admin.start()
    finally:
        await admin.close()


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(
            {
                "kafka_security_protocol": "PLAINTEXT",
                "kafka_sasl_username": None,
                "kafka_ssl_cafile": None,
            },
            id="plaintext",
        ),
        pytest.param(
            {"kafka_security_protocol": "SSL", "kafka_sasl_username": None},
            id="tls-without-sasl",
        ),
        pytest.param(
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": None},
            id="sasl-without-tls",
        ),
        pytest.param({"kafka_ssl_cafile": None}, id="broker-certificate-untrusted"),
    ],
)
def test_broker_refuses_a_client_without_tls_and_credentials(
    secured: SecuredServices, overrides: dict[str, object]
) -> None:
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        run(_bootstrap(secured.settings(**overrides)))


def test_broker_refuses_a_wrong_scram_password(secured: SecuredServices) -> None:
    log_before = secured.kafka_log.read_text()

    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        run(_bootstrap(secured.settings(kafka_sasl_password="not-the-password")))

    # The broker saw TLS and a SCRAM exchange, and refused the credentials.
    def refused() -> bool:
        logged = secured.kafka_log.read_text().removeprefix(log_before)
        return (
            "Authentication failed during authentication due to invalid"
            " credentials with SASL mechanism SCRAM-SHA-512" in logged
        )

    wait_until(refused, timeout=10, what="the broker logging the failed login")


@pytest.mark.parametrize(
    ("url", "error"),
    [
        pytest.param(
            "rediss://127.0.0.1:{port}/0", redis.AuthenticationError, id="no-password"
        ),
        pytest.param(
            "rediss://:wrong@127.0.0.1:{port}/0",
            redis.AuthenticationError,
            id="wrong-password",
        ),
        pytest.param("redis://127.0.0.1:{port}/0", redis.ConnectionError, id="no-tls"),
    ],
)
def test_redis_refuses_a_client_without_tls_and_password(
    secured: SecuredServices, url: str, error: type[Exception]
) -> None:
    options = {"ssl_ca_certs": str(secured.certificates.ca)} if "rediss" in url else {}
    client = redis.Redis.from_url(
        url.format(port=secured.redis_port), socket_timeout=5, **options
    )
    try:
        with pytest.raises(error):
            client.ping()
    finally:
        client.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_worker_pages_refuse_writes(secured_worker: WorkerRun, method: str) -> None:
    statuses = {
        page: httpx.request(
            method, secured_worker.base_url + page, timeout=10
        ).status_code
        for page in PAGES
    }

    assert statuses == dict.fromkeys(PAGES, 405)


def test_faust_router_and_table_pages_are_not_served(
    secured_worker: WorkerRun,
) -> None:
    paths = ["/router/", "/router/topics", "/table/", "/table/kpi-checkpoint/"]
    statuses = {
        path: httpx.get(secured_worker.base_url + path, timeout=10).status_code
        for path in paths
    }

    assert statuses == dict.fromkeys(paths, 404)


def test_worker_log_holds_no_password(
    secured: SecuredServices, secured_worker: WorkerRun
) -> None:
    # Stopped first, so that the log also holds the shutdown's lines.
    for process in secured_worker.processes:
        secured_worker.stop(process)
    log = secured_worker.log.read_text(errors="replace")

    assert "redis sink started" in log
    assert "snapshot reader started" in log
    assert secured.kafka_password not in log
    assert secured.redis_password not in log
