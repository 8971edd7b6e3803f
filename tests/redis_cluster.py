"""A local Redis Cluster for the tests (`deploy/local/stack.sh start-redis` with METRICFOLD_REDIS_MODE=cluster in a
directory of its own: 3 masters + 3 replicas of Debian's redis-server on free loopback ports), and what the tests
ask of it: a node's client, its pid, its role, the cluster's view of its nodes, and waiting for a healthy cluster.

One cluster serves the whole pytest session (the `redis_cluster` fixture in tests/conftest.py), started on first use;
tests/test_redis_cluster_stack.py starts one of its own (it tests `down`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from schemas.settings import Settings

from support import port_free

__all__ = ["BOTH_MODES", "NODES", "RedisClusterStack", "fresh_settings_in", "start_redis_cluster", "wait_for"]

REPO = Path(__file__).resolve().parent.parent
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.sh"
NODES = 6
#: first ports to try; node N listens on +N-1 and its cluster bus on +N-1+10000
PORT_CHOICES = (16779, 16879, 16979, 17079, 17479, 17579, 17679)  # (the last three: for sessions run side by side)
#: a test marked so runs twice, on the standalone Redis and on the session's Redis Cluster (the `redis_mode` fixture of
#: tests/conftest.py, given as a parameter): for a module of which only some tests run on both (not REDIS_MODES)
BOTH_MODES = pytest.mark.parametrize("redis_mode", ("standalone", "cluster"), indirect=True)


@dataclasses.dataclass(frozen=True)
class RedisClusterStack:
    stack_dir: Path
    port: int

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "METRICFOLD_STACK_DIR": str(self.stack_dir), "METRICFOLD_REDIS_PORT": str(self.port),
                "METRICFOLD_REDIS_MODE": "cluster"}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def control(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(STACK_SCRIPT), *command], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=120)

    def node_command(self, command: str, n: int) -> None:
        """`stack.sh COMMAND N` (kill-redis-node, start-redis-node, stop-redis-node); raises if it fails."""
        done = self.control(command, str(n))
        if done.returncode != 0:
            raise RuntimeError(f"stack.sh {command} {n} failed: {done.stdout}{done.stderr}")

    def password(self, user: str = "default") -> str:
        return (self.stack_dir / "secrets" / f"redis-{user}.password").read_text().strip()

    def node(self, n: int) -> redis.Redis:
        """A plain client of node *n* (1-6), as the administrator."""
        return redis.Redis(host="127.0.0.1", port=self.port + n - 1, password=self.password(), socket_timeout=5,
                           decode_responses=True)

    def client(self) -> RedisCluster:
        """A cluster client, as the administrator."""
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", self.port + n) for n in range(NODES)],
                            password=self.password(), socket_timeout=5)

    def every_node(self, action: Callable[[redis.Redis], object]) -> None:
        """Run *action* on every node that answers (ACL SETUSER, ACL DELUSER: each node keeps its own users)."""
        for n in range(1, NODES + 1):
            with contextlib.suppress(redis.ConnectionError), self.node(n) as client:
                action(client)

    def on_cluster(self, settings: Settings) -> Settings:
        """*settings* pointed at this cluster (its first node's URL), logged in as its administrator."""
        return dataclasses.replace(settings, redis=self.url, redis_username=None, redis_password=self.password())

    def delete_namespace(self, namespace: str) -> None:
        """UNLINK every key of *namespace* (and of the namespaces that start with it) on every master."""
        with contextlib.suppress(redis.RedisError), self.client() as client:
            for key in list(client.scan_iter(match=f"{namespace}*", count=1000)):
                client.unlink(key)

    def pid(self, n: int) -> int | None:
        try:
            pid = int((self.stack_dir / "redis" / f"node{n}" / "redis.pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def role(self, n: int) -> str:
        """master or slave, as node *n* says (ROLE)."""
        with self.node(n) as client:
            return str(client.execute_command("ROLE")[0])

    def master_of(self, key: str) -> int:
        """The node (1-6) serving *key*'s slot now."""
        with self.client() as client:
            node = client.get_node_from_key(key)
            return int(node.port) - self.port + 1

    def cluster_nodes(self, via: int) -> list[dict[str, str]]:
        """CLUSTER NODES of node *via*: per node its port, flags (master/slave, fail), master id, slots."""
        with self.node(via) as client:
            text = client.execute_command("CLUSTER", "NODES")
        if isinstance(text, dict):  # redis-py parses it into {address: info}
            return [{"port": address.split(":")[1].split("@")[0], "id": info["node_id"], "flags": info["flags"],
                     "master": info["master_id"], "slots": " ".join("-".join(map(str, s)) for s in info["slots"])}
                    for address, info in text.items()]
        rows = []
        for line in text.splitlines():
            parts = line.split()
            rows.append({"port": parts[1].split(":")[1].split("@")[0], "id": parts[0], "flags": parts[2],
                         "master": parts[3], "slots": " ".join(parts[8:])})
        return rows

    def ensure_running(self) -> None:
        """Every node running again and the cluster healthy (a failed scenario may have left one down)."""
        for n in range(1, NODES + 1):
            if self.pid(n) is None:
                self.node_command("start-redis-node", n)
        wait_for(self.healthy, "a healthy Redis Cluster (cluster_state ok, 3 masters with a synced replica each)", 60)

    def healthy(self) -> bool:
        try:
            rows = self.cluster_nodes(1)
            masters = [r for r in rows if "master" in r["flags"] and "fail" not in r["flags"] and r["slots"]]
            replicas = [r for r in rows if "slave" in r["flags"] and "fail" not in r["flags"]]
            with self.node(1) as client:
                ok = "cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
            return ok and len(masters) == 3 and len(replicas) == 3 and all(self._synced(int(r["port"])) for r in replicas)
        except (redis.RedisError, OSError):
            return False

    def _synced(self, port: int) -> bool:
        with self.node(port - self.port + 1) as client:
            return client.info("replication").get("master_link_status") == "up"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Poll *condition* until it holds; returns the seconds it took, fails naming *what* after *timeout*."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {timeout:.0f} s")


@contextlib.contextmanager
def start_redis_cluster(stack_dir: Path) -> Iterator[RedisClusterStack]:
    """Start a cluster on the first free ports of PORT_CHOICES; kill it at the end."""
    port = next((p for p in PORT_CHOICES if all(port_free(p + i) and port_free(p + i + 10000) for i in range(NODES))), None)
    if port is None:
        raise RuntimeError(f"no 6 free loopback ports (and +10000) from any of {PORT_CHOICES}")
    made = RedisClusterStack(stack_dir, port)
    try:
        started = made.control("start-redis")
        if started.returncode != 0:
            raise RuntimeError(f"stack.sh start-redis (cluster) failed: {started.stdout}{started.stderr}")
        yield made
    finally:
        made.control("kill-redis")


@contextlib.contextmanager
def fresh_settings_in(stack: Any, mode: str, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """`stack.fresh_settings()` (a fresh topic and namespace, deleted afterwards) on the shared Redis (mode
    standalone) or on the session's Redis Cluster (mode cluster): tests/conftest.py's `settings`, for a module-scoped
    fixture (*stack* is conftest's Stack, *request* the fixture's, to reach the session's cluster)."""
    if mode != "cluster":
        with stack.fresh_settings() as made:
            yield made
        return
    rcluster: RedisClusterStack = request.getfixturevalue("redis_cluster")
    rcluster.ensure_running()
    with stack.fresh_settings() as made:
        try:
            yield rcluster.on_cluster(made)
        finally:
            rcluster.delete_namespace(made.namespace)
