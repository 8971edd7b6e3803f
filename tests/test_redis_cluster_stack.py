"""The local Redis Cluster of `METRICFOLD_REDIS_MODE=cluster` (deploy/local/redis-cluster.sh), on real redis-server
processes: its topology and settings as the nodes report them, a failover after kill -9 of a master (a key
acknowledged by the replica survives it), the node coming back as a replica, `status` and `down`; and metricfold
refusing to run on a cluster by name, before writing anything, with no secret in what it prints."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from consumer.store import Store
from schemas.errors import ConfigError
from schemas.settings import Settings

from support import port_free

REPO = Path(__file__).resolve().parent.parent
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.sh"
NODES = 6
#: first ports to try; node N listens on +N-1 and its cluster bus on +N-1+10000
PORT_CHOICES = (16779, 16879, 16979)



@dataclasses.dataclass(frozen=True)
class RedisClusterStack:
    stack_dir: Path
    port: int

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "METRICFOLD_STACK_DIR": str(self.stack_dir), "METRICFOLD_REDIS_PORT": str(self.port),
                "METRICFOLD_REDIS_MODE": "cluster"}

    def control(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(STACK_SCRIPT), *command], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=120)

    def password(self, user: str = "default") -> str:
        return (self.stack_dir / "secrets" / f"redis-{user}.password").read_text().strip()

    def node(self, n: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port + n - 1, password=self.password(), socket_timeout=5,
                           decode_responses=True)

    def pid(self, n: int) -> int | None:
        try:
            pid = int((self.stack_dir / "redis" / f"node{n}" / "redis.pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

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


@pytest.fixture(scope="module")
def rcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterStack]:
    port = next((p for p in PORT_CHOICES if all(port_free(p + i) and port_free(p + i + 10000) for i in range(NODES))), None)
    if port is None:
        pytest.fail(f"no 6 free loopback ports (and +10000) from any of {PORT_CHOICES}")
    made = RedisClusterStack(tmp_path_factory.mktemp("redis-cluster"), port)
    try:
        started = made.control("start-redis")
        assert started.returncode == 0, started.stdout + started.stderr
        yield made
    finally:
        made.control("kill-redis")


def _wait(condition: object, what: str, timeout: float = 30.0) -> float:
    """Poll *condition* (a callable) until true; the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(redis.RedisError):
            if condition():  # type: ignore[operator]
                return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_three_masters_three_replicas_every_slot_served(rcluster: RedisClusterStack) -> None:
    nodes = rcluster.cluster_nodes(via=1)
    assert len(nodes) == NODES
    masters = [n for n in nodes if "master" in n["flags"]]
    replicas = [n for n in nodes if "slave" in n["flags"]]
    assert len(masters) == 3 and len(replicas) == 3
    assert sorted(r["master"] for r in replicas) == sorted(m["id"] for m in masters)  # one replica per master
    with rcluster.node(1) as client:
        info = client.cluster("info")
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_slots_assigned"]) == int(info["cluster_slots_ok"]) == 16384
    assert int(info["cluster_size"]) == 3
    for n in range(1, NODES + 1):
        with rcluster.node(n) as client:
            config = {key: client.config_get(key)[key] for key in ("appendonly", "appendfsync", "cluster-node-timeout")}
            users = client.acl_users()
            assert client.info("replication").get("master_link_status", "up") == "up"
        assert config == {"appendonly": "yes", "appendfsync": "everysec", "cluster-node-timeout": "2000"}
        assert {"default", "metricfold-consumer", "metricfold-reader"} <= set(users)
        conf = rcluster.stack_dir / "redis" / f"node{n}" / "redis.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600  # it holds masterauth


def test_status_names_every_node_and_its_role(rcluster: RedisClusterStack) -> None:
    done = rcluster.control("status")  # exits 1: this stack directory runs no Kafka
    assert "[stack] Kafka: stopped\n" in done.stdout and done.returncode == 1, done.stdout + done.stderr
    for n in range(1, NODES + 1):
        assert f"Redis node {n}: running, pid {rcluster.pid(n)}, 127.0.0.1:{rcluster.port + n - 1}, " in done.stdout
    assert done.stdout.count(", master\n") == 3 and done.stdout.count(", slave\n") == 3
    assert "cluster_state:ok" in done.stdout
    assert rcluster.password() not in done.stdout + done.stderr


def test_metricfold_refuses_a_cluster_by_name_and_writes_nothing(rcluster: RedisClusterStack, settings: Settings) -> None:
    password = rcluster.password("metricfold-consumer")
    on_cluster = dataclasses.replace(settings, redis=f"redis://127.0.0.1:{rcluster.port}/0",
                                     redis_username="metricfold-consumer", redis_password=password)
    with pytest.raises(ConfigError, match="Redis Cluster node, and metricfold does not run on Redis Cluster yet"), \
            Store(on_cluster) as store:
        store.ensure_generation()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICFOLD_")}
    env |= {"METRICFOLD_REDIS_USERNAME": "metricfold-consumer", "METRICFOLD_REDIS_PASSWORD": password}
    for command in (["consume", "--until-caught-up"], ["runs", "acme/vision"]):
        done = subprocess.run(
            [sys.executable, "-m", "consumer.cli", *command, "--kafka", settings.kafka, "--topic", settings.topic,
             "--redis", f"redis://127.0.0.1:{rcluster.port + 1}/0"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.strip().splitlines()[-1].startswith(
            f"metricfold: error: Redis at redis://127.0.0.1:{rcluster.port + 1}/0: it is a Redis Cluster node"), done.stderr
        assert "Traceback" not in done.stderr and password not in done.stdout + done.stderr
    for n in range(1, NODES + 1):
        with rcluster.node(n) as client:
            assert client.dbsize() == 0  # nothing was written anywhere


def test_kill_9_of_a_master_its_replica_takes_over_and_it_returns_as_replica(rcluster: RedisClusterStack) -> None:
    nodes = rcluster.cluster_nodes(via=1)
    victim = next(n for n in nodes if "master" in n["flags"] and n["slots"])
    victim_n = int(victim["port"]) - rcluster.port + 1
    heir = next(n for n in nodes if n["master"] == victim["id"])
    heir_n = int(heir["port"]) - rcluster.port + 1
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", rcluster.port + i)  # type: ignore[no-untyped-call]
                                         for i in range(NODES)],
                          password=rcluster.password(), decode_responses=True, socket_timeout=5)
    try:
        # keys in every master's slots, each acknowledged by its replica (WAIT) before the kill
        keys = [f"k{i}" for i in range(60)]
        for key in keys:
            client.set(key, key.upper())
        for n in range(1, NODES + 1):
            with rcluster.node(n) as node:
                if node.info("replication")["role"] == "master":
                    assert node.execute_command("WAIT", 1, 5000) == 1
        killed = rcluster.control("kill-redis-node", str(victim_n))
        assert killed.returncode == 0, killed.stdout + killed.stderr
        assert rcluster.pid(victim_n) is None

        def heir_serves() -> bool:
            with rcluster.node(heir_n) as node:
                return bool(node.info("replication")["role"] == "master" and node.cluster("info")["cluster_state"] == "ok")
        took = _wait(heir_serves, f"node {heir_n} promoted in place of node {victim_n}")
        assert took < 20  # cluster-node-timeout 2000 ms: detection, then the election
        # the cluster serves every key again, none lost
        _wait(lambda: [client.get(key) for key in keys] == [key.upper() for key in keys], "every key readable")
        client.set("after-failover", "1")

        started = rcluster.control("start-redis-node", str(victim_n))
        assert started.returncode == 0, started.stdout + started.stderr
        with rcluster.node(victim_n) as node:
            replication = node.info("replication")
        assert replication["role"] == "slave" and replication["master_port"] == rcluster.port + heir_n - 1
        assert replication["master_link_status"] == "up"
        assert client.get("after-failover") == "1"
    finally:
        client.close()


def test_down_stops_every_node(rcluster: RedisClusterStack) -> None:
    pids = [rcluster.pid(n) for n in range(1, NODES + 1)]
    assert all(pids)
    done = rcluster.control("down")
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(rcluster.pid(n) is None for n in range(1, NODES + 1))
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # type: ignore[arg-type]
    assert all(port_free(rcluster.port + i) for i in range(NODES))
    status = rcluster.control("status")
    assert status.returncode == 1 and status.stdout.count(": stopped") >= NODES
