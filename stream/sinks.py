"""Snapshot sinks: the compacted Kafka topic and Redis, with their metrics.

Both sinks take the snapshots the `Snapshotter` emits. Neither loses the latest
value of a key when its service fails: what could not be written waits in a
backlog holding the latest snapshot per key, so it never grows beyond the
number of keys, and goes out with the next successful write. A failing service
never stops the worker: failures are counted, logged once per outage, and
retried at most once per `retry_seconds`. docs/feeds.md documents what each
feed holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from urllib.parse import urlsplit

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from schemas.kpis import KpiSnapshot
from stream.connections import kafka_options, redis_options
from stream.errors import SettingsError, TopicError
from stream.settings import Settings
from stream.snapshots import EPOCH
from stream.topics import ensure_topics, external_topics

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
"""Least time between two attempts to write to a service that is down."""

MILLISECOND = timedelta(milliseconds=1)
KAFKA_REQUEST_TIMEOUT_MS = 10_000
REDIS_TIMEOUT_SECONDS = 2.0
TOPIC_METADATA_SECONDS = 10.0

# Error codes of the Kafka protocol in DescribeConfigs and Metadata responses.
_UNKNOWN_TOPIC = 3
_NO_ERROR = 0


class FeedMetrics:
    """Metrics of the snapshot sinks, registered on the registry given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "crm_snapshots_published",
            "KPI snapshots written to a feed.",
            ["sink"],
            registry=registry,
        )
        self.backlog = Gauge(
            "crm_snapshot_backlog",
            "KPI snapshots waiting for a feed to answer again (at most one per key).",
            ["sink"],
            registry=registry,
        )
        self.kafka_errors = Counter(
            "crm_kafka_snapshot_errors",
            "Failed attempts to produce KPI snapshots to Kafka.",
            registry=registry,
        )
        self.redis_errors = Counter(
            "crm_redis_errors",
            "Failed attempts to write KPI snapshots to Redis.",
            registry=registry,
        )
        self.redis_up = Gauge(
            "crm_redis_up",
            "1 when the last attempt to reach Redis succeeded, 0 when it failed.",
            registry=registry,
        )


class _BacklogSink:
    """Write snapshots in batches; keep the latest per key while writes fail."""

    name = "sink"
    errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        metrics: FeedMetrics,
        error_counter: Counter,
        clock: Callable[[], float],
        retry_seconds: float,
    ) -> None:
        self._metrics = metrics
        self._error_counter = error_counter
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._backlog: dict[str, KpiSnapshot] = {}
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._contact_at = clock()
        self._lock = asyncio.Lock()

    @property
    def backlog(self) -> int:
        """Return how many snapshots wait for the service to answer again."""
        return len(self._backlog)

    @property
    def down(self) -> bool:
        """Whether the last write failed."""
        return self._down_since is not None

    async def publish(self, snapshots: Iterable[KpiSnapshot]) -> None:
        """Write the snapshots, with any still waiting from earlier failures.

        Call it on every tick, with no snapshots too: that is when a backlog
        left by an outage goes out, and when an idle sink checks that the
        service still answers (at most once per `retry_seconds`). Never raises
        for the service being down.
        """
        async with self._lock:
            for snapshot in snapshots:
                self._backlog[snapshot.key] = snapshot

            now = self._clock()
            if not self._ready():
                pass
            elif self.down:
                if now >= self._retry_at:
                    await self._attempt()
            elif self._backlog or now - self._contact_at >= self._retry_seconds:
                await self._attempt()

            self._metrics.backlog.labels(self.name).set(len(self._backlog))

    async def _attempt(self) -> None:
        """Write the backlog; with none, check that the service answers."""
        batch = list(self._backlog.values())
        self._contact_at = self._clock()
        try:
            if batch or self.down:
                await self._write(batch)
            else:
                await self._probe()
        except self.errors as error:
            self._failed(error)
        else:
            self._backlog.clear()
            self._written(len(batch))

    def _failed(self, error: BaseException) -> None:
        self._error_counter.inc()
        self._retry_at = self._clock() + self._retry_seconds
        if self._down_since is None:
            self._down_since = self._clock()
            logger.warning(
                "%s unreachable target=%s backlog=%s error=%r; keeping the latest"
                " snapshot per key until it answers",
                self.name,
                self._target(),
                len(self._backlog),
                error,
            )

    def _written(self, count: int) -> None:
        self._metrics.published.labels(self.name).inc(count)
        if self._down_since is not None:
            logger.info(
                "%s reachable again target=%s written=%s down_seconds=%.1f",
                self.name,
                self._target(),
                count,
                self._clock() - self._down_since,
            )
            self._down_since = None

    def _ready(self) -> bool:
        """Whether the sink can write; until then snapshots wait in the backlog."""
        return True

    async def _write(self, snapshots: list[KpiSnapshot]) -> None:
        raise NotImplementedError

    async def _probe(self) -> None:
        """Check that the service answers; raise one of `errors` if not."""

    def _target(self) -> str:
        raise NotImplementedError


class KafkaSink(_BacklogSink):
    """Produce snapshots to the compacted KPI topic, keyed by snapshot key.

    The topic is created compacted if missing. Compaction keeps at least the
    last record of every key, so a consumer reading the topic from the start
    ends with the latest snapshot of every KPI. A batch that failed is sent
    again whole, so a reader may see a snapshot twice.
    """

    name = "kafka"
    errors = (KafkaError,)

    def __init__(
        self,
        settings: Settings,
        metrics: FeedMetrics,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        super().__init__(metrics, metrics.kafka_errors, clock, retry_seconds)
        self.settings = settings
        self.topic = settings.kpi_topic
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Create the topic if missing and connect the producer.

        Raises:
            SettingsError: the topic exists and is not compacted.
            TopicError: Kafka does not answer or refuses the topic.
            KafkaError: the producer cannot connect.
        """
        await ensure_snapshot_topic(self.settings)
        producer = AIOKafkaProducer(
            **kafka_options(self.settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=10,
            request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS,
        )
        await producer.start()
        self._producer = producer
        logger.info("kafka sink started topic=%s", self.topic)

    async def stop(self) -> None:
        """Send what waits, then close the producer."""
        if self._producer is None:
            return
        await self.publish(())
        await self._producer.stop()
        self._producer = None
        logger.info("kafka sink stopped topic=%s backlog=%s", self.topic, self.backlog)

    def _ready(self) -> bool:
        # A timer may tick before the service that starts the sink is up.
        return self._producer is not None

    async def _write(self, snapshots: list[KpiSnapshot]) -> None:
        assert self._producer is not None
        # The record timestamp is the time the snapshot was computed, not the
        # time of the send: the sends of a batch spread over tens of
        # milliseconds, which would bring two records of a key, emitted an
        # interval apart, closer than the interval on the topic.
        deliveries = [
            await self._producer.send(
                self.topic,
                key=snapshot.key.encode(),
                value=snapshot.model_dump_json().encode(),
                timestamp_ms=(snapshot.computed_at - EPOCH) // MILLISECOND,
            )
            for snapshot in snapshots
        ]
        await asyncio.gather(*deliveries)

    def _target(self) -> str:
        return f"{self.settings.kafka_bootstrap}/{self.topic}"


class RedisSink(_BacklogSink):
    """Keep the latest snapshot of every key in Redis and announce each change.

    Layout (prefix and channel from the settings):

    - hash `{prefix}:latest`: field = snapshot key, value = snapshot JSON;
    - channel `{channel}`: one message per snapshot written, its JSON.

    Both are written in one MULTI/EXEC transaction, so a subscriber that reads
    the hash on a message finds at least that value.

    A Redis that restarts without persistence comes back empty. So the first
    write after an outage sets every key the sink has written before, not only
    those that changed meanwhile; and an idle sink sends a PING once per
    `retry_seconds`, so that a restart between two changes is noticed too (the
    client's connection from before the restart fails).
    """

    name = "redis"
    errors = (RedisError, OSError)

    def __init__(
        self,
        settings: Settings,
        metrics: FeedMetrics,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        super().__init__(metrics, metrics.redis_errors, clock, retry_seconds)
        self.latest_key = latest_key(settings.redis_prefix)
        self.channel = settings.redis_channel
        self._stored: dict[str, str] = {}
        self._address = urlsplit(settings.redis_url).netloc.rpartition("@")[2]
        # The sink retries on its own schedule; the client's default retries
        # with backoff would hold the timer for seconds on every attempt.
        self._client = Redis.from_url(
            settings.redis_url,
            **redis_options(settings),
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )

    async def start(self) -> None:
        """Check that Redis answers; if it does not, carry on and count it."""
        try:
            await self._client.ping()
        except self.errors as error:
            self._metrics.redis_up.set(0)
            self._failed(error)
            return
        self._metrics.redis_up.set(1)
        logger.info(
            "redis sink started target=%s hash=%s channel=%s",
            self._address,
            self.latest_key,
            self.channel,
        )

    async def stop(self) -> None:
        """Write what waits if Redis answers, then close the connections."""
        await self.publish(())
        await self._client.aclose()
        logger.info(
            "redis sink stopped target=%s backlog=%s", self._address, self.backlog
        )

    async def _write(self, snapshots: list[KpiSnapshot]) -> None:
        bodies = {snapshot.key: snapshot.model_dump_json() for snapshot in snapshots}
        # After an outage Redis may have lost the hash: set every key again.
        # Only the snapshots that are new are announced on the channel.
        latest = {**self._stored, **bodies} if self.down else bodies
        if not latest:
            # An empty transaction would succeed without asking Redis.
            await self._probe()
            return
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self.latest_key, mapping=latest)  # type: ignore[arg-type]
            for body in bodies.values():
                pipe.publish(self.channel, body)
            await pipe.execute()
        self._stored.update(bodies)

    async def _probe(self) -> None:
        await self._client.ping()

    def _failed(self, error: BaseException) -> None:
        self._metrics.redis_up.set(0)
        super()._failed(error)

    def _written(self, count: int) -> None:
        self._metrics.redis_up.set(1)
        super()._written(count)

    def _target(self) -> str:
        return self._address


def latest_key(prefix: str) -> str:
    """Return the Redis hash holding the latest snapshot of every key."""
    return f"{prefix}:latest"


async def ensure_snapshot_topic(settings: Settings) -> list[int]:
    """Create the compacted KPI topic if missing; check its cleanup policy.

    Returns:
        The partition ids of the topic.

    Raises:
        SettingsError: the topic exists and is not compacted (a broker with
            auto.create.topics.enable creates it with the default policy if
            something reads or writes it first).
        TopicError: Kafka does not answer, or refuses or hides the topic.
    """
    topic = settings.kpi_topic
    await ensure_topics(
        settings, [t for t in external_topics(settings) if t.name == topic]
    )

    admin = AIOKafkaAdminClient(**kafka_options(settings))
    try:
        await admin.start()
        policy = await cleanup_policy(admin, topic)
        partitions = await _partitions(admin, topic)
    except KafkaError as error:
        raise TopicError(
            f"cannot check topic {topic!r} on kafka at {settings.kafka_bootstrap}:"
            f" {error}; check that the stack runs (`crm-kpi stack status`)"
        ) from error
    finally:
        await admin.close()

    if "compact" not in policy.split(","):
        raise SettingsError(
            f"topic {topic!r} (CRM_KPI_TOPIC) has cleanup.policy={policy!r}; the KPI"
            " snapshot topic must be compacted. Set it with `kafka-configs.sh"
            f" --alter --entity-type topics --entity-name {topic} --add-config"
            " cleanup.policy=compact`, or name a new topic in CRM_KPI_TOPIC"
        )
    return partitions


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    # A topic just created shows up in the metadata a moment later.
    deadline = time.monotonic() + TOPIC_METADATA_SECONDS
    while True:
        for found in await admin.describe_topics([topic]):
            if found["topic"] == topic and found["error_code"] == _NO_ERROR:
                partitions = sorted(p["partition"] for p in found["partitions"])
                if partitions:
                    return partitions
        if time.monotonic() > deadline:
            raise KafkaError(
                f"topic {topic!r} has no partitions in the metadata after"
                f" {TOPIC_METADATA_SECONDS:.0f} s"
            )
        await asyncio.sleep(0.1)


async def cleanup_policy(admin: AIOKafkaAdminClient, topic: str) -> str:
    """Return the cleanup.policy of a topic, as the broker reports it.

    A topic created a moment ago may still be unknown to the broker that
    answers; that answer is retried for `TOPIC_METADATA_SECONDS`.

    Raises:
        KafkaError: the broker reports an error for the topic.
    """
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})
    deadline = time.monotonic() + TOPIC_METADATA_SECONDS
    while True:
        responses = await admin.describe_configs([resource])
        for response in responses:
            for found in response.to_object()["resources"]:
                code = found["error_code"]
                if code == _UNKNOWN_TOPIC and time.monotonic() < deadline:
                    break
                if code != _NO_ERROR:
                    raise KafkaError(
                        f"describing topic {topic!r} failed with error code"
                        f" {code}: {found['error_message']}"
                    )
                for entry in found["config_entries"]:
                    if entry["config_names"] == "cleanup.policy":
                        return str(entry["config_value"])
                raise KafkaError(
                    f"the broker did not report cleanup.policy of topic {topic!r}"
                )
        await asyncio.sleep(0.1)
