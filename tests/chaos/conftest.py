"""The chaos scenarios run on a private stack of their own, never on the shared one (19092 / 16379).

`deploy/local/stack.sh up` with METRICFOLD_STACK_DIR=<repo>/.stack/chaos and other ports starts a second
Kafka and Redis for this session only; the scenarios kill and restart them (`kill-kafka`, `kill-redis`, ...),
and the session stops them at the end (`down`). Each test still gets its own topic and namespace.

The exception: test_chaos_cluster.py faults the session's 3-node Kafka (the `cluster` fixture of tests/conftest.py,
a stack.sh directory and ports of its own) and folds into the shared Redis, which it never faults, under a fresh
namespace (`cluster_settings`).

METRICFOLD_CHAOS=full (`make chaos`) runs every scenario at full size; otherwise the short versions run
(`make test`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
import redis
from chaoslib import ChaosStack, reap

from consumer.kafka_io import delete_topics, ensure_topics
from schemas.settings import Settings


@pytest.fixture(scope="session")
def chaos_stack() -> Iterator[ChaosStack]:
    stack = ChaosStack.up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """A scenario that fails half-way leaves no consumer or trainer process running."""
    yield
    reap()


@pytest.fixture
def settings(chaos_stack: ChaosStack) -> Iterator[Settings]:
    """A fresh event topic (4 partitions) and Redis namespace on the private stack; services up again afterwards."""
    tag = uuid.uuid4().hex[:12]
    made = Settings(kafka=chaos_stack.kafka, redis=chaos_stack.redis_url, topic=f"chaos-{tag}", namespace=f"c{tag}", partitions=4,
                    redis_password=chaos_stack.redis_password)
    ensure_topics(made)
    yield made
    chaos_stack.ensure_running()  # a failed scenario may have left a service down
    with contextlib.suppress(Exception):
        delete_topics(made, [made.topic, made.dead_letter_topic])
    with contextlib.suppress(redis.RedisError), \
            redis.Redis.from_url(chaos_stack.redis_url, password=made.redis_password) as client:
        keys = list(client.scan_iter(match=f"{made.namespace}*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
