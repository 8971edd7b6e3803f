"""A replicated Kafka: `deploy/local/stack.sh` with METRICFOLD_KAFKA_NODES=3 starts three KRaft nodes (a controller
quorum of three) for this session, on its own directory and ports (the `cluster` fixture, tests/cluster.py, shared
with tests/chaos/test_chaos_cluster.py); the topics metricfold creates there are read back from the brokers
(replication factor 3, min.insync.replicas=2, no unclean leader election), and a small pipeline runs end to end on
the cluster (SDK -> `metricfold consume --until-caught-up` -> the shared Redis)."""

from __future__ import annotations

import dataclasses

import pytest
from cluster import NODES, Cluster
from kafka import KafkaAdminClient

from consumer.kafka_io import delete_topics, ensure_topics, replication_plan, topic_config
from consumer.store import Store
from schemas.errors import ConfigError
from schemas.settings import Settings

from support import metricfold_cli, produce_stream, stream_events


def replicas(settings: Settings, topic: str) -> dict[int, tuple[list[int], list[int]]]:
    """Per partition of *topic*, its replicas and in-sync replicas, from the brokers' metadata."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.split(","), client_id="metricfold-test")
    try:
        (description,) = admin.describe_topics([topic])
    finally:
        admin.close()
    return {p["partition_index"]: (p["replica_nodes"], p["isr_nodes"]) for p in description["partitions"]}


def test_replication_follows_the_cluster_size_and_an_explicit_factor_wins() -> None:
    assert replication_plan(1) == (1, {"min.insync.replicas": "1", "unclean.leader.election.enable": "false"})
    assert replication_plan(2) == (2, {"min.insync.replicas": "1", "unclean.leader.election.enable": "false"})
    assert replication_plan(3) == (3, {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"})
    assert replication_plan(7)[0] == 3
    assert replication_plan(3, wanted=1) == (1, {"min.insync.replicas": "1", "unclean.leader.election.enable": "false"})
    with pytest.raises(ConfigError, match=r"replication factor 3 .* has 1"):
        replication_plan(1, wanted=3)


def test_unset_replication_factor_reads_as_none_and_the_variable_still_wins() -> None:
    assert Settings.from_env({}).replication_factor is None
    assert Settings.from_env({"METRICFOLD_REPLICATION_FACTOR": "2"}).replication_factor == 2
    with pytest.raises(ConfigError, match="replication_factor"):
        Settings(replication_factor=0)


@pytest.mark.integration
def test_three_node_stack_lists_every_node_and_every_bootstrap_server(cluster: Cluster) -> None:
    status = cluster.control("status")
    env = cluster.control("env")

    for n in range(NODES):
        assert f"Kafka node {n + 1}: running" in status.stdout, status.stdout
    assert f"export METRICFOLD_KAFKA={cluster.kafka}\n" in env.stdout
    metadata = KafkaAdminClient(bootstrap_servers=cluster.kafka.split(","), client_id="metricfold-test")
    try:
        brokers = metadata.describe_cluster()["brokers"]
        assert sorted(b["broker_id"] for b in brokers if not b["is_fenced"]) == [1, 2, 3]
    finally:
        metadata.close()


@pytest.mark.integration
def test_topics_on_three_brokers_get_three_replicas_two_in_sync_and_no_unclean_election(cluster_settings: Settings) -> None:
    for topic in (cluster_settings.topic, cluster_settings.dead_letter_topic):
        reported = topic_config(cluster_settings, topic)
        placed = replicas(cluster_settings, topic)

        assert placed and all(len(set(r)) == 3 and sorted(isr) == sorted(r) for r, isr in placed.values()), placed
        assert reported["min.insync.replicas"] == "2", topic
        assert reported["unclean.leader.election.enable"] == "false", topic
    assert len(replicas(cluster_settings, cluster_settings.topic)) == cluster_settings.partitions


@pytest.mark.integration
def test_an_explicit_replication_factor_wins_on_the_cluster(cluster_settings: Settings) -> None:
    two = dataclasses.replace(cluster_settings, topic=cluster_settings.topic + "-rf2", replication_factor=2)
    too_many = dataclasses.replace(cluster_settings, topic=cluster_settings.topic + "-rf4", replication_factor=4)
    try:
        ensure_topics(two)
        with pytest.raises(ConfigError, match="needs 4 Kafka brokers, but the cluster has 3"):
            ensure_topics(too_many)

        assert {len(r) for r, _ in replicas(two, two.topic).values()} == {2}
        assert topic_config(two, two.topic)["min.insync.replicas"] == "1"
    finally:
        delete_topics(two, [two.topic, two.dead_letter_topic])


@pytest.mark.integration
def test_sdk_to_consumer_to_redis_end_to_end_on_the_cluster(cluster_settings: Settings) -> None:
    runs, per_run = 3, 400
    produce_stream(cluster_settings, runs, per_run, seed=17)  # the SDK: acks=all, idempotent

    done = metricfold_cli(cluster_settings, "consume", "--until-caught-up", timeout=180)

    assert done.returncode == 0, done.stderr[-3000:]
    with Store(cluster_settings) as store:
        assert store.stats().get("events") == stream_events(runs, per_run)
        run = store.read_run("chaos/p2/s17r1")
    assert run["summary"]["note"] == "override s17r1"
    assert run["summary"]["loss"]["min"] <= run["summary"]["loss"]["mean"] <= run["summary"]["loss"]["max"]
