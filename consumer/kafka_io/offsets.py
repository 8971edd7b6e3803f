"""Offsets of the event topic looked up without joining the group: where each partition starts and ends, and
where a time falls (a replay that stops at a time)."""

from __future__ import annotations

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from schemas.errors import BrokerUnavailable
from schemas.settings import Settings

__all__ = ["first_offsets", "offsets_for_time"]


def first_offsets(settings: Settings) -> dict[int, tuple[int, int]]:
    """(first available offset, end offset) of every partition of the event topic."""
    consumer = KafkaConsumer(**settings.kafka_options(), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in sorted(consumer.partitions_for_topic(settings.topic) or [])]
        starts = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
        return {tp.partition: (starts[tp], ends[tp]) for tp in partitions}
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read the offsets of {settings.topic!r}: {exc}") from exc
    finally:
        consumer.close()


def offsets_for_time(settings: Settings, timestamp_ms: int) -> dict[int, int]:
    """Per partition, the offset of the first record at or after *timestamp_ms* (the end offset if none)."""
    consumer = KafkaConsumer(**settings.kafka_options(), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in sorted(consumer.partitions_for_topic(settings.topic) or [])]
        found = consumer.offsets_for_times({tp: timestamp_ms for tp in partitions})
        ends = consumer.end_offsets(partitions)
        return {tp.partition: (found[tp].offset if found.get(tp) else ends[tp]) for tp in partitions}
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot look up offsets by time on {settings.topic!r}: {exc}") from exc
    finally:
        consumer.close()
