"""The Kafka topics the worker reads and writes, created before it starts."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

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


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the external topics that do not exist yet; return their names."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in external_topics(settings) if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                # Another worker created them between the listing and now.
                logger.debug("topics already created by another worker")
        for topic in missing:
            logger.info(
                "topic created topic=%s partitions=%s",
                topic.name,
                topic.num_partitions,
            )
        return [topic.name for topic in missing]
    finally:
        await admin.close()
