"""Replay against the real broker and Redis: same digest as the live fold, point-in-time views, atomic switch.

On the Redis Cluster too (BOTH_MODES): the point-in-time replay's digest, the switch under a live consumer and
readers, and a namespace without data; the crash test and the deleted-events test run on the standalone Redis only
(the first is the module's slowest, the second is about Kafka)."""

from __future__ import annotations

import dataclasses
import io
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, TopicPartition
from redis_cluster import BOTH_MODES

import producer as mf
from consumer.digest import digest_generation
from consumer.kafka_io import first_offsets
from consumer.replay import ReplayRefused, replay
from consumer.runner import Consumer
from consumer.store import Keys, Store
from consumer.store.generations import RETIRED_TTL_S
from schemas.errors import RunNotFound
from schemas.settings import Settings

from support import cli_env, consume_all, produce_stream, stream_events

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def quiet_replay(settings: Settings, **kwargs: Any) -> Any:
    return replay(settings, progress=True, out=io.StringIO(), **kwargs)


def active_digest(settings: Settings) -> str:
    with Store(settings) as store:
        return digest_generation(store)


def test_replay_after_a_live_fold_with_crashes_gives_the_same_digest_and_twice_the_same_again(settings: Settings) -> None:
    produce_stream(settings, runs=4, events_per_run=3000, seed=7)
    command = [sys.executable, "-m", "consumer.cli", "consume", "--quiet", "--kafka", settings.kafka,
               "--redis", settings.redis, "--topic", settings.topic, "--namespace", settings.namespace]
    for wait in (0.8, 1.2):  # two crashes in the middle of the live fold
        proc = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL, env=cli_env(settings))
        time.sleep(wait)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    consume_all(settings)
    live = active_digest(settings)

    first = quiet_replay(settings, generation="replay1")
    second = quiet_replay(settings, generation="replay2")

    assert first.digest == live
    assert second.digest == live
    assert first.events == stream_events(4, 3000)
    with Store(settings) as store:
        assert store.active_generation() == "g1"  # not switched


@BOTH_MODES
def test_replay_until_offset_equals_a_live_fold_stopped_at_that_offset(settings: Settings) -> None:
    produce_stream(settings, runs=3, events_per_run=400, seed=3)
    ends = {p: end for p, (_, end) in first_offsets(settings).items()}
    cut = {p: end // 2 for p, end in ends.items()}
    stopped = dataclasses.replace(settings, namespace=settings.namespace + "stopped")
    consumer = Consumer(stopped, stop_at=cut)
    consumer.run()
    consumer.close()

    report = quiet_replay(settings, generation="asof", until_offsets=cut)

    assert report.digest == active_digest(stopped)
    assert report.digest != quiet_replay(settings, generation="full").digest


def test_replay_refuses_when_events_were_deleted_unless_gaps_are_allowed(settings: Settings) -> None:
    produce_stream(settings, runs=2, events_per_run=1000, seed=1, pause_s=0.3)  # >= 2 records per run (200 ms ticks)
    partition = next(p for p, (_, end) in first_offsets(settings).items() if end > 1)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka)
    admin.delete_records({TopicPartition(settings.topic, partition): 1})
    admin.close()

    with pytest.raises(ReplayRefused, match="lost 1 events"):
        quiet_replay(settings, generation="gappy")
    assert quiet_replay(settings, generation="gappy", allow_gaps=True).records > 0


@BOTH_MODES
def test_switch_moves_readers_and_the_live_consumer_without_losing_or_doubling(settings: Settings) -> None:
    run = mf.init(entity="team", project="vision", run_id="sw", settings=settings)
    for i in range(200):
        run.log({"n": i})
    run.finish()
    head = {p: end for p, (_, end) in first_offsets(settings).items()}
    live = Consumer(settings, stop_at=None)
    live.run(until_caught_up=True)
    with Store(settings) as store:
        before = store.read_run("team/vision/sw")
    old_generation = before["generation"]

    # the live consumer keeps running in the background while the replay switches
    live_thread = threading.Thread(target=lambda: live.run(idle_timeout_s=15), daemon=True)
    live_thread.start()
    reads: list[tuple[str, Any, str]] = []
    stop_reading = threading.Event()

    def reader() -> None:
        with Store(settings) as store:
            while not stop_reading.is_set():
                got = store.read_run("team/vision/sw")
                reads.append((got["generation"], got["summary"].get("n"), got["meta"].get("events")))

    reader_thread = threading.Thread(target=reader, daemon=True)
    reader_thread.start()
    report = quiet_replay(settings, generation="g2", switch=True)
    # after the switch, more events: the live consumer must fold them into the new generation
    more = mf.init(entity="team", project="vision", run_id="sw", settings=settings)
    for i in range(200, 250):
        more.log({"n": i})
    more.finish()
    deadline = time.monotonic() + 60
    with Store(settings) as store:
        while time.monotonic() < deadline and store.read_run("team/vision/sw")["summary"].get("n") != 249:
            time.sleep(0.2)
    stop_reading.set()
    reader_thread.join(timeout=10)
    live.stopping = True
    live_thread.join(timeout=30)
    live.close()

    assert report.switched and report.deleted == old_generation
    assert head  # the topic had data before the switch
    generations = {g for g, _, _ in reads}
    assert generations <= {old_generation, "g2"} and "g2" in generations
    for generation, n, events in reads:  # never a half-built generation: at least everything folded before
        assert n is not None and n >= 199, (generation, n, events)
        assert int(events) - n in (3, 4, 5), (generation, n, events)  # summary and meta from one moment
    with Store(settings) as store:
        assert store.active_generation() == "g2"
        # only the projects' `retired` markers are left of it, and they expire (a late live write stays refused)
        left = list(store.client.scan_iter(match=Keys(settings.namespace, old_generation).every_key))
        assert left and all(key.endswith(b"}:retired") and 0 < store.client.ttl(key) <= RETIRED_TTL_S for key in left)
        assert store.read_run("team/vision/sw")["meta"]["events"] == "254"
    clean = dataclasses.replace(settings, namespace=settings.namespace + "clean")
    consume_all(clean)
    assert active_digest(settings) == active_digest(clean)


@BOTH_MODES
def test_readers_of_a_namespace_without_data_get_a_clear_not_found(settings: Settings) -> None:
    with Store(settings) as store, pytest.raises(RunNotFound, match="no active generation"):
        store.read_run("team/vision/none")
