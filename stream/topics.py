"""The Kafka topics the worker reads and writes, created before it starts."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from stream.connections import kafka_options
from stream.errors import TopicError
from stream.settings import Settings

logger = logging.getLogger(__name__)


def external_topics(settings: Settings) -> list[NewTopic]:
    """Return the topics shared with other programs, with their configuration.

    Faust creates its own internal topics (the admitted events and the
    changelogs); these are the ones producers and consumers of the product see.
    """
    replication = settings.replication_factor
    return [
        NewTopic(settings.events_topic, settings.events_partitions, replication),
        NewTopic(settings.dead_letter_topic, 1, replication),
        NewTopic(settings.late_topic, 1, replication),
        # The KPI feed keeps the latest snapshot per key forever: compaction,
        # not time-based retention (cleanup.policy, KIP-4 topic configs).
        NewTopic(
            settings.kpi_topic,
            1,
            replication,
            topic_configs={"cleanup.policy": "compact", "segment.ms": "600000"},
        ),
    ]


TOPIC_ALREADY_EXISTS = 36
"""Kafka error code of a topic created meanwhile by another client."""


async def ensure_topics(
    settings: Settings, topics: list[NewTopic] | None = None
) -> list[str]:
    """Create those of `topics` (default: the external ones) that do not exist.

    Returns the names of the topics created.

    Raises:
        TopicError: the broker cannot be reached or refuses a topic.
    """
    wanted = external_topics(settings) if topics is None else topics
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [topic for topic in wanted if topic.name not in existing]
        if not missing:
            return []

        # aiokafka reports per-topic failures as codes in the response.
        response = await admin.create_topics(missing)
        for name, code, *_ in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise TopicError(
                    f"kafka at {settings.kafka_bootstrap} refused to create topic"
                    f" {name!r} (error code {code}); create it by hand or check"
                    " the broker's log"
                )
        for topic in missing:
            logger.info(
                "topic created topic=%s partitions=%s",
                topic.name,
                topic.num_partitions,
            )
        return [topic.name for topic in missing]
    except KafkaError as error:
        raise TopicError(
            f"cannot reach kafka at {settings.kafka_bootstrap}: {error}; start the"
            " stack (`crm-kpi stack up`) or set CRM_KAFKA_BOOTSTRAP"
        ) from error
    finally:
        await admin.close()
