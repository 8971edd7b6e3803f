"""Shared pieces of the chaos scenarios: the private stack, sizes (short / full), waiting, and the verdict.

The verdict of a scenario compares the Redis state it produced with a clean fold of the same topic into
another namespace: the canonical digests, the stats, and per run the number of events applied, from which
`lost` and `doubled` are counted. With METRICFOLD_CHAOS_RESULTS=<file> every verdict is also appended to
that file as one JSON line (bench/report.py reads it).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import subprocess
import time
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from consumer.digest import digest_generation
from consumer.store import Store
from schemas.settings import Settings

import support
from support import clean_fold_digest, events_folded, port_free, wait_events

__all__ = [
    "FULL",
    "ChaosStack",
    "Stream",
    "Verdict",
    "consumer_process",
    "events_folded",
    "finish_stream",
    "reap",
    "record",
    "verdict",
    "wait_caught_up",
    "wait_events",
]

REPO = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.sh"
STACK_DIR = REPO / ".stack" / "chaos"
#: (Kafka, controller, Redis) port sets to try for the private stack, first free one wins
PORT_CHOICES = [(19192, 19193, 16479), (19292, 19293, 16579), (19392, 19393, 16679)]

FULL = os.environ.get("METRICFOLD_CHAOS", "").lower() == "full"



@dataclasses.dataclass(frozen=True)
class ChaosStack:
    """deploy/local/stack.sh with its own directory and ports; `control` runs its commands (kill-redis, ...)."""

    kafka_port: int
    controller_port: int
    redis_port: int

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_password(self) -> str | None:
        """The private stack's Redis administrator password (stack.sh made it; None before its first start)."""
        path = STACK_DIR / "secrets" / "redis-default.password"
        return path.read_text().partition("\n")[0] if path.exists() else None

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "METRICFOLD_STACK_DIR": str(STACK_DIR),
            "METRICFOLD_KAFKA_PORT": str(self.kafka_port),
            "METRICFOLD_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "METRICFOLD_REDIS_PORT": str(self.redis_port),
            # the private broker is restarted and killed many times: the light JVM of the cluster's nodes (serial
            # GC, one core, C1 only) starts it for ~5 s of CPU instead of ~25 (deploy/local/stack.sh)
            "METRICFOLD_KAFKA_JVM_OPTS": os.environ.get(
                "METRICFOLD_KAFKA_JVM_OPTS", "-XX:+UseSerialGC -XX:ActiveProcessorCount=1 -XX:TieredStopAtLevel=1"),
        }

    @classmethod
    def _running_ports(cls) -> ChaosStack | None:
        """The ports of a private stack already running in STACK_DIR (from the configs stack.sh wrote), if any."""
        try:
            redis_conf = (STACK_DIR / "redis" / "redis.conf").read_text()
            kafka_conf = (STACK_DIR / "kafka" / "server.properties").read_text()
        except OSError:
            return None
        redis_port = re.search(r"^port (\d+)$", redis_conf, re.M)
        listeners = re.search(r"^listeners=PLAINTEXT://127.0.0.1:(\d+),CONTROLLER://127.0.0.1:(\d+)$", kafka_conf, re.M)
        if not redis_port or not listeners:
            return None
        stack = cls(int(listeners[1]), int(listeners[2]), int(redis_port[1]))
        status = subprocess.run(["bash", str(STACK_SCRIPT), "status"], env=stack.env, capture_output=True)
        return stack if status.returncode == 0 else None

    @classmethod
    def up(cls) -> ChaosStack:
        stack = cls._running_ports()
        if stack is None:
            # stop what may be left of an earlier private stack (stack.sh stops by pid file), then pick free ports
            subprocess.run(["bash", str(STACK_SCRIPT), "down"], env={**os.environ, "METRICFOLD_STACK_DIR": str(STACK_DIR)},
                           check=True, stdout=subprocess.DEVNULL)
            for ports in PORT_CHOICES:
                if all(port_free(p) for p in ports):
                    stack = cls(*ports)
                    break
            else:
                raise RuntimeError(f"no free ports for the private chaos stack among {PORT_CHOICES}")
        stack.control("up")
        return stack

    def control(self, command: str) -> None:
        subprocess.run(["bash", str(STACK_SCRIPT), command], check=True, cwd=REPO, env=self.env, stdout=subprocess.DEVNULL)

    def kafka_pid(self) -> int:
        """The private broker's process id (to stop and continue it with SIGSTOP / SIGCONT)."""
        return int((STACK_DIR / "kafka" / "kafka.pid").read_text().strip())

    def ensure_running(self) -> None:
        self.control("start-redis")
        self.control("start-kafka")

    def down(self) -> None:
        self.control("down")


@dataclasses.dataclass(frozen=True)
class Stream:
    """What produce_stream is asked for: producers x runs x events per run, paced by pause_s per 500 events."""

    producers: int
    runs: int
    per_run: int
    pause_s: float

    @property
    def events(self) -> int:
        return self.producers * self.runs * (self.per_run + 5)  # started + 2 defines + logs + override + finished


def finish_stream(settings: Settings, producers: list[multiprocessing.process.BaseProcess], spool: Path) -> int:
    """Wait for the trainer processes, then publish what they spooled (`metricfold sync`): a trainer that could
    not reach Kafka in time (a broker away, or a machine too busy to connect within 5 s) spools, and the
    events count only once they are on the topic. Returns the events synced."""
    from producer.spool import sync

    support.wait_all(producers)
    return sync(spool, settings).events if spool.exists() else 0


_children: list[subprocess.Popen[bytes]] = []


def consumer_process(settings: Settings, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """support.consumer_process, remembered so that reap() ends it if the scenario fails half-way."""
    proc: subprocess.Popen[bytes] = support.consumer_process(settings, log, *extra)
    _children.append(proc)
    return proc


def reap() -> None:
    """Kill (-9) every consumer and trainer process a scenario started and left running."""
    while _children:
        proc = _children.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for child in multiprocessing.active_children():
        child.kill()
        child.join()


def _end_offsets(settings: Settings) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in sorted(consumer.partitions_for_topic(settings.topic) or [])]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def wait_caught_up(settings: Settings, timeout: float = 180.0) -> bool:
    """Wait until Redis holds every record of every partition, in the views and in the stored fold states (the
    resume points reach the end offsets); False if it does not in time."""
    ends = _end_offsets(settings)
    deadline = time.monotonic() + timeout
    with Store(settings) as store:
        while time.monotonic() < deadline:
            resume = store.resume_points(settings.topic)
            if all(resume.get(p, 0) >= end for p, end in ends.items()):
                return True
            time.sleep(0.3)
    return False


@dataclasses.dataclass
class Verdict:
    expected_events: int
    events: int  # what the faulted fold counted
    lost: int  # events the clean fold applied and the faulted one did not (summed per run)
    doubled: int  # events the faulted fold counted more than the clean one (per run, and in the stats)
    digest_equal: bool
    stats: dict[str, int]
    clean_stats: dict[str, int]


def _events_per_run(store: Store) -> dict[str, int]:
    keys = store.keys
    client = store.client
    found = [k for k in client.scan_iter(match=keys.run("*/*/*", "meta"), count=2000)]
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.hget(key, "events")
    return {k.decode(): int(v or 0) for k, v in zip(found, pipe.execute(), strict=True)}


def verdict(settings: Settings, expected_events: int) -> Verdict:
    """Compare the state in *settings*' namespace with a clean fold of the same topic."""
    clean_digest, clean_stats = clean_fold_digest(settings)
    clean = dataclasses.replace(settings, namespace=settings.namespace + "clean")
    with Store(settings) as store, Store(clean) as clean_store:
        digest, stats = digest_generation(store), store.stats()
        ours = {k.split(":", 1)[1]: v for k, v in _events_per_run(store).items()}
        theirs = {k.split(":", 1)[1]: v for k, v in _events_per_run(clean_store).items()}
    lost = sum(max(0, n - ours.get(run, 0)) for run, n in theirs.items())
    doubled = sum(max(0, n - theirs.get(run, 0)) for run, n in ours.items())
    doubled += max(0, stats.get("events", 0) - clean_stats.get("events", 0) - doubled)
    return Verdict(expected_events, stats.get("events", 0), lost, doubled, digest == clean_digest, stats, clean_stats)


def record(scenario: str, result: Verdict | None, **details: object) -> None:
    """Append the scenario's verdict to $METRICFOLD_CHAOS_RESULTS (for docs/REPORT.md), if it is set."""
    path = os.environ.get("METRICFOLD_CHAOS_RESULTS")
    if not path:
        return
    verdict_fields = dataclasses.asdict(result) if result else {}
    line = {"scenario": scenario, "mode": "full" if FULL else "short", **verdict_fields, **details}
    with open(path, "a", encoding="utf-8") as sink:
        sink.write(json.dumps(line) + "\n")


# ---------------------------------------------------------------------- consumers with injected commit faults
# (module level: they run in spawned processes)


def consume_with_failing_commits(settings: Settings, group: str, raise_every: int, report_path: str) -> None:
    """A live consumer whose Kafka offset commits fail: most are refused (nothing committed, False returned,
    as GroupConsumer.commit does on a Kafka error) and every *raise_every*-th raises BrokerUnavailable after the
    batch reached Redis. Runs until killed."""
    from consumer import kafka_io
    from consumer.runner import Consumer, ConsumeReport
    from schemas.errors import BrokerUnavailable

    calls = [0]
    real_commit = kafka_io.GroupConsumer.commit

    def failing_commit(self: kafka_io.GroupConsumer, next_offsets: dict[int, int]) -> bool:
        calls[0] += 1
        if calls[0] % raise_every == 0:
            raise BrokerUnavailable(f"injected: offset commit {calls[0]} failed")
        if calls[0] > 2:  # the first commits land, then the group's committed offsets go stale
            return False
        return real_commit(self, next_offsets)

    kafka_io.GroupConsumer.commit = failing_commit  # type: ignore[method-assign]
    def save(report: ConsumeReport) -> None:
        # Written aside and renamed: the test kills this process with -9 at any moment, and a kill between
        # write_text's truncate and its write left an empty report (the test then read 0 batches).
        aside = Path(f"{report_path}.tmp")
        aside.write_text(json.dumps(dataclasses.asdict(report)))
        os.replace(aside, report_path)

    consumer = Consumer(dataclasses.replace(settings, group=group))
    consumer.run(on_batch=save)


def committed_offsets(settings: Settings, group: str) -> dict[int, int]:
    """The offsets the consumer group *group* committed to Kafka (partitions without a commit are left out)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka, group_id=group, enable_auto_commit=False)
    try:
        partitions = sorted(consumer.partitions_for_topic(settings.topic) or [])
        found = {p: consumer.committed(TopicPartition(settings.topic, p)) for p in partitions}
        return {p: int(o) for p, o in found.items() if o is not None}
    finally:
        consumer.close()


def consume_from_committed_offsets(settings: Settings, stale_group: str, report_path: str) -> None:
    """A consumer that resumes where the Kafka group *stale_group* committed (stale: its commits failed),
    as a consumer trusting Kafka's offsets would, instead of the Redis checkpoint; runs until idle for 5 s."""
    from consumer.runner import Consumer

    class TrustingKafkaCommits(Consumer):
        def _on_assigned(self, partitions: list[int]) -> dict[int, int]:
            committed = committed_offsets(self.settings, stale_group)
            return {p: committed[p] for p in partitions if p in committed}

    consumer = TrustingKafkaCommits(dataclasses.replace(settings, group=f"{stale_group}-restarted"))
    try:
        report = consumer.run(idle_timeout_s=5.0)
    finally:
        consumer.close()
    Path(report_path).write_text(json.dumps(dataclasses.asdict(report)))
