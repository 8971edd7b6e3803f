"""A fleet of consumers: four processes in one group share the partitions under a live stream; two of them are
killed with kill -9 mid-stream and started again. The group rebalances (the dead members' partitions wait for
their session to expire), each partition resumes from its Redis checkpoint. Zero lost, zero doubled against a
clean fold."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from chaoslib import (
    FULL,
    Stream,
    consumer_process,
    events_folded,
    finish_stream,
    record,
    verdict,
    wait_caught_up,
    wait_events,
)

from schemas.settings import Settings

from support import start_stream

pytestmark = [
    pytest.mark.integration,
    # a minute even in a short form, and the group scenarios of test_chaos_consumer.py cover its parts in make test
    pytest.mark.skipif(not FULL, reason="the fleet scenario runs in `make chaos` (METRICFOLD_CHAOS=full) only"),
]


def test_four_consumers_two_killed_9_and_started_again_mid_stream_lose_and_double_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    rounds = 3
    stream = Stream(4, 6, 8_000, 2.5)
    spool = tmp_path / "spool"
    logs = [tmp_path / f"member{i}.log" for i in range(4)]
    members = [consumer_process(settings, log) for log in logs]
    producers = start_stream(settings, stream.producers, stream.runs, stream.per_run, stream.pause_s, spool_dir=str(spool))
    for round_ in range(rounds):
        wait_events(settings, events_folded(settings), timeout=60)  # the fleet is folding
        for i in (round_ % 4, (round_ + 2) % 4):
            members[i].send_signal(signal.SIGKILL)
            members[i].wait()
        time.sleep(1.0)
        for i in (round_ % 4, (round_ + 2) % 4):
            members[i] = consumer_process(settings, logs[i])
    finish_stream(settings, producers, spool)
    assert wait_caught_up(settings, timeout=240), "".join(log.read_text()[-1500:] for log in logs)
    for member in members:
        member.send_signal(signal.SIGTERM)
    for member, log in zip(members, logs, strict=True):
        assert member.wait(timeout=60) == 0, log.read_text()[-3000:]

    result = verdict(settings, stream.events)
    record("a fleet of 4 consumers, 2 killed -9 and restarted", result, rounds=rounds)

    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == stream.events
    assert result.digest_equal
