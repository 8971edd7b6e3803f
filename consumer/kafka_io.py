"""The consumer side's only door to Kafka: topic administration (and, in the runner, the group consumer).

kafka-python's exceptions are mapped to ours (BrokerUnavailable, ConfigError) here, so nothing else in
`consumer` imports `kafka`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import BrokerUnavailable
from schemas.limits import Limits
from schemas.settings import Settings

__all__ = ["delete_topics", "ensure_topics", "event_topic_config", "topic_config", "topic_partitions"]

log = logging.getLogger(__name__)

#: Dead letters are kept for 30 days: long enough to look at them, short enough not to grow forever.
DEAD_LETTER_RETENTION_MS = 30 * 24 * 3600 * 1000


def event_topic_config(limits: Limits) -> dict[str, str]:
    """The event topic is the source of truth: never deleted by time or size; fits the largest tensor."""
    return {
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "cleanup.policy": "delete",
        "max.message.bytes": str(limits.kafka_max_record_bytes),
    }


def dead_letter_topic_config(limits: Limits) -> dict[str, str]:
    return {
        "retention.ms": str(DEAD_LETTER_RETENTION_MS),
        "cleanup.policy": "delete",
        # a dead letter carries the original record's bytes plus headers
        "max.message.bytes": str(limits.kafka_max_record_bytes + 1024 * 1024),
    }


@contextmanager
def _admin(settings: Settings) -> Iterator[KafkaAdminClient]:
    try:
        admin = KafkaAdminClient(**settings.kafka_options(), client_id="metricfold-admin", request_timeout_ms=30000)
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka}: {exc}") from exc
    try:
        yield admin
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {settings.kafka} refused an admin request: {exc}") from exc
    finally:
        admin.close()


def ensure_topics(settings: Settings, limits: Limits | None = None) -> list[str]:
    """Create the event topic and its dead-letter topic if missing; return the names created."""
    limits = limits or Limits()
    wanted = [
        NewTopic(settings.topic, settings.partitions, settings.replication_factor, topic_configs=event_topic_config(limits)),
        NewTopic(
            settings.dead_letter_topic,
            min(settings.partitions, 3),
            settings.replication_factor,
            topic_configs=dead_letter_topic_config(limits),
        ),
    ]
    created: list[str] = []
    with _admin(settings) as admin:
        existing = set(admin.list_topics())
        for topic in wanted:
            if topic.name in existing:
                continue
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:  # another process won the race
                continue
            created.append(topic.name)
            log.info("created topic %s (%d partitions)", topic.name, topic.num_partitions)
        if created:
            admin.wait_for_topics(created, timeout_ms=30000)
    return created


def topic_config(settings: Settings, topic: str) -> dict[str, str]:
    """The topic's non-default settings, as the broker reports them."""
    with _admin(settings) as admin:
        described: dict[str, Any] = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return {key: entry["value"] for key, entry in described["topic"][topic].items()}


def topic_partitions(settings: Settings, topic: str) -> int:
    with _admin(settings) as admin:
        (description,) = admin.describe_topics([topic])
    return len(description["partitions"])


def delete_topics(settings: Settings, topics: list[str]) -> None:
    with _admin(settings) as admin:
        existing = set(admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            admin.delete_topics(doomed)
