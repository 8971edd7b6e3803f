"""Helpers for tests that read what reached the real broker (import: `from support import read_records`)."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from schemas.settings import Settings

__all__ = ["consume_all", "produce_stream", "read_full_records", "read_records", "stream_events"]


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


def produce_stream(settings: Settings, runs: int, events_per_run: int, seed: int, pause_s: float = 0.0) -> None:
    """A trainer process: `runs` runs, each with defines, logs, an override and a finish; optional pacing."""
    import random

    import producer as mf

    rng = random.Random(seed)
    opened = [
        mf.init(entity="chaos", project=f"p{seed % 3}", run_id=f"s{seed}r{i}", settings=settings) for i in range(runs)
    ]
    for run in opened:
        run.define_metric("loss", summary="min,max,mean")
        run.define_metric("acc*", summary="best", objective="maximize")
    chunk = 500
    for start in range(0, events_per_run, chunk):
        for run in opened:
            for step in range(start, min(start + chunk, events_per_run)):
                value = rng.random()
                run.log({"loss": value, "acc": 1 - value, "grad": {"norm": rng.gauss(0, 1)}, "epoch": step // 100})
            if start == 0:
                run.summary["note"] = f"override {run.id}"
        if pause_s:
            time.sleep(pause_s)
    for run in opened:
        run.finish()


def stream_events(runs: int, events_per_run: int) -> int:
    """How many events produce_stream sends: per run, started + 2 defines + logs + 1 override + finished."""
    return runs * (events_per_run + 5)


def consume_all(settings: Settings) -> Any:
    from consumer.runner import Consumer

    consumer = Consumer(settings)
    try:
        return consumer.run(until_caught_up=True)
    finally:
        consumer.close()
