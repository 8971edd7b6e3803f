"""Service faults under a live stream: the Kafka broker restarted (cleanly and with kill -9), Redis killed with
kill -9 (AOF everysec: it loses up to a second of acknowledged writes) and restarted, and the trainers' broker
gone for a while (they spool, `sync` publishes later). Each ends with the Redis state compared against a clean
fold of the same topic: zero lost, zero doubled, equal digests."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from chaoslib import (
    FULL,
    ChaosStack,
    Stream,
    consumer_process,
    events_folded,
    finish_stream,
    record,
    verdict,
    wait_caught_up,
    wait_events,
)

from producer.spool import sync
from schemas.settings import Settings

from support import start_stream, wait_all

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("how", ["clean", "kill-9"])
def test_kafka_broker_restarts_mid_stream_lose_and_double_nothing(
    settings: Settings, chaos_stack: ChaosStack, tmp_path: Path, how: str
) -> None:
    restarts = 3 if FULL else 1
    stream = Stream(4, 5, 8_000, 2.0) if FULL else Stream(3, 4, 3_000, 1.5)
    spool, log = tmp_path / "spool", tmp_path / "consumer.log"
    consumer = consumer_process(settings, log)
    producers = start_stream(settings, stream.producers, stream.runs, stream.per_run, stream.pause_s, spool_dir=str(spool))
    for _ in range(restarts):
        wait_events(settings, events_folded(settings), timeout=60)  # folding
        if how == "clean":
            chaos_stack.control("restart-kafka")
        else:
            chaos_stack.control("kill-kafka")
            chaos_stack.control("start-kafka")
    synced = finish_stream(settings, producers, spool)  # with what the trainers spooled while the broker was away
    assert wait_caught_up(settings), log.read_text()[-3000:]
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(timeout=60) == 0, log.read_text()[-3000:]

    result = verdict(settings, stream.events)
    record(f"Kafka broker restart ({how})", result, restarts=restarts, spooled_events_synced=synced)

    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == stream.events
    assert result.digest_equal


def test_redis_kill_9_mid_stream_is_refolded_from_the_redis_checkpoint_and_loses_and_doubles_nothing(
    settings: Settings, chaos_stack: ChaosStack, tmp_path: Path
) -> None:
    kills = 6 if FULL else 2
    stream = Stream(4, 5, 8_000, 2.0) if FULL else Stream(3, 4, 3_000, 1.5)
    log, spool = tmp_path / "consumer.log", tmp_path / "spool"
    rng = random.Random(6379)
    consumer = consumer_process(settings, log)
    producers = start_stream(settings, stream.producers, stream.runs, stream.per_run, stream.pause_s, spool_dir=str(spool))
    for _ in range(kills):
        wait_events(settings, events_folded(settings), timeout=60)  # folding
        time.sleep(rng.uniform(0.0, 1.0))
        chaos_stack.control("kill-redis")  # AOF everysec: up to ~1 s of acknowledged writes are gone
        time.sleep(rng.uniform(0.0, 1.5))
        chaos_stack.control("start-redis")
    finish_stream(settings, producers, spool)
    assert wait_caught_up(settings), log.read_text()[-3000:]
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(timeout=60) == 0, log.read_text()[-3000:]

    result = verdict(settings, stream.events)
    record("Redis kill -9 (AOF everysec) and restart", result, kills=kills)

    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == stream.events
    assert result.digest_equal


def test_trainers_keep_logging_while_their_broker_is_away_and_sync_delivers_everything_once(
    settings: Settings, chaos_stack: ChaosStack, tmp_path: Path
) -> None:
    outage_s = 30.0 if FULL else 6.0
    stream = Stream(2, 4, 6_000, 2.0) if FULL else Stream(2, 3, 3_000, 1.0)
    spool, log = tmp_path / "spool", tmp_path / "consumer.log"
    consumer = consumer_process(settings, log)
    early = start_stream(settings, stream.producers, stream.runs, stream.per_run, stream.pause_s, spool_dir=str(spool))
    wait_events(settings, 0, timeout=60)
    chaos_stack.control("kill-kafka")
    # trainers that start while the broker is away log into their spool from the first event
    late = start_stream(settings, stream.producers, stream.runs, stream.per_run, stream.pause_s / 4,
                        first_seed=stream.producers, spool_dir=str(spool))
    time.sleep(outage_s)
    chaos_stack.control("start-kafka")
    wait_all(early + late)
    synced = sync(spool, settings)
    again = sync(spool, settings)  # safe to repeat: nothing is sent twice
    assert wait_caught_up(settings), log.read_text()[-3000:]
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(timeout=60) == 0, log.read_text()[-3000:]

    expected = 2 * stream.events
    result = verdict(settings, expected)
    record(f"producers' broker away for {outage_s:.0f} s (spool, then sync)", result, spooled_events_synced=synced.events)

    assert synced.events > 0 and again.records == 0
    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == expected
    assert result.digest_equal
