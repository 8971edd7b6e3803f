"""The stall watchdog of the Kafka adapter, on the real broker: a client that stops fetching while records
wait is given up (ConsumerStalled); one with nothing to read is left alone however long it idles. The broker
that stops answering is the chaos scenario tests/chaos/test_chaos_stall.py."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer

import consumer.kafka_io.stall_watchdog as stall_watchdog
from consumer.kafka_io import ConsumerStalled, GroupConsumer
from schemas.settings import Settings

pytestmark = pytest.mark.integration


def _reader(settings: Settings) -> GroupConsumer:
    return GroupConsumer(settings, on_assigned=lambda partitions: {}, on_revoked=lambda partitions: None, group=False,
                         stall_limit_s=0.5)


def _poll_for(reader: GroupConsumer, seconds: float) -> int:
    records, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        records += len(reader.poll(timeout_ms=100))
    return records


def test_a_client_that_stops_fetching_while_records_wait_is_given_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stall_watchdog, "STALL_CHECK_EVERY_S", 0.5)
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    for i in range(20):
        producer.send(settings.topic, key=b"team/vision/r1", value=f"record {i}".encode())
    producer.flush()
    producer.close()
    reader = _reader(settings)
    try:
        reader._consumer.pause(*reader._consumer.assignment())  # the client stops asking: nothing is fetched
        with pytest.raises(ConsumerStalled, match="20 records have waited"):
            _poll_for(reader, 10.0)
    finally:
        reader.close()


def test_an_idle_client_with_nothing_to_read_is_left_alone(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stall_watchdog, "STALL_CHECK_EVERY_S", 0.5)
    reader = _reader(settings)
    try:
        assert _poll_for(reader, 3.0) == 0  # no ConsumerStalled: polls return nothing because nothing is there
    finally:
        reader.close()
