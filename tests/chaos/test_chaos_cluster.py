"""Broker failures on a 3-node Kafka (the session's `cluster`, tests/cluster.py) under a live stream: trainer processes
log through the real SDK (acks=all, idempotent) to a topic with 3 replicas and min.insync.replicas=2, one
`metricfold consume` folds it into the shared Redis (never faulted here). The faults: kill -9 of the broker that leads
most of the topic's partitions, a rolling restart of all three nodes, kill -9 of the controller quorum's leader, and
(full form only) the fleet scenario of test_chaos_fleet.py on the cluster.

Each ends with the Redis state compared against a clean fold of the same topic (zero lost, zero doubled, equal
digests, the exact event count), and two promises to the trainers: no run fell back to its spool (nothing needs
`metricfold sync` afterwards: a failover of one node is not an outage), and no `log()` call blocked longer than
LOG_BLOCK_BOUND_S (README, "Guarantees")."""

from __future__ import annotations

import dataclasses
import multiprocessing
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from chaoslib import (
    FULL,
    Stream,
    Verdict,
    consumer_process,
    events_folded,
    record,
    verdict,
    wait_caught_up,
    wait_events,
)
from cluster import NODES, Cluster

from schemas.settings import Settings

from support import longest_log_call, start_stream, wait_all

pytestmark = pytest.mark.integration

#: the longest a trainer's log() call may take while one node of the cluster fails over (measured: README)
LOG_BLOCK_BOUND_S = 1.0


@dataclasses.dataclass
class Live:
    """What a scenario's faults act on: the stream's settings, its consumer processes (a fault may replace one in
    the list) and trainer processes."""

    settings: Settings
    consumers: list[subprocess.Popen[bytes]]
    producers: list[multiprocessing.process.BaseProcess]

    def folding(self) -> None:
        """Wait until Redis counts more events than now (the consumers fold), unless the stream has ended."""
        if any(p.is_alive() for p in self.producers):
            wait_events(self.settings, events_folded(self.settings), timeout=60)


def _stream_through(settings: Settings, tmp_path: Path, stream: Stream, faults: Callable[[Live], dict[str, object]],
                    members: int = 1) -> tuple[Verdict, dict[str, object], list[str]]:
    """Run *stream* into *members* `metricfold consume` processes (logging to tmp_path/consumer<i>.log), call *faults*
    once they fold, let the stream end and the consumers catch up; return the verdict, the details to record (what
    *faults* returned, and timings) and the names of the spool files the trainers wrote (none expected)."""
    spool, times = tmp_path / "spool", tmp_path / "log-times"
    times.mkdir()
    logs = [tmp_path / f"consumer{i}.log" for i in range(members)]
    live = Live(settings, [consumer_process(settings, log) for log in logs], [])
    live.producers = start_stream(settings, stream.producers, stream.runs, stream.per_run, stream.pause_s,
                                  spool_dir=str(spool), log_times_dir=str(times))
    assert wait_events(settings, 0, timeout=60) > 0, "".join(log.read_text()[-1500:] for log in logs)
    began = time.monotonic()
    details = faults(live)
    details["faults_s"] = round(time.monotonic() - began, 1)
    details["stream_outlasted_faults"] = any(p.is_alive() for p in live.producers)
    wait_all(live.producers)
    ended = time.monotonic()
    assert wait_caught_up(settings), "".join(log.read_text()[-1500:] for log in logs)
    details["caught_up_s"] = round(time.monotonic() - ended, 1)  # after the last trainer finished
    for proc in live.consumers:
        proc.send_signal(signal.SIGTERM)
    for proc, log in zip(live.consumers, logs, strict=True):
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    details["longest_log_call_s"] = round(longest_log_call(times, stream.producers), 4)
    spooled = sorted(str(p.relative_to(spool)) for p in spool.rglob("*") if p.is_file()) if spool.exists() else []
    return verdict(settings, stream.events), details, spooled


def _check(result: Verdict, details: dict[str, object], spooled: list[str], stream: Stream) -> None:
    assert (result.lost, result.doubled) == (0, 0)
    assert result.events == stream.events
    assert result.digest_equal
    assert spooled == [], "trainers fell back to their spool (their runs would need `metricfold sync`)"
    longest = details["longest_log_call_s"]
    assert isinstance(longest, float) and longest <= LOG_BLOCK_BOUND_S, f"a log() call blocked {longest} s"


def _kill_and_restart(cluster: Cluster, node: int, topic: str) -> dict[str, float]:
    """kill -9 *node*, wait until the rest lead every partition of *topic* (the controller fenced it), start it again
    and wait until every partition of every topic has its full ISR; the seconds each step took."""
    began = time.monotonic()
    cluster.node("kill-kafka-node", node)
    moved_s = cluster.wait_not_leading(node, topic)
    restarted = time.monotonic()
    cluster.node("start-kafka-node", node)
    isr_s = cluster.wait_full_isr()
    return {"leaders_moved_s": round(moved_s, 1), "start_s": round(time.monotonic() - restarted - isr_s, 1),
            "full_isr_s": round(isr_s, 1), "fault_s": round(time.monotonic() - began, 1)}


#: whom to kill -9: the broker leading most of the topic's partitions, or the controller quorum's leader
VICTIMS: dict[str, tuple[str, Callable[[Cluster, str], int]]] = {
    "partition-leader": ("3-node Kafka: kill -9 of the broker leading most partitions, then restart",
                         lambda cluster, topic: cluster.partition_leader(topic)),
    "quorum-leader": ("3-node Kafka: kill -9 of the controller quorum leader, then restart",
                      lambda cluster, topic: cluster.quorum_leader()),
}


@pytest.mark.parametrize("victim", list(VICTIMS))
def test_kill_9_of_a_leading_node_mid_stream_loses_doubles_and_spools_nothing(
    cluster: Cluster, cluster_settings: Settings, tmp_path: Path, victim: str
) -> None:
    name, choose = VICTIMS[victim]
    rounds = 3 if FULL else 1
    stream = Stream(4, 5, 12_000, 2.5) if FULL else Stream(3, 4, 5_000, 2.5)
    cluster.wait_full_isr()
    steps: list[dict[str, float]] = []
    killed: list[int] = []

    def faults(live: Live) -> dict[str, object]:
        for _ in range(rounds):
            live.folding()
            killed.append(choose(cluster, cluster_settings.topic))
            steps.append(_kill_and_restart(cluster, killed[-1], cluster_settings.topic))
        return {"rounds": rounds, "killed": killed, "steps": steps}

    result, details, spooled = _stream_through(cluster_settings, tmp_path, stream, faults)
    record(name, result, **details, spooled=spooled)

    _check(result, details, spooled, stream)


def test_rolling_restart_of_all_three_nodes_mid_stream_loses_doubles_and_spools_nothing(
    cluster: Cluster, cluster_settings: Settings, tmp_path: Path
) -> None:
    rounds = 2 if FULL else 1
    stream = Stream(4, 5, 18_000, 2.5) if FULL else Stream(3, 4, 7_500, 3.0)
    cluster.wait_full_isr()
    steps: list[dict[str, float]] = []

    def faults(live: Live) -> dict[str, object]:
        for _ in range(rounds):
            for node in range(1, NODES + 1):
                live.folding()
                began = time.monotonic()
                cluster.node("stop-kafka-node", node)
                stopped = time.monotonic()
                cluster.node("start-kafka-node", node)
                started = time.monotonic()
                isr_s = cluster.wait_full_isr()
                steps.append({"node": node, "stop_s": round(stopped - began, 1), "start_s": round(started - stopped, 1),
                              "full_isr_s": round(isr_s, 1)})
        return {"rounds": rounds, "steps": steps}

    result, details, spooled = _stream_through(cluster_settings, tmp_path, stream, faults)
    record("3-node Kafka: rolling restart of all three nodes", result, **details, spooled=spooled)

    _check(result, details, spooled, stream)


@pytest.mark.skipif(not FULL, reason="the fleet scenario runs in `make chaos` (METRICFOLD_CHAOS=full) only")
def test_four_consumers_two_killed_9_and_started_again_on_the_cluster_lose_double_and_spool_nothing(
    cluster_settings: Settings, tmp_path: Path
) -> None:
    rounds = 3
    stream = Stream(4, 6, 8_000, 2.5)
    logs = [tmp_path / f"consumer{i}.log" for i in range(4)]  # where _stream_through's members log

    def faults(live: Live) -> dict[str, object]:
        for round_ in range(rounds):
            live.folding()
            for i in (round_ % 4, (round_ + 2) % 4):
                live.consumers[i].send_signal(signal.SIGKILL)
                live.consumers[i].wait()
            time.sleep(1.0)
            for i in (round_ % 4, (round_ + 2) % 4):
                live.consumers[i] = consumer_process(cluster_settings, logs[i])
        return {"rounds": rounds}

    result, details, spooled = _stream_through(cluster_settings, tmp_path, stream, faults, members=4)
    record("3-node Kafka: a fleet of 4 consumers, 2 killed -9 and restarted", result, **details, spooled=spooled)

    _check(result, details, spooled, stream)
