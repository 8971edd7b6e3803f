"""Redis losing acknowledged writes, made deterministic.

With AOF everysec, a Redis killed with kill -9 comes back without up to a second of writes it had acknowledged.
Whether the consumer sees a connection error depends on timing: redis-py reconnects and retries on its own, so
when Redis is back within its retry window the consumer carries on with states cached from writes Redis no
longer has. Here the loss is exact: the namespace's keys are saved (DUMP) after one batch and put back
(RESTORE) after the next, which is what Redis holds after losing that batch; then the live consumer goes on.

The second scenario is a failover on real servers: a primary with a replica, the replica promoted while the
primary goes on acknowledging the consumer's writes, the primary killed -9, and its address served from then on by
the promoted replica's data (what a client with a fixed address sees behind a failover of Sentinel and a
virtual IP), under the same live consumer.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from chaoslib import record, verdict

from consumer.runner import Consumer
from consumer.store import Store
from schemas.settings import Settings

from support import port_free, produce_stream, stream_events

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

    assert_four_rounds_folded_once(settings, "Redis loses a batch it acknowledged (DUMP/RESTORE), consumer live")


def assert_four_rounds_folded_once(settings: Settings, scenario: str) -> None:
    """Four rounds of 3 runs x 400 events are in Redis exactly once, as a clean fold of the topic has them."""
    expected = 4 * stream_events(3, 400)
    result = verdict(settings, expected)
    record(scenario, result)
    with Store(settings) as store:
        assert store.stats()["events"] == result.events
    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == expected
    assert result.digest_equal


def _redis_server(port: int, directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                               "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0", *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                client.ping()
            return server
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"redis-server on port {port} did not start") from None
            time.sleep(0.05)


@pytest.fixture
def two_ports() -> Iterator[tuple[int, int]]:
    free = [p for p in range(16571, 16599) if port_free(p)]
    if len(free) < 2:
        pytest.fail("no two free loopback ports in 16571-16598")
    yield free[0], free[1]


def test_a_promoted_replica_missing_acknowledged_writes_is_refolded_by_the_live_consumer(
        settings: Settings, tmp_path: Path, two_ports: tuple[int, int]) -> None:
    port, replica_port = two_ports
    primary = _redis_server(port, tmp_path / "primary")
    replica = _redis_server(replica_port, tmp_path / "replica", "--replicaof", "127.0.0.1", str(port))
    servers = [primary, replica]
    # the consumer's Redis is the primary's address, whoever serves it (a fresh server: no ACL users)
    on_primary = dataclasses.replace(settings, redis=f"redis://127.0.0.1:{port}/0", redis_username=None,
                                     redis_password=None)
    consumer = Consumer(on_primary)
    try:
        produce_stream(settings, runs=3, events_per_run=400, seed=1)
        consumer.run(until_caught_up=True)
        with redis.Redis(port=port) as client:
            assert client.execute_command("WAIT", 1, 10_000) == 1  # the replica has all of it
        with redis.Redis(port=replica_port) as client:
            client.execute_command("REPLICAOF", "NO", "ONE")  # promoted: it gets nothing more from the primary
        produce_stream(settings, runs=3, events_per_run=400, seed=2)
        consumer.run(until_caught_up=True)  # folded and acknowledged by the old primary only
        with redis.Redis(port=port) as old, redis.Redis(port=replica_port) as new:
            assert old.info("replication")["connected_slaves"] == 0
            namespace_keys = len(list(old.scan_iter(match=f"{settings.namespace}:*")))
            assert namespace_keys > 0 and old.get(f"{settings.namespace}:active") == new.get(f"{settings.namespace}:active")
            new.save()
        primary.kill()  # kill -9: the failover
        primary.wait()
        # the address now serves the promoted replica's data (it lacks the second batch)
        (tmp_path / "failover").mkdir()
        shutil.copy(tmp_path / "replica" / "dump.rdb", tmp_path / "failover" / "dump.rdb")
        servers.append(_redis_server(port, tmp_path / "failover"))
        produce_stream(settings, runs=3, events_per_run=400, seed=3)
        consumer.run(until_caught_up=True)
        produce_stream(settings, runs=3, events_per_run=400, seed=1)  # the first trainer's runs go on, too
        consumer.run(until_caught_up=True)
        assert_four_rounds_folded_once(on_primary, "a promoted replica lacks a batch the old primary acknowledged, "
                                                   "consumer live")
    finally:
        consumer.close()
        for server in servers:
            server.kill()
            server.wait()
