"""The consumer under real faults: kill -9 mid-stream, a second group member, and garbage on the topic.

Every check compares the final Redis state (a canonical digest of all keys) with a clean fold of the same
topic into another namespace.

On the Redis Cluster: one short kill -9 scenario (test_kill_9_of_the_consumer_on_a_redis_cluster_...); the rest run
on the standalone Redis only.
"""

from __future__ import annotations

import dataclasses
import random
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from redis_cluster import RedisClusterStack

import producer as mf
from consumer import kafka_io
from consumer.digest import digest_generation
from consumer.store import APPLIED, SKIPPED, RunWrite, Store
from schemas import codec
from schemas.settings import Settings

from support import (
    clean_fold_digest,
    consume_all,
    consumer_process,
    events_folded,
    read_full_records,
    start_stream,
    stream_events,
    wait_all,
    wait_events,
)

pytestmark = pytest.mark.integration


def test_kill_9_at_random_points_then_restart_gives_the_state_of_a_clean_fold(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "consumer.log"
    producers, runs, per_run = 4, 5, 5000  # 100k+ events
    stream = start_stream(settings, producers, runs, per_run, pause_s=0.4)
    rng = random.Random(1234)
    kills = 0
    consumer = consumer_process(settings, log)
    while kills < 6:
        time.sleep(rng.uniform(0.8, 2.5))
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
        kills += 1
        consumer = consumer_process(settings, log)
    wait_all(stream)
    consumer.send_signal(signal.SIGKILL)
    consumer.wait()
    final = consumer_process(settings, log, "--until-caught-up")
    assert final.wait(timeout=300) == 0, log.read_text()[-3000:]

    with Store(settings) as store:
        digest, stats = digest_generation(store), store.stats()
    expected_digest, expected_stats = clean_fold_digest(settings)

    assert kills >= 5
    assert stats["events"] == stream_events(runs, per_run) * producers
    assert stats == expected_stats
    assert digest == expected_digest


def _events_per_run(store: Store) -> dict[str, int]:
    """run path -> the events its meta counts, in the store's active generation."""
    found = list(store.client.scan_iter(match=store.keys.run("*/*/*", "meta"), count=2000))
    counts = [int(store.client.hget(key, "events") or 0) for key in found]
    prefix = len(store.keys.prefix) + 1
    return {key.decode()[prefix:]: n for key, n in zip(found, counts, strict=True)}


@pytest.mark.parametrize("redis_mode", ["cluster"], indirect=True)
def test_kill_9_of_the_consumer_on_a_redis_cluster_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path, redis_cluster: RedisClusterStack
) -> None:
    """The short kill -9 scenario on the session's Redis Cluster (Kafka: the shared broker): trainer processes log to
    runs of two projects (their slots on different masters) while the consumer is killed -9 three times, each time
    a random moment after it folded something; a last one catches up. Zero lost, zero doubled, the digest of a clean
    fold. Each incarnation joins a group of its own, so it gets every partition at once instead of waiting for the
    killed member's session to expire; where it resumes comes from the checkpoints in Redis either way."""
    log = tmp_path / "consumer.log"
    producers, runs, per_run = 2, 3, 5000  # seeds 0, 1: projects chaos/p0, chaos/p1
    stream = start_stream(settings, producers, runs, per_run, pause_s=1.5)  # 10 steps of 1.5 s: long enough to kill in
    rng = random.Random(20260412)
    kills = mid_fold = 0
    consumer = None
    try:
        while kills < 3:
            before = events_folded(settings)
            consumer = consumer_process(settings, log, "--group", f"{settings.namespace}-life{kills}")
            streaming = any(proc.is_alive() for proc in stream)
            if wait_events(settings, before, timeout=30 if streaming else 5) > before:
                mid_fold += 1  # it is folding: kill it a random moment later
            time.sleep(rng.uniform(0.0, 0.8))
            consumer.send_signal(signal.SIGKILL)
            consumer.wait()
            kills += 1
        wait_all(stream)
        consumer = consumer_process(settings, log, "--until-caught-up")
        assert consumer.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        for proc in stream:
            if proc.is_alive():
                proc.kill()
                proc.join()

    expected_digest, expected_stats = clean_fold_digest(settings)
    clean = dataclasses.replace(settings, namespace=settings.namespace + "clean")
    with Store(settings) as store, Store(clean) as clean_store:
        digest, stats = digest_generation(store), store.stats()
        ours, theirs = _events_per_run(store), _events_per_run(clean_store)
        masters = {redis_cluster.master_of(store.keys.project(f"chaos/p{seed}", "runs")) for seed in range(producers)}
    lost = sum(max(0, n - ours.get(run, 0)) for run, n in theirs.items())
    doubled = sum(max(0, n - theirs.get(run, 0)) for run, n in ours.items())

    assert kills == 3 and mid_fold >= 2  # the kills landed while it folded
    assert len(masters) > 1  # the batches were split over several masters
    assert (lost, doubled) == (0, 0)
    assert stats["events"] == sum(ours.values()) == stream_events(runs, per_run) * producers
    assert stats == expected_stats
    assert digest == expected_digest


def test_two_consumers_in_one_group_share_partitions_and_match_one_consumer(settings: Settings, tmp_path: Path) -> None:
    producers, runs, per_run = 4, 4, 2000
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = consumer_process(settings, logs[0])
    second = consumer_process(settings, logs[1])
    deadline = time.monotonic() + 90
    while not all(log.exists() and re.search(r"assigned partitions \[\d", log.read_text()) for log in logs):
        # the group settles with both members holding partitions before the stream starts
        assert time.monotonic() < deadline, "the two consumers did not both get partitions in 90 s"
        time.sleep(0.2)
    stream = start_stream(settings, producers, runs, per_run, pause_s=0.2)
    wait_all(stream)
    expected_events = stream_events(runs, per_run) * producers
    deadline = time.monotonic() + 120
    with Store(settings) as store:
        while time.monotonic() < deadline and store.stats().get("events", 0) < expected_events:
            time.sleep(0.5)
    for proc, log in zip((first, second), logs, strict=True):
        proc.send_signal(signal.SIGTERM)  # each stores its runs' fold states as it stops
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    with Store(settings) as store:
        digest = digest_generation(store)

    expected_digest, expected_stats = clean_fold_digest(settings)

    for log in logs:  # each member held some partitions at some point
        assert re.search(r"assigned partitions \[\d", log.read_text()), log.read_text()[-3000:]
    assert expected_stats["events"] == expected_events
    assert digest == expected_digest


def test_garbage_and_rule_breaking_events_go_to_the_dead_letter_topic_and_valid_ones_are_folded(settings: Settings) -> None:
    envelope = {"entity": "team", "project": "vision", "run_id": "r1", "producer_id": "p-1", "ts_ms": 1}
    good_log = codec.encode("metricfold.Log", {**envelope, "seq": 0, "step": 0, "values": {"loss": 0.5}})
    bad_define = codec.encode(
        "metricfold.DefineMetric",
        {**envelope, "seq": 1, "name": "acc", "summary": ["best"], "objective": None, "step_metric": None,
         "hidden": False, "overwrite": False},
    )
    good_log_2 = codec.encode("metricfold.Log", {**envelope, "seq": 2, "step": 1, "values": {"loss": 0.25}})
    unknown_fingerprint = b"\xc3\x01" + b"\x00" * 8 + good_log[10:]
    records = [
        b"not avro at all",
        good_log,
        good_log[:15],  # truncated
        bad_define,
        unknown_fingerprint,
        good_log_2,
        b"",
    ]
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    for value in records:
        producer.send(settings.topic, key=b"team/vision/r1", value=value)
    producer.flush()
    producer.close()

    report = consume_all(settings)
    dead = read_full_records(settings, 5, topic=settings.dead_letter_topic)

    with Store(settings) as store:
        run = store.read_run("team/vision/r1")
        stats = store.stats()
    assert run["summary"]["loss"] == 0.25
    assert int(run["meta"]["events"]) == 2
    assert report.undecodable == 4 and report.dead_letters == 1
    assert stats["undecodable"] == 4 and stats["dead_letters"] == 1
    reasons = sorted(dict(r.headers)["reason"].decode() for r in dead)
    assert len(dead) == 5
    assert any("objective" in r for r in reasons)
    assert sum(r.startswith("undecodable") for r in reasons) == 4
    assert sorted(r.value for r in dead) == sorted([records[0], records[2], records[3], records[4], records[6]])
    for r in dead:
        headers = dict(r.headers)
        assert headers["source.topic"].decode() == settings.topic
        assert int(headers["source.offset"]) >= 0


def test_a_record_whose_key_is_not_its_run_path_is_a_dead_letter(settings: Settings) -> None:
    envelope = {"entity": "team", "project": "vision", "run_id": "r1", "producer_id": "p-1", "ts_ms": 1}
    event = codec.encode("metricfold.Log", {**envelope, "seq": 0, "step": 0, "values": {"loss": 0.5}})
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    producer.send(settings.topic, key=b"team/vision/other", value=event)  # would break per-run ordering
    producer.send(settings.topic, key=None, value=event)
    producer.send(settings.topic, key=b"team/vision/r1", value=event)
    producer.flush()
    producer.close()

    report = consume_all(settings)
    dead = read_full_records(settings, 2, topic=settings.dead_letter_topic)

    assert report.undecodable == 2
    assert all(b"run path" in dict(r.headers)["reason"] for r in dead)
    with Store(settings) as store:
        assert int(store.read_run("team/vision/r1")["meta"]["events"]) == 1


def test_a_stalled_rebalance_makes_the_consumer_start_over_with_a_new_client(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """kafka-python can stop midway through a rebalance and spin without fetching (seen under load). The
    watchdog gives up the client after UNSETTLED_LIMIT_S; the new client folds the rest exactly once."""
    import consumer.kafka_io as kafka_io
    import consumer.kafka_io.stall_watchdog as stall_watchdog
    from consumer.runner import Consumer

    from support import produce_stream

    produce_stream(settings, runs=3, events_per_run=300, seed=7)  # at least one record per run: 3 or more
    monkeypatch.setattr(stall_watchdog, "UNSETTLED_LIMIT_S", 1.0)
    clients: list[kafka_io.GroupConsumer] = []
    real_init = kafka_io.GroupConsumer.__init__

    def tracked_init(self: kafka_io.GroupConsumer, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        clients.append(self)
        if len(clients) == 1:  # once it has fetched a record, the first client stalls: unsettled, nothing fetched
            kafka, fetched = self._consumer, [False]
            real_poll = kafka.poll

            def stalling_poll(*args: object, **kwargs: object) -> object:
                if not fetched[0]:
                    polled = real_poll(*args, **kwargs)
                    fetched[0] = bool(polled)
                    return polled
                monkeypatch.setattr(kafka._coordinator, "stable", lambda: False)
                time.sleep(0.05)
                return {}

            monkeypatch.setattr(kafka, "poll", stalling_poll)

    monkeypatch.setattr(kafka_io.GroupConsumer, "__init__", tracked_init)
    consumer = Consumer(settings, poll_records=1)
    try:
        with caplog.at_level("WARNING", logger="consumer.runner"):
            report = consumer.run(until_caught_up=True)
    finally:
        consumer.close()

    assert len(clients) >= 2, "the stalled client was not replaced"
    assert any("has not settled" in r.getMessage() for r in caplog.records)
    with Store(settings) as store:
        digest, stats = digest_generation(store), store.stats()
    expected_digest, expected_stats = clean_fold_digest(settings)
    assert stats["events"] == stream_events(3, 300)
    assert (digest, stats) == (expected_digest, expected_stats)
    assert report.events_applied >= stream_events(3, 300)


def test_a_write_loads_the_scripts_again_when_redis_has_lost_them(settings: Settings) -> None:
    # A Redis restarted without its script cache (or SCRIPT FLUSH): the write's EVALSHA gets NOSCRIPT
    write = RunWrite(run_path="team/vision/r1", partition=0, offset=5, expected_prev=None, state=b"{}", updated_ms=1)
    with Store(settings) as store:
        store.ensure_generation()
        store.client.script_flush()

        assert store.apply([write], {0: 6}) == [APPLIED]
        assert store.checkpoints(settings.topic) == {0: 6}
        assert store.apply([write], {0: 6}) == [SKIPPED]  # the scripts are there again: applied once only


def test_offset_commits_are_sent_at_most_once_a_second_and_the_last_offsets_at_close(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kafka import KafkaConsumer, TopicPartition

    from consumer.runner import Consumer

    sent: list[int] = []
    real = KafkaConsumer.commit_async

    def counted(self: KafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        sent.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(KafkaConsumer, "commit_async", counted)
    for i in range(24):  # a record or two per run: with 2 records per poll, a dozen batches or more
        with mf.init(entity="team", project="vision", run_id=f"r{i}", settings=settings) as run:
            run.log({"loss": 1 / (i + 1)})
    consumer = Consumer(settings, poll_records=2)
    began = time.monotonic()
    try:
        report = consumer.run(until_caught_up=True)
    finally:
        consumer.close()
    elapsed = time.monotonic() - began

    assert report.batches >= 10
    assert len(sent) < report.batches / 2  # not one a batch
    assert (len(sent) - 1) * kafka_io.COMMIT_EVERY_S <= elapsed  # at most one a second
    probe = KafkaConsumer(bootstrap_servers=settings.kafka, group_id=settings.group_id, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in probe.partitions_for_topic(settings.topic) or []]
        ends = probe.end_offsets(partitions)
        committed = {tp: probe.committed(tp) for tp in partitions}
    finally:
        probe.close()
    assert {tp: committed[tp] for tp in partitions if ends[tp]} == {tp: end for tp, end in ends.items() if end}


def _fold_without_storing_states(settings: Settings) -> None:
    """A consumer that folds the whole topic into the views, then dies before it stored its fold states (any not
    already stored with a batch, as those due after STATE_EVERY_S are)."""
    from consumer.runner import Consumer

    consumer = Consumer(settings)
    try:
        kafka = consumer._connect()
        ends = kafka.topic_end_offsets()
        deadline = time.monotonic() + 60
        while consumer.store.checkpoints(settings.topic) != {p: end for p, end in ends.items() if end}:
            assert time.monotonic() < deadline, "the first consumer did not fold the topic in 60 s"
            records = kafka.poll(timeout_ms=200, max_records=50)
            if records:
                consumer.process(records)
    finally:
        consumer.close()  # no store_states(): as if killed


def test_a_consumer_that_dies_before_storing_its_states_is_followed_by_one_that_reads_back_for_them(
    settings: Settings,
) -> None:
    from support import produce_stream

    produce_stream(settings, runs=4, events_per_run=400, seed=11)
    envelope = {"entity": "team", "project": "vision", "run_id": "r1", "producer_id": "p-1", "ts_ms": 1}
    refused = codec.encode(  # a rule-breaking event (dead letter) and a record that is not an event (undecodable)
        "metricfold.DefineMetric",
        {**envelope, "seq": 0, "name": "acc", "summary": ["best"], "objective": None, "step_metric": None,
         "hidden": False, "overwrite": False},
    )
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    producer.send(settings.topic, key=b"team/vision/r1", value=refused)
    producer.send(settings.topic, key=b"team/vision/r1", value=b"not avro at all")
    producer.flush()
    producer.close()

    _fold_without_storing_states(settings)
    with Store(settings) as store:
        checkpoints, resume = store.checkpoints(settings.topic), store.resume_points(settings.topic)
        views_stats = store.stats()
    assert any(resume[p] < checkpoints[p] for p in checkpoints)  # the views are ahead of the stored states

    from consumer.runner import Consumer

    second = Consumer(settings)
    try:
        report = second.run(until_caught_up=True)
    finally:
        second.close()

    with Store(settings) as store:
        digest, stats = digest_generation(store), store.stats()
        assert store.resume_points(settings.topic) == store.checkpoints(settings.topic)  # every state stored
    dead = read_full_records(settings, 3, timeout=5.0, topic=settings.dead_letter_topic)
    assert len(dead) == 2  # the records read again were not sent to the dead-letter topic again ...
    assert report.events_applied == 0 and report.dead_letters == 0 and report.undecodable == 0
    expected_digest, expected_stats = clean_fold_digest(settings)  # (its dead letters go to the same topic)
    assert stats == views_stats == expected_stats  # ... nor counted again
    assert digest == expected_digest


def test_an_idle_consumer_stores_every_fold_state_and_a_busy_one_each_within_state_every_s(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consumer.consume.run_cache as run_cache
    import consumer.runner as runner

    from support import produce_stream

    produce_stream(settings, runs=3, events_per_run=200, seed=5)
    _fold_without_storing_states(settings)  # (its own states: lost; the next consumer reads back for them)
    monkeypatch.setattr(run_cache, "STATE_EVERY_S", 0.0)  # due at once: stored with the batch that folds them
    consumer = runner.Consumer(settings)
    try:
        kafka = consumer._connect()
        while not consumer.caught_up():
            records = kafka.poll(timeout_ms=200, max_records=50)
            if records:
                consumer.process(records)  # never idle here: each state is stored with a batch
        assert not consumer._dirty
    finally:
        consumer.close()
    with Store(settings) as store:
        digest = digest_generation(store)
    assert digest == clean_fold_digest(settings)[0]


def test_after_reading_back_the_views_are_diffed_against_what_redis_shows_not_the_stored_state(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """loss 1.0 (state stored), 0.5 (views only, then the consumer dies), 1.0 again: the next consumer folds 0.5
    into the stored state again, and must then write 1.0, although the stored state showed 1.0 too."""
    import consumer.consume.run_cache as run_cache

    def log(loss: float) -> None:
        run = mf.init(entity="team", project="vision", run_id="r1", settings=settings)
        run.log({"loss": loss})
        run.finish()

    def fold(state_every_s: float) -> None:
        monkeypatch.setattr(run_cache, "STATE_EVERY_S", state_every_s)
        _fold_without_storing_states(settings)  # (except those due with a batch)

    log(1.0)
    fold(0.0)  # stored with the batch
    log(0.5)
    fold(3600.0)  # the views show 0.5; the stored state still 1.0
    with Store(settings) as store:
        assert store.read_run("team/vision/r1")["summary"]["loss"] == 0.5
    log(1.0)
    consume_all(settings)

    with Store(settings) as store:
        assert store.read_run("team/vision/r1")["summary"]["loss"] == 1.0
        digest = digest_generation(store)
    assert digest == clean_fold_digest(settings)[0]


@pytest.mark.parametrize("runs", [3, 205])  # one apply_runs call (it advances the checkpoints), or two
def test_a_batch_advances_its_checkpoints_only_when_none_of_its_runs_conflicts(settings: Settings, runs: int) -> None:
    import dataclasses

    from consumer.store import CONFLICT, RUNS_PER_CALL

    assert (runs > RUNS_PER_CALL) == (runs == 205)
    writes = [RunWrite(run_path=f"team/vision/r{i}", partition=0, offset=i, expected_prev=None, state=b"", updated_ms=1)
              for i in range(runs)]
    with Store(settings) as store:
        store.ensure_generation()
        assert store.apply(writes, {0: runs}) == [APPLIED] * runs
        assert store.checkpoints(settings.topic) == {0: runs}

        again = [dataclasses.replace(w, offset=w.offset + 1000, expected_prev=w.offset) for w in writes]
        again[-1] = dataclasses.replace(again[-1], expected_prev=runs + 7)  # not what Redis holds: a conflict
        assert store.apply(again, {0: runs + 1000}) == [APPLIED] * (runs - 1) + [CONFLICT]
        assert store.checkpoints(settings.topic) == {0: runs}  # not moved past the conflicting run

        again[-1] = dataclasses.replace(again[-1], expected_prev=runs - 1)
        assert store.apply(again, {0: runs + 1000}) == [SKIPPED] * (runs - 1) + [APPLIED]
        assert store.checkpoints(settings.topic) == {0: runs + 1000}
