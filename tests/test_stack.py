"""The stack is real: records go through the Kafka broker, topics have the settings we asked for, Redis persists."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kafka import KafkaProducer

from consumer.kafka_io import event_topic_config, topic_config, topic_layout
from schemas.limits import Limits
from schemas.settings import Settings

from support import read_full_records

pytestmark = pytest.mark.integration


def test_record_produced_with_kafka_python_is_consumed_back_from_the_broker(settings: Settings) -> None:
    payload = uuid.uuid4().bytes
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    producer.send(settings.topic, key=b"team/vision/run1", value=payload).get(timeout=30)
    producer.close()

    (record,) = read_full_records(settings, 1)

    assert (record.key, record.value) == (b"team/vision/run1", payload)


def test_event_topic_has_the_settings_the_project_asked_for(settings: Settings) -> None:
    reported = topic_config(settings, settings.topic)

    for key, value in event_topic_config(Limits()).items():
        assert reported[key] == value, key
    assert reported["retention.ms"] == "-1"
    assert int(reported["max.message.bytes"]) >= Limits().max_tensor_bytes
    assert topic_layout(settings, settings.topic).partitions == settings.partitions


def test_dead_letter_topic_exists_with_bounded_retention(settings: Settings) -> None:
    reported = topic_config(settings, settings.dead_letter_topic)

    assert int(reported["retention.ms"]) > 0
    assert int(reported["max.message.bytes"]) > Limits().kafka_max_record_bytes


def test_redis_answers_and_keeps_data_across_a_server_restart(stack: Any, settings: Settings) -> None:
    key = f"{settings.namespace}:persist-probe"
    value = uuid.uuid4().hex
    with stack.redis() as client:
        assert client.ping()
        client.set(key, value)

    stack.control("restart-redis")  # SIGTERM: Redis flushes the AOF before it exits

    with stack.redis() as client:
        assert client.get(key) == value.encode()
