"""`metricfold demo`: an honest round trip through the real broker and server.

Until the SDK and the consumer exist, the demo produces a few records to the event topic, consumes them
back from the broker, writes what it read to Redis and reads it back, printing each step.
"""

from __future__ import annotations

import time
import uuid

from schemas.settings import Settings

__all__ = ["run_demo"]


def run_demo(settings: Settings) -> int:
    import redis
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from consumer.kafka_io import ensure_topics

    ensure_topics(settings)
    print(f"Kafka {settings.kafka}, topic {settings.topic}; Redis {settings.redis}, namespace {settings.namespace}")
    marker = uuid.uuid4().hex[:8]
    producer = KafkaProducer(bootstrap_servers=settings.kafka.split(","), acks="all")
    sent = []
    for i in range(3):
        value = f"demo {marker} record {i}".encode()
        meta = producer.send(settings.topic, key=f"demo/roundtrip/{marker}".encode(), value=value).get(timeout=30)
        sent.append((meta.partition, meta.offset, value))
        print(f"  produced  partition {meta.partition} offset {meta.offset}: {value.decode()}")
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.split(","), enable_auto_commit=False, group_id=None)
    partition = TopicPartition(settings.topic, sent[0][0])
    consumer.assign([partition])
    consumer.seek(partition, sent[0][1])
    received: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(received) < len(sent) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            received.extend(r.value for r in batch)
    consumer.close()
    for value in received:
        print(f"  consumed  {value.decode()}")

    key = f"{settings.namespace}:demo:{marker}"
    with redis.Redis.from_url(settings.redis) as client:
        client.rpush(key, *received)
        back = client.lrange(key, 0, -1)
        client.delete(key)
    print(f"  Redis     wrote {len(received)} values to {key}, read back {len(back)}")
    ok = back == [v for _, _, v in sent]
    print("round trip OK" if ok else "round trip FAILED")
    return 0 if ok else 1
