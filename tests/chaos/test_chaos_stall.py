"""The stall watchdog: the broker stops answering (SIGSTOP, for longer than the group's 20 s session timeout)
in the middle of a live stream, then goes on (SIGCONT). The consumer fetches nothing and its end-offsets request
gets no answer: the watchdog gives up the Kafka client, the consumer makes a new one once the broker answers
and resumes from the Redis checkpoints. The trainers spool what they could not send meanwhile (synced at the
end). Zero lost, zero doubled against a clean fold."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from chaoslib import (
    FULL,
    ChaosStack,
    Stream,
    consumer_process,
    finish_stream,
    record,
    verdict,
    wait_caught_up,
    wait_events,
)

from schemas.settings import Settings

from support import start_stream

pytestmark = pytest.mark.integration


def test_a_broker_that_stops_answering_makes_the_consumer_start_over_with_a_new_client_and_lose_nothing(
    settings: Settings, chaos_stack: ChaosStack, tmp_path: Path
) -> None:
    stall_limit_s, stopped_s = (10.0, 45.0) if FULL else (3.0, 24.0)
    stream = Stream(4, 5, 8_000, 2.0) if FULL else Stream(3, 4, 3_000, 1.5)
    spool, log = tmp_path / "spool", tmp_path / "consumer.log"
    consumer = consumer_process(settings, log, "--stall-timeout", str(stall_limit_s))
    producers = start_stream(settings, stream.producers, stream.runs, stream.per_run, stream.pause_s, spool_dir=str(spool))
    wait_events(settings, 0, timeout=60)  # folding
    broker = chaos_stack.kafka_pid()
    os.kill(broker, signal.SIGSTOP)
    try:
        time.sleep(stopped_s)
    finally:
        os.kill(broker, signal.SIGCONT)
    synced = finish_stream(settings, producers, spool)
    assert wait_caught_up(settings), log.read_text()[-3000:]
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(timeout=60) == 0, log.read_text()[-3000:]

    result = verdict(settings, stream.events)
    text = log.read_text()
    record("broker stopped (SIGSTOP) mid-stream: the stall watchdog", result, stopped_s=stopped_s,
           stall_limit_s=stall_limit_s, spooled_events_synced=synced, rebuilds=text.count("with a new Kafka client"))

    assert "starting over with a new Kafka client" in text, text[-3000:]
    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == stream.events
    assert result.digest_equal
