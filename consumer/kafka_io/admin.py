"""Topic administration: creating the event topic and its dead-letter topic with settings that follow the
cluster, reading their settings, deleting topics (tests, benchmarks)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.errors import BrokerUnavailable, ConfigError
from schemas.limits import Limits
from schemas.settings import Settings

__all__ = [
    "DEAD_LETTER_RETENTION_MS",
    "TopicLayout",
    "dead_letter_topic_config",
    "delete_topics",
    "ensure_topics",
    "event_topic_config",
    "replication_plan",
    "topic_config",
    "topic_layout",
]

log = logging.getLogger("consumer.kafka_io")  # the package's lines keep the name they have always had


class _MaskSaslPassword(logging.Filter):
    """kafka-python's admin client logs its whole configuration at DEBUG, the SASL password with it: masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping) and record.args.get("sasl_plain_password"):
            record.args = {**record.args, "sasl_plain_password": "***"}
        return True


logging.getLogger("kafka.admin.client").addFilter(_MaskSaslPassword())

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


def replication_plan(brokers: int, wanted: int | None = None) -> tuple[int, dict[str, str]]:
    """The replication factor of a new topic on a cluster of *brokers* brokers, and the topic settings that go
    with it. *wanted* (METRICFOLD_REPLICATION_FACTOR) wins; by default min(3, brokers). With 3 replicas or more a
    write needs 2 of them in sync (acks=all), so one broker can be lost without losing an acknowledged record or
    refusing writes; below that, 1. An out-of-sync replica never becomes leader (no unclean election)."""
    if wanted is not None and wanted > brokers:
        raise ConfigError(
            f"replication factor {wanted} (METRICFOLD_REPLICATION_FACTOR) needs {wanted} Kafka brokers, but the cluster "
            f"has {brokers}: set it to {brokers} or less, or unset it to follow the cluster"
        )
    factor = wanted if wanted is not None else max(1, min(3, brokers))
    return factor, {
        "min.insync.replicas": "2" if factor >= 3 else "1",
        "unclean.leader.election.enable": "false",
    }


@contextmanager
def _admin(settings: Settings) -> Iterator[KafkaAdminClient]:
    try:
        admin = KafkaAdminClient(**settings.kafka_options(), client_id="metricfold-admin", request_timeout_ms=30000)
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_display}: {exc}") from exc
    try:
        yield admin
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {settings.kafka_display} refused an admin request: {exc}") from exc
    finally:
        admin.close()


def ensure_topics(settings: Settings, limits: Limits | None = None) -> list[str]:
    """Create the event topic and its dead-letter topic if missing; return the names created. Their replication
    follows the cluster (replication_plan) unless settings.replication_factor says otherwise."""
    limits = limits or Limits.from_env()
    created: list[str] = []
    with _admin(settings) as admin:
        existing = set(admin.list_topics())
        if {settings.topic, settings.dead_letter_topic} <= existing:
            return created
        factor, replication = replication_plan(len(admin.describe_cluster()["brokers"]), settings.replication_factor)
        wanted = [
            NewTopic(settings.topic, settings.partitions, factor, topic_configs={**event_topic_config(limits), **replication}),
            NewTopic(
                settings.dead_letter_topic,
                min(settings.partitions, 3),
                factor,
                topic_configs={**dead_letter_topic_config(limits), **replication},
            ),
        ]
        for topic in wanted:
            if topic.name in existing:
                continue
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:  # another process won the race
                continue
            created.append(topic.name)
            log.info("created topic %s (%d partitions, replication factor %d)", topic.name, topic.num_partitions, factor)
        if created:
            admin.wait_for_topics(created, timeout_ms=30000)
    return created


def topic_config(settings: Settings, topic: str) -> dict[str, str]:
    """The topic's non-default settings, as the broker reports them."""
    with _admin(settings) as admin:
        described: dict[str, Any] = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return {key: entry["value"] for key, entry in described["topic"][topic].items()}


class TopicLayout(NamedTuple):
    """Where a topic lives, as the brokers report it (what a benchmark prints next to its figures)."""

    brokers: int  #: brokers in the cluster, fenced ones left out
    partitions: int
    replication_factor: int  #: the fewest replicas any of its partitions has
    min_insync_replicas: int


def topic_layout(settings: Settings, topic: str) -> TopicLayout:
    with _admin(settings) as admin:
        brokers = [b for b in admin.describe_cluster()["brokers"] if not b.get("is_fenced")]
        (description,) = admin.describe_topics([topic])
    partitions = description["partitions"]
    return TopicLayout(
        brokers=len(brokers),
        partitions=len(partitions),
        replication_factor=min((len(p["replica_nodes"]) for p in partitions), default=0),
        min_insync_replicas=int(topic_config(settings, topic)["min.insync.replicas"]),
    )


def delete_topics(settings: Settings, topics: list[str]) -> None:
    with _admin(settings) as admin:
        existing = set(admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            admin.delete_topics(doomed)
