"""Sending script calls to the Redis node that serves their keys: one pipeline per node and batch (a standalone
Redis is one node; on Redis Cluster each call goes to the master of its hash slot, the masters' pipelines sent at
once from a few threads), each ending with WAIT when the node has replicas, so that what a batch wrote is on a
replica before its checkpoints advance.

A cluster that answers MOVED or ASK (a slot moved: failover, resharding), TRYAGAIN or CLUSTERDOWN, or a node that
cannot be reached, gets its slot map read again and the calls that did not run sent again (a write that did run is
skipped the second time, as already applied); when that does not help, StoreUnavailable: the consumer waits and
starts over from the checkpoints."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from redis.cluster import RedisCluster

from consumer.store.client import _shown, _text
from schemas.errors import StoreUnavailable
from schemas.settings import Settings

__all__ = ["Call", "Nodes"]

#: (script, KEYS, ARGV): one EVALSHA
Call = tuple[Any, list[str], list[Any]]

#: replies that mean the slot map changed under us (or the cluster is between two of them): read it again, retry
_CLUSTER_MOVES = (redis.exceptions.AskError, redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)
_ROLE_CHECK_S = 10.0  # how long a node's count of replicas (ROLE, or CLUSTER NODES on a cluster) is trusted
_ATTEMPTS = 4
log = logging.getLogger(__name__)


class Nodes:
    """The nodes of the store's Redis, as the consumer's batches need them."""

    def __init__(self, client: redis.Redis | RedisCluster, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.cluster = isinstance(client, RedisCluster)
        self._replicas: dict[str, tuple[float, int]] = {}  # node name -> (checked at, replicas to wait for)
        self._warned: set[str] = set()
        self._threads: ThreadPoolExecutor | None = None
        #: nodes whose WAIT failed: name -> (client, its replication offset then); see confirm()
        self._unconfirmed: dict[str, tuple[redis.Redis, int]] = {}

    def run(self, calls: Sequence[Call]) -> list[Any]:
        """EVALSHA every call, one pipeline per node (one round trip each); returns each call's reply or its error
        (a ResponseError about its data). Redis unable to take the writes now raises StoreUnavailable."""
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(1, _ATTEMPTS + 1):
            failed: list[int] = []
            problem: BaseException | None = None
            groups = self._by_node(calls, todo)
            sent = self._pool().map(self._send, groups, [calls] * len(groups)) if len(groups) > 1 else [
                self._send(groups[0], calls)]
            for (_, indexes), got in zip(groups, list(sent), strict=True):
                if isinstance(got, StoreUnavailable):
                    self._refresh()  # a replica may be marked failed by now
                    raise got
                if isinstance(got, BaseException):
                    if not self.cluster:
                        raise got
                    failed += indexes
                    problem = got
                    continue
                for i, reply in zip(indexes, got, strict=True):
                    if isinstance(reply, _CLUSTER_MOVES):
                        failed.append(i)
                        problem = reply
                    else:
                        replies[i] = reply
            if not failed:
                return replies
            todo = sorted(failed)
            self._refresh()
            if attempt < _ATTEMPTS and not isinstance(problem, redis.exceptions.MovedError):
                time.sleep(0.25 * attempt)
        raise StoreUnavailable(f"the Redis Cluster did not take the writes after {_ATTEMPTS} tries: {problem}")

    def neighbours(self, lost: Sequence[str], projects: dict[str, str]) -> list[str]:
        """The projects (name -> one of its keys) served by the node of any key in *lost*: on a cluster, those that
        node's failover may have taken writes from; a standalone Redis: none (it lost its checkpoints too, and
        the resume points are right as they are)."""
        if not self.cluster or not lost:
            return []
        self._refresh()
        cluster: RedisCluster = self.client  # type: ignore[assignment]
        nodes = {cluster.get_node_from_key(key).name for key in lost}  # type: ignore[no-untyped-call]
        return [project for project, key in projects.items()
                if cluster.get_node_from_key(key).name in nodes]  # type: ignore[no-untyped-call]

    def _send(self, group: tuple[redis.Redis, list[int]], calls: Sequence[Call]) -> list[Any] | BaseException:
        """One node's pipeline (a thread of the pool when there are several): its replies, or what went wrong."""
        node, indexes = group
        try:
            return self._node_pipeline(node, [calls[i] for i in indexes])
        except (redis.ConnectionError, redis.TimeoutError, StoreUnavailable) as exc:
            return exc

    def _pool(self) -> ThreadPoolExecutor:
        """Threads that send the nodes' pipelines at once (a cluster's masters work in parallel)."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="metricfold-redis")
        return self._threads

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False)
            self._threads = None

    def _by_node(self, calls: Sequence[Call], todo: list[int]) -> list[tuple[redis.Redis, list[int]]]:
        if not self.cluster:
            return [(self.client, todo)]  # type: ignore[list-item]
        groups: dict[str, tuple[redis.Redis, list[int]]] = {}
        for i in todo:
            node = self.client.get_node_from_key(calls[i][1][0])  # type: ignore[union-attr]
            if node.name not in groups:
                groups[node.name] = (self.client.get_redis_connection(node), [])  # type: ignore[union-attr]
            groups[node.name][1].append(i)
        return list(groups.values())

    def _refresh(self) -> None:
        """Read the cluster's slot map again (after MOVED, a failover, a node gone)."""
        if not self.cluster:
            return
        self._replicas.clear()
        with contextlib.suppress(redis.RedisError, OSError):  # no node answers yet: the next try reads it again
            self.client.nodes_manager.initialize()  # type: ignore[union-attr]

    def _node_pipeline(self, node: redis.Redis, calls: list[Call]) -> list[Any]:
        """One node's calls in one pipeline, ending with WAIT for its replicas; a script the node does not hold
        (NOSCRIPT: it restarted, was promoted, or SCRIPT FLUSH) is loaded there and the calls are sent again (a call
        that got NOSCRIPT did not run)."""
        wanted = self._replicas_to_wait_for(node)
        for attempt in (1, 2):
            pipe = node.pipeline(transaction=False)
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            if wanted:
                pipe.execute_command("WAIT", wanted, self.settings.redis_wait_timeout_ms)  # type: ignore[no-untyped-call]
            replies = list(pipe.execute(raise_on_error=False))
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies) and attempt == 1:
                for script in {script for script, _, _ in calls}:
                    script.sha = node.script_load(script.script)
                continue
            break
        if wanted:
            acknowledged = replies.pop()
            if isinstance(acknowledged, Exception) or int(acknowledged) < wanted:
                self._unconfirmed[_name(node)] = (node, _role(node)[1])  # what its replicas must reach first
                self._replicas.pop(_name(node), None)  # count them again next time: one may be gone for good
                raise StoreUnavailable(
                    f"{wanted} replica(s) of the Redis node at {_name(node)} did not acknowledge the batch within "
                    f"{self.settings.redis_wait_timeout_ms} ms (WAIT answered {acknowledged}): its checkpoints stay"
                )
        return replies

    def confirm(self) -> None:
        """Raise StoreUnavailable while a node whose WAIT failed has not had its writes acknowledged by its replicas
        since (ROLE: each replica's acknowledged offset against the node's offset then). Without this, a batch read
        again after the failure finds its runs applied, writes nothing to that node, waits for nothing there, and
        the checkpoints would advance over writes no replica has. A node that no longer answers as a master is let
        go: if its failover lost those writes, the next write to their runs finds it (writer.py)."""
        for name, (node, offset) in list(self._unconfirmed.items()):
            try:
                role = _role(node)
            except (redis.RedisError, OSError):
                role = ("", 0, [])
            wanted = self._replicas_to_wait_for(node) if role[0] == "master" else 0
            acknowledged = sum(1 for replica in role[2] if int(replica[2]) >= offset)
            if acknowledged < wanted:
                raise StoreUnavailable(f"{wanted} replica(s) of the Redis node at {name} have not acknowledged the "
                                       f"writes of a batch whose WAIT failed ({acknowledged} have): its checkpoints stay")
            del self._unconfirmed[name]

    def waits(self, node: redis.Redis) -> bool:
        """Whether a batch written to *node* waits for its replicas."""
        return self._replicas_to_wait_for(node) > 0

    def _replicas_to_wait_for(self, node: redis.Redis) -> int:
        """min(METRICFOLD_REDIS_WAIT_REPLICAS, the node's replicas): on a cluster, the replicas its configuration
        lists for it (not those marked failed), connected or not, since a replica whose link is down can still win an
        election for a while; a standalone Redis, the replicas connected to it by its last ROLE. Checked again
        every _ROLE_CHECK_S."""
        if self.settings.redis_wait_replicas <= 0:
            return 0
        name = _name(node)
        checked = self._replicas.get(name)
        if checked is None or time.monotonic() - checked[0] > _ROLE_CHECK_S:
            count = self._cluster_replicas(node) if self.cluster else self._connected_replicas(node, name)
            checked = (time.monotonic(), count)
            self._replicas[name] = checked
        return min(self.settings.redis_wait_replicas, checked[1])

    def _cluster_replicas(self, node: redis.Redis) -> int:
        """The replicas the cluster's configuration lists for *node* (CLUSTER NODES on it: those whose master is its
        id), connected or not, but not those marked failed. (CLUSTER SLOTS is no help: it leaves out a replica whose
        replication offset the cluster has not heard of yet.)"""
        try:
            reply = node.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return 0
        rows: list[tuple[str, str, str]] = []  # (id, flags, master id)
        if isinstance(reply, dict):  # redis-py's parsed form: {address: {node_id, flags, master_id, ...}}
            rows = [(str(v.get("node_id", "")), str(v.get("flags", "")), str(v.get("master_id", ""))) for v in reply.values()]
        else:
            for line in _text(reply).splitlines():
                parts = line.split()
                if len(parts) >= 4:
                    rows.append((parts[0], parts[2], parts[3]))
        me = next((node_id for node_id, flags, _ in rows if "myself" in flags), None)
        return sum(1 for _, flags, master in rows
                   if me is not None and master == me and "fail" not in flags.replace("fail?", ""))

    def _connected_replicas(self, node: redis.Redis, name: str) -> int:
        try:
            role = _role(node)
        except redis.exceptions.ResponseError as exc:  # no ROLE for this user (an ACL from before WAIT): no WAIT
            if name not in self._warned:
                self._warned.add(name)
                log.warning("Redis at %s refused ROLE (%s): the checkpoints do not wait for its replicas; give "
                            "the consumer's user the rules of `python -m consumer.acl`", name, _shown(exc))
            return 0
        return len(role[2]) if role[0] == "master" else 0


def _role(node: redis.Redis) -> tuple[str, int, list[Any]]:
    """ROLE of a node: (master, its replication offset, [[host, port, acknowledged offset], ...]) for a master."""
    reply = node.execute_command("ROLE")  # type: ignore[no-untyped-call]
    if not reply or _text(reply[0]) != "master":
        return (_text(reply[0]) if reply else "", 0, [])
    return ("master", int(reply[1]), list(reply[2]))


def _name(node: redis.Redis) -> str:
    kwargs = node.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '')}:{kwargs.get('port', '')}{kwargs.get('path', '')}"
