"""Helpers for tests that read what reached the real broker (import: `from support import read_records`)."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from schemas.settings import Settings

__all__ = ["read_full_records", "read_records"]


def read_records(settings: Settings, count: int, timeout: float = 30.0, topic: str | None = None) -> list[tuple[bytes, bytes]]:
    """Read (key, value) of the first *count* records of the topic (all partitions, from the beginning)."""
    records = read_full_records(settings, count, timeout, topic)
    return [(r.key, r.value) for r in records]


def read_full_records(settings: Settings, count: int, timeout: float = 30.0, topic: str | None = None) -> list:  # type: ignore[type-arg]
    """Like read_records, but the kafka-python ConsumerRecord objects (headers, partition, offset)."""
    name = topic or settings.topic
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka, enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000
    )
    try:
        partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
