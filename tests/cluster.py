"""A 3-node Kafka for the tests (`deploy/local/stack.sh` with METRICFOLD_KAFKA_NODES=3 in a directory of its own, on
free loopback ports), and what the fault scenarios ask of it: which node leads most partitions of a topic, which
node leads the controller quorum, and waiting until every partition has its full ISR again.

One cluster serves the whole pytest session (the `cluster` fixture in tests/conftest.py): tests/test_kafka_cluster.py
and tests/chaos/test_chaos_cluster.py share it, each test on topics of its own."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from support import port_free

__all__ = ["NODES", "Cluster", "start_cluster"]

REPO = Path(__file__).resolve().parent.parent
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.sh"
#: (first broker port, first controller port) to try; node N listens on +2(N-1) of each (stack.sh)
PORT_CHOICES = [(19592, 19593), (19692, 19693), (19792, 19793)]
NODES = 3



@dataclasses.dataclass(frozen=True)
class Cluster:
    """The session's 3-node Kafka (stack.sh in *stack_dir* with these ports); `control` runs stack.sh commands,
    `node` one node's (kill-kafka-node, start-kafka-node, ...) and fails with its output if it fails."""

    stack_dir: Path
    kafka_port: int
    controller_port: int

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "METRICFOLD_STACK_DIR": str(self.stack_dir), "METRICFOLD_KAFKA_NODES": str(NODES),
                "METRICFOLD_KAFKA_PORT": str(self.kafka_port), "METRICFOLD_KAFKA_CONTROLLER_PORT": str(self.controller_port)}

    @property
    def kafka(self) -> str:
        return ",".join(f"127.0.0.1:{self.kafka_port + 2 * n}" for n in range(NODES))

    def control(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(STACK_SCRIPT), *command], cwd=REPO, env=self.env, capture_output=True, text=True)

    def node(self, command: str, n: int) -> None:
        """`stack.sh COMMAND N` (kill-kafka-node, stop-kafka-node, start-kafka-node, ...); raises if it fails."""
        done = self.control(command, str(n))
        if done.returncode != 0:
            raise RuntimeError(f"stack.sh {command} {n} failed: {done.stdout}{done.stderr}")

    def running(self) -> list[int]:
        """The nodes whose process is alive (from stack.sh's pid files)."""
        alive = []
        for n in range(1, NODES + 1):
            try:
                os.kill(int((self.stack_dir / "kafka" / f"node{n}" / "kafka.pid").read_text()), 0)
            except (OSError, ValueError):
                continue
            alive.append(n)
        return alive

    def ensure_running(self) -> None:
        """Start every node that is not running (a failed scenario may have left one down)."""
        if len(self.running()) < NODES:
            done = self.control("start-kafka")
            if done.returncode != 0:
                raise RuntimeError(f"stack.sh start-kafka failed: {done.stdout}{done.stderr}")

    @contextlib.contextmanager
    def _admin(self) -> Iterator[KafkaAdminClient]:
        servers = [f"127.0.0.1:{self.kafka_port + 2 * (n - 1)}" for n in self.running()] or self.kafka.split(",")
        admin = KafkaAdminClient(bootstrap_servers=servers, client_id="metricfold-test", request_timeout_ms=10_000)
        try:
            yield admin
        finally:
            admin.close()

    def partitions(self, *topics: str) -> dict[tuple[str, int], tuple[int, list[int], list[int]]]:
        """Per (topic, partition): its leader, replicas and in-sync replicas, from the brokers' metadata (every topic,
        internal ones included, when none is named)."""
        with self._admin() as admin:
            described = admin.describe_topics(list(topics) or None)
        return {(t["name"], p["partition_index"]): (p["leader_id"], p["replica_nodes"], p["isr_nodes"])
                for t in described for p in t["partitions"]}

    def partition_leader(self, topic: str) -> int:
        """The node that leads most partitions of *topic* (the lowest id among equals)."""
        led = collections.Counter(leader for leader, _, _ in self.partitions(topic).values() if leader >= 0)
        return min(led, key=lambda n: (-led[n], n))

    def leaders(self, topic: str) -> set[int]:
        """The nodes that lead a partition of *topic* (-1: a partition without a leader)."""
        return {leader for leader, _, _ in self.partitions(topic).values()}

    def quorum_leader(self) -> int:
        """The controller quorum's leader: of the running nodes' `__cluster_metadata-0/quorum-state` files (each
        written when its node sees a new epoch), the leader named at the highest epoch."""
        seen: list[tuple[int, int]] = []
        for n in self.running():
            path = self.stack_dir / "kafka" / f"node{n}" / "data" / "__cluster_metadata-0" / "quorum-state"
            with contextlib.suppress(OSError, ValueError):  # being rewritten: the other nodes tell
                state = json.loads(path.read_text())
                if state.get("leaderId", -1) >= 0:
                    seen.append((int(state["leaderEpoch"]), int(state["leaderId"])))
        if not seen:
            raise RuntimeError(f"no running node of {self.stack_dir} names a controller quorum leader")
        return max(seen)[1]

    def wait_full_isr(self, *topics: str, timeout: float = 90.0) -> float:
        """Wait until every partition of *topics* (of every topic when none is named: __consumer_offsets too) has a
        leader and all NODES replicas in sync; return the seconds it took. Raises TimeoutError if it does not."""
        began = time.monotonic()
        lagging: object = None
        while time.monotonic() - began < timeout:
            with contextlib.suppress(KafkaError, OSError):
                found = self.partitions(*topics)
                lagging = {tp: isr for tp, (leader, replicas, isr) in found.items()
                           if leader < 0 or len(replicas) != NODES or sorted(isr) != sorted(replicas)}
                if not lagging and (found or not topics):  # no topic at all yet: nothing lags
                    return time.monotonic() - began
            time.sleep(0.25)
        raise TimeoutError(f"partitions still without their full ISR after {timeout:.0f} s: {lagging}")

    def wait_not_leading(self, node: int, topic: str, timeout: float = 60.0) -> float:
        """Wait until every partition of *topic* has a leader other than *node* (after it died: the controller
        fenced it and moved its leaderships); return the seconds it took."""
        began = time.monotonic()
        leaders: set[int] = set()
        while time.monotonic() - began < timeout:
            with contextlib.suppress(KafkaError, OSError):
                leaders = self.leaders(topic)
                if node not in leaders and -1 not in leaders:
                    return time.monotonic() - began
            time.sleep(0.1)
        raise TimeoutError(f"node {node} still leads (or a partition has no leader) after {timeout:.0f} s: {leaders}")


@contextlib.contextmanager
def start_cluster(stack_dir: Path) -> Iterator[Cluster]:
    """Start three Kafka nodes in *stack_dir* on the first free ports of PORT_CHOICES; kill them when done."""
    for kafka_port, controller_port in PORT_CHOICES:
        if all(port_free(kafka_port + 2 * n) and port_free(controller_port + 2 * n) for n in range(NODES)):
            break
    else:
        raise RuntimeError(f"no free loopback ports for a 3-node Kafka among {PORT_CHOICES}")
    made = Cluster(stack_dir, kafka_port, controller_port)
    try:
        started = made.control("start-kafka")
        if started.returncode != 0:
            raise RuntimeError(f"stack.sh start-kafka failed: {started.stdout}{started.stderr}")
        yield made
    finally:
        made.control("kill-kafka")  # its data is thrown away: no need for a clean stop, which takes 30 s (all nodes
        stopped = made.control("down")  # stopping at once wait for a controller quorum that is leaving); then tidy up
        if stopped.returncode != 0:
            raise RuntimeError(f"stack.sh down failed: {stopped.stdout}{stopped.stderr}")
