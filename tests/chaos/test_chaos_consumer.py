"""Consumer faults under a live stream from several trainer processes: kill -9 at random points, scaling the
group 1 -> 3 -> 1, and Kafka offset commits that fail. Each ends with the Redis state compared against a
clean fold of the same topic: zero lost, zero doubled, equal digests."""

from __future__ import annotations

import json
import multiprocessing
import random
import re
import signal
import time
from pathlib import Path

import pytest
from chaoslib import (
    FULL,
    Stream,
    committed_offsets,
    consume_from_committed_offsets,
    consume_with_failing_commits,
    consumer_process,
    events_folded,
    finish_stream,
    record,
    verdict,
    wait_caught_up,
    wait_events,
)

from consumer.store import Store
from schemas.settings import Settings

from support import start_stream

pytestmark = pytest.mark.integration


def _batches(report: Path) -> int:
    """Batches the failing-commit consumer has folded (it rewrites its report after each)."""
    try:
        return int(json.loads(report.read_text())["batches"])
    except (OSError, ValueError, KeyError):
        return 0


def _stream_running(procs: list[multiprocessing.process.BaseProcess]) -> bool:
    return any(p.is_alive() for p in procs)


def test_kill_9_at_random_points_many_times_in_one_stream_loses_and_doubles_nothing(settings: Settings, tmp_path: Path) -> None:
    kills_wanted = 20 if FULL else 6
    stream = Stream(4, 5, 14_000, 3.0) if FULL else Stream(3, 4, 6_000, 2.0)  # long enough for every kill
    log, spool = tmp_path / "consumer.log", tmp_path / "spool"
    rng = random.Random(20261129)
    producers = start_stream(settings, stream.producers, stream.runs, stream.per_run, stream.pause_s, spool_dir=str(spool))
    kills = mid_fold = 0
    while kills < kills_wanted:
        # Each incarnation joins as a fresh group, so it gets its partitions at once instead of waiting ~20 s for
        # the killed member's session to expire; where it resumes comes from the Redis checkpoint either way.
        before = events_folded(settings)
        consumer = consumer_process(settings, log, "--group", f"{settings.namespace}-life{kills}")
        if wait_events(settings, before, timeout=30 if _stream_running(producers) else 5) > before:
            mid_fold += 1  # it is folding: kill it a random moment later
        time.sleep(rng.uniform(0.0, 0.8))
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
        kills += 1
    finish_stream(settings, producers, spool)
    final = consumer_process(settings, log, "--until-caught-up")
    assert final.wait(timeout=300) == 0, log.read_text()[-3000:]

    result = verdict(settings, stream.events)
    record("kill -9 of the consumer at random points", result, kills=kills, kills_while_folding=mid_fold)

    # some kills must land while it folds (on a loaded machine a slow start can let the stream finish first)
    assert kills == kills_wanted and mid_fold >= 2
    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == stream.events
    assert result.stats == result.clean_stats
    assert result.digest_equal


def test_scaling_the_group_from_one_to_three_and_back_to_one_mid_stream_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    stream = Stream(4, 5, 8_000, 2.5) if FULL else Stream(3, 4, 4_000, 2.0)
    logs, spool = [tmp_path / f"member{i}.log" for i in range(3)], tmp_path / "spool"
    first = consumer_process(settings, logs[0])
    producers = start_stream(settings, stream.producers, stream.runs, stream.per_run, stream.pause_s, spool_dir=str(spool))
    wait_events(settings, 0, timeout=60)

    extra = [consumer_process(settings, log) for log in logs[1:]]  # 1 -> 3
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not all(re.search(r"assigned partitions \[\d", log.read_text()) for log in logs[1:]):
        time.sleep(0.3)
    wait_events(settings, events_folded(settings), timeout=30)  # the three fold together for a while
    time.sleep(2.0 if FULL else 1.0)
    for proc, log in zip(extra, logs[1:], strict=True):  # 3 -> 1: they leave the group cleanly
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finish_stream(settings, producers, spool)
    assert wait_caught_up(settings), "the remaining member did not catch up"
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0, logs[0].read_text()[-3000:]

    result = verdict(settings, stream.events)
    shared = [bool(re.search(r"assigned partitions \[\d", log.read_text())) for log in logs]
    record("scale the consumer group 1 -> 3 -> 1", result, members_with_partitions=sum(shared))

    assert shared == [True, True, True], "every member held partitions at some point"
    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == stream.events
    assert result.digest_equal


def test_failed_offset_commits_then_kill_9_and_a_restart_from_the_stale_commits_never_double_apply(
    settings: Settings, tmp_path: Path
) -> None:
    stream = Stream(4, 5, 8_000, 2.0) if FULL else Stream(3, 4, 4_000, 1.5)
    group = f"{settings.namespace}-failing-commits"
    failing_report, restarted_report, spool = tmp_path / "failing.json", tmp_path / "restarted.json", tmp_path / "spool"
    context = multiprocessing.get_context("spawn")
    failing = context.Process(target=consume_with_failing_commits, args=(settings, group, 5, str(failing_report)))
    failing.start()
    producers = start_stream(settings, stream.producers, stream.runs, stream.per_run, stream.pause_s, spool_dir=str(spool))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and failing.is_alive() and _batches(failing_report) < 12:
        time.sleep(0.2)
    failing.kill()  # kill -9, with the group's committed offsets far behind what Redis holds
    failing.join()
    stale = committed_offsets(settings, group)
    with Store(settings) as store:
        checkpoints = store.checkpoints(settings.topic)
    behind = sum(checkpoints.values()) - sum(stale.get(p, 0) for p in checkpoints)
    restarted = context.Process(target=consume_from_committed_offsets, args=(settings, group, str(restarted_report)))
    restarted.start()
    finish_stream(settings, producers, spool)
    restarted.join(timeout=300)
    assert restarted.exitcode == 0
    final = consumer_process(settings, tmp_path / "final.log", "--until-caught-up")  # the tail after it went idle
    assert final.wait(timeout=300) == 0

    result = verdict(settings, stream.events)
    again = json.loads(restarted_report.read_text())
    record("failed Kafka offset commits, kill -9, restart from the stale commits", result,
           failing_batches=_batches(failing_report), records_behind_redis=behind)

    assert _batches(failing_report) >= 12  # it folded batches whose commits failed
    assert behind > 0  # the restart began behind the Redis checkpoints: it re-read records already applied
    assert again["records"] >= behind
    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == stream.events
    assert result.digest_equal
