"""The local Redis Cluster of `METRICFOLD_REDIS_MODE=cluster` (deploy/local/redis-cluster.sh), on real redis-server
processes: its topology and settings as the nodes report them, a failover after kill -9 of a master (a key
acknowledged by the replica survives it), the node coming back as a replica, `status` and `down`; and metricfold
finding the cluster from one node's URL and folding each project into one hash slot, its projects spread over the
masters, with no secret in what it logs or prints.

The module starts a cluster of its own (tests/redis_cluster.py's start_redis_cluster), not the session's: it tests
`down`, and its kill -9 test changes which nodes are masters."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis_cluster import NODES, RedisClusterStack, start_redis_cluster, wait_for

import producer as mf
from consumer.digest import digest_generation
from consumer.runner import Consumer
from consumer.store import Store
from schemas.settings import Settings

from support import consume_all, port_free

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterStack]:
    with start_redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as made:
        yield made


def _answers(condition: Callable[[], bool]) -> Callable[[], bool]:
    """*condition*, False while the cluster answers with an error (a failover under way)."""
    def checked() -> bool:
        try:
            return condition()
        except redis.RedisError:
            return False
    return checked


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


#: four projects; their hash slots (CRC16 of entity/project) fall in each of the three masters' slot ranges
PROJECTS = ("acme/vision", "acme/nlp", "acme/video", "lab/vision")
_TAG = re.compile(rb"\{([^}]+)\}")


def test_metricfold_finds_the_cluster_from_one_url_and_folds_each_project_into_one_slot(
    rcluster: RedisClusterStack, settings: Settings, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """METRICFOLD_REDIS names one node (the second: any node will do); Store uses a RedisCluster, the SDK's runs of
    four projects are folded there, every key of a project is in the project's one hash slot, on that slot's master,
    the projects are spread over more than one master, and the fold equals a fold of the same topic into the
    standalone Redis (digests). The CLI finds the cluster too, from the whole URL in METRICFOLD_REDIS (password
    included): `consume` and `runs`. Neither the fold (its log, at DEBUG), nor what the test printed, nor the CLI's
    output (-v) shows the password."""
    on_cluster = dataclasses.replace(rcluster.on_cluster(settings), redis=f"redis://127.0.0.1:{rcluster.port + 1}/0")
    password = rcluster.password()
    try:
        with caplog.at_level(logging.DEBUG):
            with Store(on_cluster) as store:
                assert isinstance(store.client, RedisCluster)
            for n, project in enumerate(PROJECTS):
                entity, name = project.split("/")
                for r in range(2):
                    with mf.init(entity=entity, project=name, run_id=f"r{r}", settings=on_cluster) as run:
                        run.define_metric("loss", summary="min")
                        for step in range(5):
                            run.log({"loss": 1.0 / (step + n + r + 1)}, step=step)
            consumer = Consumer(on_cluster)
            try:
                report = consumer.run(until_caught_up=True)
            finally:
                consumer.close()
        # the CLI, with the whole URL in METRICFOLD_REDIS this time (the password in it): `consume` (caught up
        # already) says where it folds to, `runs` reads
        env = {k: v for k, v in os.environ.items() if not k.startswith("METRICFOLD_")}
        env["METRICFOLD_REDIS"] = f"redis://default:{password}@127.0.0.1:{rcluster.port + 1}/0"
        connection = ["--kafka", settings.kafka, "--topic", settings.topic, "--namespace", settings.namespace]
        consumed, listed = (subprocess.run([sys.executable, "-m", "consumer.cli", "-v", *command, *connection], cwd=REPO,
                                           env=env, capture_output=True, text=True, timeout=120)
                            for command in (["consume", "--until-caught-up"], ["runs", "acme/video"]))
        printed = capsys.readouterr()

        assert report.events_applied == len(PROJECTS) * 2 * (1 + 1 + 5 + 1)  # started, define, 5 logs, finished
        # (each checked into a plain bool: a failure must not show the processes' environment or arguments)
        consume_ok = consumed.returncode == 0 and f"127.0.0.1:{rcluster.port + 1}" in consumed.stdout + consumed.stderr
        runs_ok = listed.returncode == 0 and "2 of 2 runs" in listed.stdout
        assert consume_ok, "metricfold consume failed on the cluster (its output is not shown: it may hold a password)"
        assert runs_ok, "metricfold runs failed on the cluster (its output is not shown: it may hold a password)"
        assert "assigned partitions" in caplog.text  # (the log is there to show no password)
        with Store(on_cluster) as store:
            assert store.read_run("lab/vision/r1")["summary"]["loss"] == {"min": 1.0 / (4 + 3 + 1 + 1)}
            keys = list(store.client.scan_iter(match=f"{on_cluster.namespace}:*", count=1000))
            cluster_digest = digest_generation(store)
        by_project: dict[str, list[bytes]] = {}
        for key in keys:
            tag = _TAG.search(key)
            if tag is not None and tag.group(1).decode() in PROJECTS:
                by_project.setdefault(tag.group(1).decode(), []).append(key)
        assert sorted(by_project) == sorted(PROJECTS)
        slots = {project: {key_slot(key) for key in found} for project, found in by_project.items()}
        assert all(len(project_slots) == 1 for project_slots in slots.values()), slots
        masters = set()
        for project, (slot,) in slots.items():
            master = rcluster.master_of(by_project[project][0].decode())
            with rcluster.node(master) as node:  # a plain client of the slot's master: no redirect
                assert "master" in node.info("replication")["role"]
                for key in by_project[project]:
                    assert node.execute_command("CLUSTER", "KEYSLOT", key) == slot
                    assert node.exists(key) == 1, key
            masters.add(master)
        assert len(masters) > 1, f"every project on node {masters}"

        consume_all(settings)  # the same topic into the standalone Redis
        with Store(settings) as standalone:
            assert not isinstance(standalone.client, RedisCluster)
            assert digest_generation(standalone) == cluster_digest

        shown = [caplog.text, printed.out, printed.err, consumed.stdout, consumed.stderr, listed.stdout, listed.stderr]
        leaks = sum(password in text for text in shown)
        assert leaks == 0  # (counted: a failure never prints a password)
    finally:
        rcluster.delete_namespace(on_cluster.namespace)


def test_kill_9_of_a_master_its_replica_takes_over_and_it_returns_as_replica(rcluster: RedisClusterStack) -> None:
    nodes = rcluster.cluster_nodes(via=1)
    victim = next(n for n in nodes if "master" in n["flags"] and n["slots"])
    victim_n = int(victim["port"]) - rcluster.port + 1
    heir = next(n for n in nodes if n["master"] == victim["id"])
    heir_n = int(heir["port"]) - rcluster.port + 1
    client = rcluster.client()
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
        took = wait_for(_answers(heir_serves), f"node {heir_n} promoted in place of node {victim_n}")
        assert took < 20  # cluster-node-timeout 2000 ms: detection, then the election
        # the cluster serves every key again, none lost
        wait_for(_answers(lambda: [client.get(key) for key in keys] == [key.encode().upper() for key in keys]),
                 "every key readable")
        client.set("after-failover", "1")

        started = rcluster.control("start-redis-node", str(victim_n))
        assert started.returncode == 0, started.stdout + started.stderr
        with rcluster.node(victim_n) as node:
            replication = node.info("replication")
        assert replication["role"] == "slave" and replication["master_port"] == rcluster.port + heir_n - 1
        assert replication["master_link_status"] == "up"
        assert client.get("after-failover") == b"1"
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
