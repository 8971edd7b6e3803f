"""Helpers for tests that read what reached the real broker (import: `from support import read_records`),
and for the fault tests: trainer processes, consumer processes, a clean fold to compare with."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from schemas.settings import Settings

__all__ = [
    "clean_fold_digest",
    "cli_env",
    "consume_all",
    "consumer_process",
    "longest_log_call",
    "metricfold_cli",
    "port_free",
    "produce_stream",
    "read_full_records",
    "read_records",
    "sdk_spool",
    "start_stream",
    "stream_events",
    "wait_all",
]

REPO = Path(__file__).resolve().parent.parent


def port_free(port: int) -> bool:
    """Nothing listens on this loopback port (the stacks the tests start check the ports they take)."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def read_records(settings: Settings, count: int, timeout: float = 30.0, topic: str | None = None) -> list[tuple[bytes, bytes]]:
    """Read (key, value) of the first *count* records of the topic (all partitions, from the beginning)."""
    records = read_full_records(settings, count, timeout, topic)
    return [(r.key, r.value) for r in records]


#: read_full_records stops short of *count* once it has read every partition to its end and the ends stayed put
#: this long (nothing more is coming: what the test waits for was acknowledged before it reads)
QUIET_S = 0.5


def read_full_records(settings: Settings, count: int, timeout: float = 30.0, topic: str | None = None) -> list:  # type: ignore[type-arg]
    """Like read_records, but the kafka-python ConsumerRecord objects (headers, partition, offset). Fewer than
    *count* when the topic holds fewer: read to its end offsets, which did not move for QUIET_S (a test asking for
    one more record than it expects, to show there is none, does not wait for the *timeout*)."""
    name = topic or settings.topic
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka, enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000
    )
    try:
        partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list = []  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        ends, ends_at = consumer.end_offsets(partitions), time.monotonic()
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=100).values():
                records.extend(batch)
            caught_up = all(consumer.position(tp) >= end for tp, end in ends.items())
            if caught_up and time.monotonic() - ends_at >= QUIET_S:
                latest = consumer.end_offsets(partitions)
                if latest == ends:
                    break
                ends = latest
                ends_at = time.monotonic()
        return records
    finally:
        consumer.close()


def produce_stream(
    settings: Settings, runs: int, events_per_run: int, seed: int, pause_s: float = 0.0, spool_dir: str | None = None,
    log_times_dir: str | None = None,
) -> None:
    """A trainer process: `runs` runs, each with defines, logs, an override and a finish; optional pacing.

    Runs whose events cannot reach Kafka spool them to *spool_dir* (default: the SDK's, ./metricfold-spool). With
    *log_times_dir*, the longest wall time of one `log()` call in this process (seconds) is written to
    `<log_times_dir>/<seed>` at the end (longest_log_call reads them)."""
    import random

    import producer as mf

    rng = random.Random(seed)
    clock = time.perf_counter
    longest = 0.0
    opened = [
        mf.init(entity="chaos", project=f"p{seed % 3}", run_id=f"s{seed}r{i}", settings=settings, spool_dir=spool_dir)
        for i in range(runs)
    ]
    for run in opened:
        run.define_metric("loss", summary="min,max,mean")
        run.define_metric("acc*", summary="best", objective="maximize")
    chunk = 500
    for start in range(0, events_per_run, chunk):
        for run in opened:
            for step in range(start, min(start + chunk, events_per_run)):
                value = rng.random()
                began = clock()
                run.log({"loss": value, "acc": 1 - value, "grad": {"norm": rng.gauss(0, 1)}, "epoch": step // 100})
                longest = max(longest, clock() - began)
            if start == 0:
                run.summary["note"] = f"override {run.id}"
        if pause_s:
            time.sleep(pause_s)
    for run in opened:
        run.finish()
    if log_times_dir is not None:
        Path(log_times_dir, str(seed)).write_text(f"{longest!r}\n")


def longest_log_call(log_times_dir: Path, producers: int) -> float:
    """The longest `log()` call of the trainer processes that wrote to *log_times_dir* (produce_stream); every one
    of the *producers* must have written its figure."""
    figures = [float(path.read_text()) for path in log_times_dir.iterdir()]
    assert len(figures) == producers, f"{len(figures)} of {producers} trainer processes reported their log() times"
    return max(figures)


def stream_events(runs: int, events_per_run: int) -> int:
    """How many events produce_stream sends: per run, started + 2 defines + logs + 1 override + finished."""
    return runs * (events_per_run + 5)


def consume_all(settings: Settings) -> Any:
    from consumer.runner import Consumer

    consumer = Consumer(settings)
    try:
        return consumer.run(until_caught_up=True)
    finally:
        consumer.close()


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment of a `metricfold` subprocess that logs in to Redis as *settings* do (not as a shell's
    `source .stack/env` would)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("METRICFOLD_REDIS_USERNAME", "METRICFOLD_REDIS_PASSWORD", "METRICFOLD_REDIS_PASSWORD_FILE")}
    if settings.redis_username:
        env["METRICFOLD_REDIS_USERNAME"] = settings.redis_username
    if settings.redis_password:
        env["METRICFOLD_REDIS_PASSWORD"] = settings.redis_password
    return env


def metricfold_cli(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`metricfold ARGS` in its own process, pointed at *settings*' Kafka, Redis (logged in as they are), topic
    and namespace; its output captured as text."""
    connection = ["--kafka", settings.kafka, "--redis", settings.redis, "--topic", settings.topic,
                  "--namespace", settings.namespace]
    return subprocess.run([sys.executable, "-m", "consumer.cli", *args, *connection], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=cli_env(settings))


def sdk_spool(directory: Path, run_id: str = "r", events: int = 3) -> Path:
    """A spool file the SDK wrote (offline): RunStarted, *events* logs, RunFinished."""
    import pytest

    import producer as mf

    with pytest.warns(mf.SpoolWarning):
        run = mf.init(entity="e", project="p", run_id=run_id, mode="offline", spool_dir=directory)
        for i in range(events):
            run.log({"x": float(i)})
        run.finish()
    assert run.report is not None and run.report.spool_path is not None
    return run.report.spool_path


def consumer_process(settings: Settings, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`metricfold -v consume` in its own process; its log is appended to *log*."""
    command = [sys.executable, "-m", "consumer.cli", "-v", "consume", "--quiet", "--kafka", settings.kafka,
               "--redis", settings.redis, "--topic", settings.topic, "--namespace", settings.namespace, *extra]
    with log.open("ab") as sink:
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=sink, env=cli_env(settings))


def start_stream(
    settings: Settings, producers: int, runs: int, events_per_run: int, pause_s: float, *, first_seed: int = 0,
    spool_dir: str | None = None, log_times_dir: str | None = None,
) -> list[multiprocessing.process.BaseProcess]:
    """*producers* trainer processes running produce_stream with seeds first_seed, first_seed + 1, ..."""
    context = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = [
        context.Process(target=produce_stream,
                        args=(settings, runs, events_per_run, seed, pause_s, spool_dir, log_times_dir))
        for seed in range(first_seed, first_seed + producers)
    ]
    for p in procs:
        p.start()
    return procs


def wait_all(procs: list[multiprocessing.process.BaseProcess], timeout: float = 300) -> None:
    for p in procs:
        p.join(timeout=timeout)
        assert p.exitcode == 0, f"a producer process failed: exit code {p.exitcode}"


def clean_fold_digest(settings: Settings) -> tuple[str, dict[str, int]]:
    """Fold the same topic cleanly (one consumer, no faults) into another namespace: its digest and stats."""
    from consumer.digest import digest_generation
    from consumer.store import Store

    clean = dataclasses.replace(settings, namespace=settings.namespace + "clean")
    consume_all(clean)
    with Store(clean) as store:
        return digest_generation(store), store.stats()


def events_folded(settings: Settings) -> int:
    """Events Redis counts as folded (0 before the consumer made the namespace's first generation)."""
    from consumer.store import Store

    with Store(settings) as store:
        if store.active_generation() is None:
            return 0
        return store.stats().get("events", 0)


def wait_events(settings: Settings, above: int, timeout: float = 120.0) -> int:
    """Wait until Redis counts more than *above* folded events; return the count (maybe still *above*)."""
    deadline = time.monotonic() + timeout
    count = events_folded(settings)
    while count <= above and time.monotonic() < deadline:
        time.sleep(0.1)
        count = events_folded(settings)
    return count
