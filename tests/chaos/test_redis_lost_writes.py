"""Redis losing acknowledged writes, made deterministic.

With AOF everysec, a Redis killed with kill -9 comes back without up to a second of writes it had acknowledged.
Whether the consumer sees a connection error depends on timing: redis-py reconnects and retries on its own, so
when Redis is back within its retry window the consumer carries on with states cached from writes Redis no
longer has. Here the loss is exact: the namespace's keys are saved (DUMP) after one batch and put back
(RESTORE) after the next, which is what Redis holds after losing that batch; then the live consumer goes on.
"""

from __future__ import annotations

import pytest
import redis
from chaoslib import record, verdict

from consumer.runner import Consumer
from consumer.store import Store
from schemas.settings import Settings

from support import produce_stream, stream_events

pytestmark = pytest.mark.integration


def snapshot(client: redis.Redis, namespace: str) -> dict[bytes, bytes]:
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    return {key: client.dump(key) for key in keys}  # type: ignore[misc]


def restore(client: redis.Redis, namespace: str, saved: dict[bytes, bytes]) -> None:
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        client.unlink(key)
    for key, value in saved.items():
        client.restore(key, 0, value)


def test_a_live_consumer_refolds_what_redis_lost_after_acknowledging_it(settings: Settings) -> None:
    consumer = Consumer(settings)
    client = redis.Redis.from_url(settings.redis, password=settings.redis_password)
    try:
        produce_stream(settings, runs=3, events_per_run=400, seed=1)
        consumer.run(until_caught_up=True)
        before_loss = snapshot(client, settings.namespace)
        produce_stream(settings, runs=3, events_per_run=400, seed=2)
        consumer.run(until_caught_up=True)  # folded and acknowledged by Redis ...
        restore(client, settings.namespace, before_loss)  # ... and lost by it
        produce_stream(settings, runs=3, events_per_run=400, seed=3)
        consumer.run(until_caught_up=True)
        produce_stream(settings, runs=3, events_per_run=400, seed=1)  # the first trainer's runs go on, too
        consumer.run(until_caught_up=True)
    finally:
        consumer.close()
        client.close()

    expected = 4 * stream_events(3, 400)
    result = verdict(settings, expected)
    record("Redis loses a batch it acknowledged (DUMP/RESTORE), consumer live", result)

    with Store(settings) as store:
        assert store.stats()["events"] == result.events
    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == expected
    assert result.digest_equal
