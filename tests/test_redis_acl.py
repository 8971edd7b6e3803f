"""Least privilege: the Redis ACL users that `python -m consumer.acl` generates, on the real Redis.

Every test loads the generated rules afresh, for a throwaway user of its own namespace (never a user left over from
an earlier run, never the real `mf` namespace), and checks them with ACL DRYRUN and with the real flows: the
consumer folds, replays and digests; the reader reads (the read functions, FCALL_RO), serves the page and its live
stream, and Grafana's queries; each may run nothing else. The stack's own users are checked too: its `default`
user needs the stack's password.

The tests that load users for a namespace, or connect as them, run twice (BOTH_MODES): on the standalone Redis and
on the session's Redis Cluster, where every node keeps its own users, so the users are made and deleted on every
node (`admin_nodes`), ACL DRYRUN asks every node, and the tests' direct reads as the administrator go through a
cluster client (`redis_client`). The stack's own users and the rules' text are checked on the standalone Redis
(tests/test_redis_cluster_stack.py checks the cluster's nodes have them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio.cluster
from redis.cluster import RedisCluster
from redis_cluster import BOTH_MODES, NODES, RedisClusterStack

import consumer.store
import producer as mf
from consumer.acl import ADMIN, CONSUMER, READER, USERS, password_file, user_rules, write_acl
from consumer.digest import digest_generation
from consumer.replay import replay
from consumer.store import ChangeFeed, Store, redis_client
from consumer.store.scripts import read_library
from consumer.web.server import ServerThread
from schemas.errors import ConfigError, StoreUnavailable
from schemas.settings import Settings

from support import consume_all

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
STACK_SCRIPT = DEPLOY / "local" / "stack.sh"


@pytest.fixture
def admin_nodes(stack: Any, redis_mode: str, request: pytest.FixtureRequest) -> Iterator[list[redis.Redis]]:
    """Where ACL users live, as the administrator: the standalone Redis, or each of the cluster's nodes (every node
    keeps its own users: a user made on one is unknown to the others)."""
    if redis_mode == "cluster":
        rcluster: RedisClusterStack = request.getfixturevalue("redis_cluster")
        nodes = [rcluster.node(n) for n in range(1, NODES + 1)]
    else:
        nodes = [stack.redis()]
    yield nodes
    for node in nodes:
        node.close()


@pytest.fixture(name="redis_client")
def admin_client(stack: Any, redis_mode: str, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The administrator's client for a test's direct reads and writes: the standalone Redis, or a cluster client
    (RedisCluster: each command goes to the node of its key, FUNCTION LIST / DELETE to every master)."""
    if redis_mode == "cluster":
        rcluster: RedisClusterStack = request.getfixturevalue("redis_cluster")
        client: Any = rcluster.client()
    else:
        client = stack.redis()
    yield client
    client.close()


def make_user(nodes: list[redis.Redis], name: str, user: str, namespace: str) -> str:
    """(Re)make the ACL user *name* on every node of *nodes* with the generated rules of *user* for *namespace*;
    returns its password."""
    password = secrets.token_hex(16)
    for node in nodes:
        node.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *user_rules(user, namespace))
    return password


def delete_user(nodes: list[redis.Redis], name: str) -> None:
    for node in nodes:
        node.execute_command("ACL", "DELUSER", name)


@pytest.fixture
def namespace_users(settings: Settings, admin_nodes: list[redis.Redis]) -> Iterator[dict[str, Settings]]:
    """The consumer's and the reader's generated rules for the test namespace, loaded now (on every node of a
    cluster): settings that log in as each ("consumer", "reader"), as users named `<namespace>-consumer` and
    `<namespace>-reader`."""
    made = {}
    for role, user in (("consumer", CONSUMER), ("reader", READER)):
        name = f"{settings.namespace}-{role}"
        password = make_user(admin_nodes, name, user, settings.namespace)
        made[role] = dataclasses.replace(settings, redis_username=name, redis_password=password)
    yield made
    for role in made:
        delete_user(admin_nodes, f"{settings.namespace}-{role}")


def dryrun(nodes: list[redis.Redis], name: str, *command: str) -> str:
    """What Redis would answer *name* running *command*: "OK" when every node of *nodes* says so, else the first
    node's reason why not (or the nodes' different answers)."""
    answers = []
    for node in nodes:
        reply = node.execute_command("ACL", "DRYRUN", name, *command)
        answers.append(reply.decode() if isinstance(reply, bytes) else str(reply))
    assert answers, "no node to ask"
    if len(set(answers)) > 1 and answers.count("OK"):
        return f"the nodes answer differently: {answers}"
    return answers[0]


def refused(nodes: list[redis.Redis], name: str, commands: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The commands of *commands* that *name* may run (each should be refused)."""
    return [c for c in commands if dryrun(nodes, name, *c) == "OK"]


def allowed_not(nodes: list[redis.Redis], name: str, commands: list[tuple[str, ...]]) -> list[tuple[tuple[str, ...], str]]:
    """The commands of *commands* that *name* may not run (each should be allowed), with Redis's reason."""
    return [(c, answer) for c in commands if (answer := dryrun(nodes, name, *c)) != "OK"]


def reads(ns: str) -> list[tuple[str, ...]]:
    """What the read side runs: Store's direct reads, the read functions, the live pages' subscriptions, Grafana."""
    library = read_library()
    return [
        ("PING",),
        ("GET", f"{ns}:active"),
        ("GET", f"{ns}:g1:run:{{a/b/c}}:blob:00"),
        ("HGETALL", f"{ns}:g1:stats"),
        ("HMGET", f"{ns}:g1:run:{{a/b/c}}:meta", "name"),
        ("SISMEMBER", f"{ns}:g1:projects", "a/b"),
        ("SMEMBERS", f"{ns}:g1:project:{{a/b}}:paths"),
        ("ZRANGE", f"{ns}:g1:project:{{a/b}}:runs", "0", "499", "REV", "WITHSCORES"),
        ("ZREVRANGE", f"{ns}:g1:project:{{a/b}}:by:loss.min", "0", "49"),
        ("ZCARD", f"{ns}:g1:project:{{a/b}}:runs"),
        *(("FCALL_RO", f, "1", f"{ns}:active", ns) for f in library.functions.values()),
        ("SUBSCRIBE", f"{ns}:g1:changes:a/b"),
        ("UNSUBSCRIBE", f"{ns}:g1:changes:a/b"),
    ]


def admin_and_outside(ns: str) -> list[tuple[str, ...]]:
    """What neither metricfold user may run: server-wide, admin and dangerous commands, other namespaces."""
    return [
        ("SCRIPT", "FLUSH"), ("SCRIPT", "KILL"), ("SCRIPT", "EXISTS", "0" * 40), ("SCRIPT", "DEBUG", "NO"),
        ("FUNCTION", "FLUSH"), ("FUNCTION", "DELETE", "metricfold_reads"), ("FUNCTION", "KILL"),
        ("FUNCTION", "RESTORE", "x"), ("FUNCTION", "DUMP"), ("FUNCTION", "LIST"),
        ("SELECT", "1"), ("SWAPDB", "0", "1"), ("MOVE", f"{ns}:active", "1"), ("FLUSHALL",), ("FLUSHDB",),
        ("KEYS", "*"), ("RANDOMKEY",), ("DBSIZE",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "maxmemory", "1"),
        ("DEBUG", "SLEEP", "0"), ("SHUTDOWN",), ("MONITOR",), ("ACL", "SETUSER", "x"), ("ACL", "LIST"),
        ("CLIENT", "KILL", "ID", "1"), ("CLIENT", "LIST"), ("CLIENT", "PAUSE", "1000"), ("INFO",), ("SAVE",),
        ("BGREWRITEAOF",), ("REPLICAOF", "NO", "ONE"), ("MIGRATE", "h", "1", f"{ns}:active", "0", "1"),
        ("OBJECT", "ENCODING", f"{ns}:active"), ("DUMP", f"{ns}:active"), ("RESTORE", f"{ns}:x", "0", "x"),
        ("COPY", f"{ns}:active", f"{ns}:copy", "DB", "1"), ("SORT", f"{ns}:g1:projects"),
        ("EVAL", "return 1", "0"), ("EVAL_RO", "return 1", "0"), ("EVALSHA_RO", "0" * 40, "0"),
        ("FCALL", read_library().functions["read_run"], "1", f"{ns}:active"),
        ("GET", "mf:active"), ("GET", "outside:the:namespace"), ("SET", "outside:the:namespace", "x"),
        ("HGETALL", f"{ns}x:g1:stats"), ("SUBSCRIBE", "outside"), ("PSUBSCRIBE", f"{ns}:*"),
        ("PUBLISH", "mf:g1:changes:a/b", "c"),
        ("FCALL_RO", read_library().functions["read_run"], "1", "mf:active", "mf"),
    ]


@BOTH_MODES
def test_consumer_rules_allow_what_the_consumer_runs_and_nothing_server_wide(
    namespace_users: dict[str, Settings], admin_nodes: list[redis.Redis]
) -> None:
    ns, name = namespace_users["consumer"].namespace, namespace_users["consumer"].redis_username
    assert name is not None
    writes: list[tuple[str, ...]] = [
        ("EVALSHA", "0" * 40, "1", f"{ns}:active"), ("SCRIPT", "LOAD", "return 1"), ("FUNCTION", "LOAD", "x"),
        ("SET", f"{ns}:active", "g1"), ("HGET", f"{ns}:g1:checkpoint:t", "0"), ("HSET", f"{ns}:g1:stats", "events", "1"),
        ("HDEL", f"{ns}:g1:run:{{a/b/c}}:flat", "x"), ("HINCRBY", f"{ns}:g1:stats", "events", "1"),
        ("SADD", f"{ns}:g1:projects", "a/b"), ("ZADD", f"{ns}:g1:project:{{a/b}}:runs", "1", "c"),
        ("ZREM", f"{ns}:g1:project:{{a/b}}:runs", "c"), ("PUBLISH", f"{ns}:g1:changes:a/b", "c"),
        ("SCAN", "0", "MATCH", f"{ns}:g0:*"), ("UNLINK", f"{ns}:g0:stats"), ("TYPE", f"{ns}:g1:stats"),
        ("LRANGE", f"{ns}:g1:list", "0", "-1"),
    ]

    assert allowed_not(admin_nodes, name, reads(ns) + writes) == []
    assert refused(admin_nodes, name, [*admin_and_outside(ns), ("FCALL_RO", "f", "1", "mf:active")]) == []


@BOTH_MODES
def test_reader_rules_allow_the_reads_and_the_read_functions_only(
    namespace_users: dict[str, Settings], admin_nodes: list[redis.Redis]
) -> None:
    ns, name = namespace_users["reader"].namespace, namespace_users["reader"].redis_username
    assert name is not None
    writes_and_lua: list[tuple[str, ...]] = [
        ("SET", f"{ns}:active", "x"), ("HSET", f"{ns}:g1:stats", "events", "1"), ("DEL", f"{ns}:active"),
        ("UNLINK", f"{ns}:active"), ("EXPIRE", f"{ns}:active", "1"), ("ZADD", f"{ns}:g1:project:{{a/b}}:runs", "1", "c"),
        ("PUBLISH", f"{ns}:g1:changes:a/b", "c"), ("SCAN", "0"), ("HSCAN", f"{ns}:g1:stats", "0"),
        ("EVALSHA", "0" * 40, "0"), ("SCRIPT", "LOAD", "return 1"), ("FUNCTION", "LOAD", "x"),
        ("FCALL", "f", "0"), ("TYPE", f"{ns}:active"),
    ]

    assert allowed_not(admin_nodes, name, reads(ns)) == []
    assert refused(admin_nodes, name, admin_and_outside(ns) + writes_and_lua) == []


def test_the_rules_are_generated_for_the_namespace_given() -> None:
    for user in (CONSUMER, READER):
        rules = user_rules(user, "team-a.prod")
        assert "~team-a.prod:*" in rules and "&team-a.prod:*" in rules
        assert not any("mf:" in rule for rule in rules)
        assert rules.index("-@all") < min(i for i, rule in enumerate(rules) if rule.startswith("+"))
    assert user_rules(ADMIN, "x") == ["~*", "&*", "+@all"]
    for bad in ("a*", "a:b", "a?b", "[ab]", ""):
        with pytest.raises(ConfigError):
            user_rules(READER, bad)


@BOTH_MODES
def test_the_reader_cannot_run_lua_of_its_own_so_a_loop_cannot_block_redis(
    namespace_users: dict[str, Settings], admin_nodes: list[redis.Redis], redis_mode: str
) -> None:
    """Any Lua the reader could send, `while true do end` included, would block Redis for everyone (and the reader
    may not SCRIPT KILL). The scripts sent here are harmless: refused, or run, they never block the shared server.
    On a cluster, each node is asked directly (a reader may connect to any node, and metricfold's cluster client
    would not even send a script without keys)."""
    as_reader = namespace_users["reader"]
    if redis_mode == "cluster":
        readers = [redis.Redis(host=node.connection_pool.connection_kwargs["host"],
                               port=node.connection_pool.connection_kwargs["port"], username=as_reader.redis_username,
                               password=as_reader.redis_password, socket_timeout=5)
                   for node in admin_nodes]
    else:
        readers = [redis_client(as_reader)]
    try:
        for reader in readers:
            for call in _lua_and_writes(reader, as_reader.namespace):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    call()
    finally:
        for reader in readers:
            reader.close()


def _lua_and_writes(reader: redis.Redis, ns: str) -> list[Callable[[], object]]:
    """Lua of the reader's own (harmless), SCRIPT KILL, writes and a key outside *ns*: each refused to the reader."""
    harmless = "return redis.call('GET', KEYS[1])"
    return [
        lambda: reader.eval_ro(harmless, 1, f"{ns}:active"),
        lambda: reader.evalsha_ro("0" * 40, 0),
        lambda: reader.eval(harmless, 1, f"{ns}:active"),
        lambda: reader.script_load(harmless),
        lambda: reader.function_load(f"#!lua name={ns}_own\nredis.register_function{{function_name='{ns}_own', "
                                     "flags={'no-writes'}, callback=function() return 1 end}"),
        lambda: reader.script_kill(),
        lambda: reader.set(f"{ns}:active", "hijacked"),
        lambda: reader.publish(f"{ns}:g1:changes:a/b", "c"),
        lambda: reader.get("outside:the:namespace"),
    ]


def test_the_stacks_default_user_needs_its_password(
    stack: Any, redis_client: redis.Redis, admin_nodes: list[redis.Redis]
) -> None:
    """The split cannot be bypassed by not logging in: the running stack's `default` user has a password, and its
    metricfold users are the generated ones (a server started with the old, hand-written rules fails here)."""
    with pytest.raises(redis.AuthenticationError), redis.Redis.from_url(stack.redis_url) as anonymous:
        anonymous.ping()
    with pytest.raises(redis.AuthenticationError), redis.Redis.from_url(stack.redis_url, password="guess") as guessed:
        guessed.ping()
    default = redis_client.acl_getuser("default")
    assert "nopass" not in default["flags"] and default["passwords"]
    assert redis_client.ping()  # the tests' own login: the stack's password
    namespace = os.environ.get("METRICFOLD_NAMESPACE") or "mf"
    for user, command in ((CONSUMER, ("SCRIPT", "FLUSH")), (READER, ("EVAL_RO", "return 1", "0"))):
        assert dryrun(admin_nodes, user, *command) != "OK"
        assert dryrun(admin_nodes, user, "GET", f"{namespace}:active") == "OK"


@BOTH_MODES
def test_our_clients_send_no_client_setinfo_that_the_acl_would_refuse_and_log(settings: Settings, redis_mode: str) -> None:
    """redis-py introduces itself with CLIENT SETINFO on every new connection unless told not to; our ACL users may
    not run it (Redis 7.2+ refuses it and writes each refusal to ACL LOG; the Redis 7.0 here refuses it as unknown,
    before MONITOR could show it, so the connections' own settings are checked). On a cluster: the connections to
    every node, of the cluster client and of the live feed's asyncio one."""
    made_connections: list[Any] = []
    with consumer.store.redis_client(settings) as client:
        if isinstance(client, RedisCluster):
            nodes = client.get_nodes()  # the masters, and the replicas it has seen
            assert len([n for n in nodes if n.server_type == "primary"]) == NODES // 2
            made_connections += [n.redis_connection.connection_pool.make_connection() for n in nodes]
        else:
            made_connections.append(client.connection_pool.make_connection())

    async def feed_connections() -> list[Any]:
        feed = consumer.store.ChangeFeed(settings)
        try:
            if not isinstance(feed.client, redis.asyncio.cluster.RedisCluster):
                return [feed.client.connection_pool.make_connection()]
            await feed.client.initialize()
            nodes = feed.client.get_nodes()
            assert len([n for n in nodes if n.server_type == "primary"]) == NODES // 2
            return [node.acquire_connection() for node in nodes]
        finally:
            await feed.aclose()

    made_connections += asyncio.run(feed_connections())
    assert len(made_connections) >= (NODES if redis_mode == "cluster" else 2)  # a cluster's: every master's, twice

    for made in made_connections:
        if hasattr(made, "driver_info"):
            assert made.driver_info is None
        else:
            assert (made.lib_name, made.lib_version) == (None, None)


@BOTH_MODES
def test_reads_call_the_read_functions_and_a_reader_is_told_who_loads_them(
    namespace_users: dict[str, Settings], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = read_library(uuid.uuid4().hex)  # a library of this test's own: others' reads are not disturbed
    monkeypatch.setattr(consumer.store, "READ_LIBRARY", library)
    as_consumer, as_reader = namespace_users["consumer"], namespace_users["reader"]
    try:
        with Store(as_consumer) as store:
            store.ensure_generation()  # an active generation, nothing folded yet
        with Store(as_reader) as store, pytest.raises(StoreUnavailable, match="start `metricfold consume` once"):
            store.read_run("team/fn/r1")

        with mf.init(entity="team", project="fn", run_id="r1", settings=as_consumer) as run:
            run.log({"loss": 0.5})
        consume_all(as_consumer)  # the consumer loads the library when it starts
        assert library_everywhere(redis_client, library.name)

        with Store(as_reader) as store:
            assert store.read_projects()[1] == {"team/fn": 1}
            assert store.read_run("team/fn/r1")["flat"]["loss"] == 0.5
            assert store.read_table("team/fn", columns=["loss"]).rows[0]["values"] == {"loss": 0.5}

        redis_client.function_delete(library.name)  # FUNCTION FLUSH, or a Redis that lost its data
        assert not library_anywhere(redis_client, library.name)
        with Store(as_consumer) as store:  # a user allowed to load them does so, and reads
            assert store.read_run("team/fn/r1")["flat"]["loss"] == 0.5
        assert library_everywhere(redis_client, library.name)
    finally:
        delete_library(redis_client, library.name)


def _listed(client: redis.Redis, name: str) -> list[bool]:
    """Whether each server has the function library *name*: the standalone one, or each master of a cluster (where
    RedisCluster's FUNCTION LIST answers {node: libraries}, a dict that is never empty)."""
    listed = client.function_list(library=name)
    return [bool(v) for v in listed.values()] if isinstance(listed, dict) else [bool(listed)]


def library_everywhere(client: redis.Redis, name: str) -> bool:
    return all(_listed(client, name))


def library_anywhere(client: redis.Redis, name: str) -> bool:
    return any(_listed(client, name))


def delete_library(client: redis.Redis, name: str) -> None:
    """FUNCTION DELETE *name* wherever it is (on a cluster master by master: redis-py's FUNCTION DELETE to every
    master stops at the first that does not have it)."""
    servers = [n.redis_connection for n in client.get_primaries()] if isinstance(client, RedisCluster) else [client]
    for server in servers:
        with contextlib.suppress(redis.ResponseError):
            server.function_delete(name)


@BOTH_MODES
def test_a_consumer_user_that_may_not_load_the_read_functions_is_told_so(
    settings: Settings, admin_nodes: list[redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer.store, "READ_LIBRARY", read_library(uuid.uuid4().hex))
    name = f"{settings.namespace}-noload"
    password = make_user(admin_nodes, name, CONSUMER, settings.namespace)
    for node in admin_nodes:
        node.execute_command("ACL", "SETUSER", name, "-function|load")
    try:
        with Store(dataclasses.replace(settings, redis_username=name, redis_password=password)) as store, \
                pytest.raises(ConfigError, match=f"{name}.* may not load metricfold's read functions") as caught:
            store.load_read_functions()
        leaked = password in str(caught.value)
        assert not leaked
    finally:
        delete_user(admin_nodes, name)


@BOTH_MODES
def test_consumer_folds_replays_and_digests_and_reader_serves_with_the_generated_rules(
    namespace_users: dict[str, Settings], admin_nodes: list[redis.Redis]
) -> None:
    """... and neither is refused anything on the way (ACL LOG of every node: redis-py swallows some refusals) but
    the write the test makes the reader try."""
    as_consumer, as_reader = namespace_users["consumer"], namespace_users["reader"]
    for project in ("acl", "acl-d", "fn"):  # on a cluster, their slots are on three different masters
        with mf.init(entity="team", project=project, run_id="r1", settings=as_consumer) as run:
            run.define_metric("loss", summary="min")
            run.log({"loss": 0.5})
            run.log({"loss": 0.25})

    consume_all(as_consumer)  # the whole fold (Lua writes, checkpoints, publish) as the consumer user
    with Store(as_consumer) as store:
        live = digest_generation(store)
    report = replay(as_consumer, switch=True, progress=False, out=io.StringIO())  # SCAN + UNLINK of the old one
    assert report.digest == live

    with Store(as_reader) as store:
        assert store.read_run("team/acl/r1")["summary"]["loss"] == {"min": 0.25}
        assert store.read_table("team/acl", sort="loss.min", columns=["loss.min"]).rows[0]["values"] == {"loss.min": 0.25}
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.client.set(f"{as_reader.namespace}:active", "g2")
    with ServerThread(as_reader) as url, httpx.Client(base_url=url, timeout=10) as web:
        assert web.get("/api/runs/team/acl/r1").json()["flat"]["loss.min"] == 0.25
        assert web.get("/projects/team/acl?sort=loss.min").status_code == 200

    async def first_notice() -> str | None:
        feed = ChangeFeed(as_reader)
        try:
            async for notice in feed.watch("team/acl", tick=0.2):
                if notice is None:
                    with Store(as_consumer) as store:
                        channel = store.keys.channel("team/acl")
                    redis_client(as_consumer).publish(channel, "r1")
                    continue
                return notice
            return None
        finally:
            await feed.aclose()

    assert asyncio.run(asyncio.wait_for(first_notice(), 10)) == "r1"  # the reader may subscribe
    assert refusals(admin_nodes, [as_consumer, as_reader]) == {(as_reader.redis_username, "set")}


def refusals(nodes: list[redis.Redis], users: list[Settings]) -> set[tuple[str, str]]:
    """(user, command or key) of every ACL LOG entry of *users* on *nodes*: what Redis refused them."""
    names = {u.redis_username for u in users}
    return {(str(entry["username"]), str(entry["object"])) for node in nodes for entry in node.acl_log(count=1000)
            if entry["username"] in names}


def test_acl_files_passwords_are_random_0600_kept_and_never_written_in_clear(tmp_path: Path) -> None:
    write_acl("nsa", tmp_path / "a" / "secrets", tmp_path / "a" / "users.acl")
    write_acl("nsb", tmp_path / "b" / "secrets", tmp_path / "b" / "users.acl")
    first = (tmp_path / "a" / "users.acl").read_text()
    passwords = {user: password_file(tmp_path / "a" / "secrets", user).read_text().strip() for user in USERS}

    assert stat.S_IMODE((tmp_path / "a" / "secrets").stat().st_mode) == 0o700
    for user in USERS:
        assert stat.S_IMODE(password_file(tmp_path / "a" / "secrets", user).stat().st_mode) == 0o600
        in_clear = passwords[user] in first  # (compared here: a failure never prints a password)
        assert len(passwords[user]) >= 32 and not in_clear
    assert stat.S_IMODE((tmp_path / "a" / "users.acl").stat().st_mode) == 0o600
    assert len(set(passwords.values())) == 3  # one per user ...
    other = {password_file(tmp_path / "b" / "secrets", user).read_text().strip() for user in USERS}
    assert not other & set(passwords.values())  # ... and per stack
    assert "~nsa:*" in first and "~nsb:*" in (tmp_path / "b" / "users.acl").read_text()

    write_acl("nsa", tmp_path / "a" / "secrets", tmp_path / "a" / "users.acl")  # Redis restarts: same passwords
    assert (tmp_path / "a" / "users.acl").read_text() == first


def test_the_password_file_variable_gives_the_password_and_errors_never_show_it(tmp_path: Path) -> None:
    secret = secrets.token_hex(12)
    path = tmp_path / "redis.password"
    path.write_text(secret + "\nignored\n")

    settings = Settings.from_env({"METRICFOLD_REDIS_USERNAME": "u", "METRICFOLD_REDIS_PASSWORD_FILE": str(path)})
    read, shown = settings.redis_password == secret, secret in repr(settings)  # a failure never prints it
    assert read and not shown

    for environ, message in (
        ({"METRICFOLD_REDIS_PASSWORD_FILE": str(path), "METRICFOLD_REDIS_PASSWORD": secret}, "both set"),
        ({"METRICFOLD_REDIS_PASSWORD_FILE": str(tmp_path / "missing")}, "cannot read the password file"),
    ):
        with pytest.raises(ConfigError, match=message) as caught:
            Settings.from_env(environ)
        leaked = secret in str(caught.value)
        assert not leaked
    path.write_text("\n" + secret)
    with pytest.raises(ConfigError, match="is empty") as caught:
        Settings.from_env({"METRICFOLD_REDIS_PASSWORD_FILE": str(path)})
    leaked = secret in str(caught.value)
    assert not leaked


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_stack_sh_starts_redis_with_its_own_passwords_and_the_namespaces_users(tmp_path: Path) -> None:
    """A private Redis from deploy/local/stack.sh (start-redis only, on a free port): its ACL users are generated
    for METRICFOLD_NAMESPACE, with passwords of its own (mode 0600) that no file, log or printed line shows."""
    port = _free_port()
    env = {**os.environ, "METRICFOLD_STACK_DIR": str(tmp_path), "METRICFOLD_REDIS_PORT": str(port),
           "METRICFOLD_NAMESPACE": "aclstack"}
    run = lambda *args: subprocess.run(["bash", str(STACK_SCRIPT), *args], env=env, cwd=REPO,  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    started = run("start-redis")
    try:
        assert started.returncode == 0, started.stderr
        secrets_dir = tmp_path / "secrets"
        passwords = {user: password_file(secrets_dir, user).read_text().strip() for user in USERS}
        assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(password_file(secrets_dir, u).stat().st_mode) == 0o600 for u in USERS)
        printed = {role: run("env", role) for role in ("consumer", "reader", "admin")}
        assert f"METRICFOLD_REDIS_PASSWORD_FILE={password_file(secrets_dir, CONSUMER)}" in printed["consumer"].stdout
        assert "METRICFOLD_REDIS_USERNAME=metricfold-reader" in printed["reader"].stdout
        assert "export METRICFOLD_NAMESPACE=aclstack" in printed["admin"].stdout

        url = f"redis://127.0.0.1:{port}/0"
        with pytest.raises(redis.AuthenticationError), redis.Redis.from_url(url) as anonymous:
            anonymous.ping()
        with redis.Redis.from_url(url, password=passwords[ADMIN]) as admin:
            assert dryrun([admin], CONSUMER, "SET", "aclstack:active", "g1") == "OK"
            assert dryrun([admin], CONSUMER, "SET", "mf:active", "g1") != "OK"
            assert dryrun([admin], READER, "EVAL_RO", "return 1", "0") != "OK"
            assert admin.acl_getuser(READER)["keys"] == ["~aclstack:*"]
        for role, user in (("consumer", CONSUMER), ("reader", READER)):
            settings = Settings.from_env({**{k: v.strip() for k, v in (line.removeprefix("export ").split("=", 1)
                                           for line in printed[role].stdout.splitlines() if line.startswith("export"))}})
            same = settings.redis_password == passwords[user]  # (compared here: a failure never prints a password)
            assert settings.redis_username == user and same
            with redis_client(settings) as client:
                assert client.get("aclstack:active") is None
    finally:
        stopped = run("stop-redis")
    shown = [started.stdout, started.stderr, stopped.stdout, stopped.stderr, *(p.stdout + p.stderr for p in printed.values())]
    shown += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and "secrets" not in p.parts]
    leaks = sum(password in text for password in passwords.values() for text in shown)
    assert leaks == 0  # (counted: a failure never prints a password)


def test_tls_settings_need_rediss_and_reach_the_client() -> None:
    with pytest.raises(ConfigError, match="rediss://"):
        Settings(redis="redis://localhost:6379/0", redis_ca_cert="/etc/ssl/ca.pem")
    with pytest.raises(ConfigError, match="go together"):
        Settings(redis="rediss://localhost:6379/0", redis_client_cert="/c.pem")

    settings = Settings(
        redis="rediss://redis.example:6380/0", redis_ca_cert="/etc/ssl/ca.pem", redis_username="metricfold-reader",
        redis_password="pw", redis_client_cert="/c.pem", redis_client_key="/k.pem",
    )
    client = redis_client(settings)
    options = client.connection_pool.connection_kwargs

    assert options["ssl_ca_certs"] == "/etc/ssl/ca.pem"
    assert options["ssl_certfile"] == "/c.pem" and options["ssl_keyfile"] == "/k.pem"
    assert options["username"] == "metricfold-reader" and options["password"] == "pw"
    client.close()


@BOTH_MODES
def test_grafana_dashboard_queries_run_as_the_reader(namespace_users: dict[str, Settings]) -> None:
    """Every query of deploy/grafana/dashboards/metricfold.json, with its variables filled in, as the reader."""
    as_consumer, as_reader = namespace_users["consumer"], namespace_users["reader"]
    with mf.init(entity="team", project="graf", run_id="r1", settings=as_consumer) as run:
        run.define_metric("acc", summary="best", objective="maximize")
        run.log({"acc": 0.75, "grad": {"norm": 2.0}})
    consume_all(as_consumer)
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "metricfold.json").read_text())
    datasource = (DEPLOY / "grafana" / "provisioning" / "datasources" / "redis.yaml").read_text()
    assert "user: metricfold-reader" in datasource and '"uid": "metricfold-redis"' in json.dumps(dashboard)

    values = {"namespace": as_reader.namespace, "generation": "g1", "project": "team/graf", "sort": "acc.best", "run": "r1"}

    def fill(text: str) -> str:
        for name in sorted(values, key=len, reverse=True):
            text = text.replace(f"${name}", values[name])
        return text

    reader = redis_client(as_reader, decode=True)
    try:
        answers = {v["name"]: reader.execute_command(*fill(v["query"]).split()) for v in dashboard["templating"]["list"][1:]}
        tables = []
        for panel in dashboard["panels"]:
            target = panel["targets"][0]
            if target["command"] == "zrange":
                args = [fill(target["keyName"]), target["min"], target["max"], target["zrangeQuery"], "WITHSCORES"]
                tables.append(reader.execute_command("ZRANGE", *args))
            else:
                tables.append(reader.hgetall(fill(target["keyName"])))
    finally:
        reader.close()

    assert answers["generation"] == "g1" and answers["project"] == {"team/graf"} and answers["run"] == ["r1"]
    assert answers["sort"] == {"acc.best", "acc.best_step", "grad.norm"}
    assert tables[0] == [["r1", 0.75]] and tables[1][0][0] == "r1"
    assert tables[2] == {"acc.best": "0.75", "acc.best_step": "0", "grad.norm": "2.0"} and tables[3]["state"] == "finished"


@BOTH_MODES
def test_the_consumer_and_replay_logged_in_as_the_reader_stop_with_a_one_line_error(
    namespace_users: dict[str, Settings],
) -> None:
    """Redis refusing a command (NOPERM) is a setting to fix: `consume` and `replay` stop at once with the user named,
    no traceback and no password, instead of retrying as they do while Redis is away."""
    as_reader = namespace_users["reader"]
    password = as_reader.redis_password
    assert password is not None
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("METRICFOLD_")},
           "METRICFOLD_REDIS_USERNAME": str(as_reader.redis_username), "METRICFOLD_REDIS_PASSWORD": password}
    for command in (["consume", "--until-caught-up", "--quiet"], ["replay", "--quiet"]):
        done = subprocess.run(
            [sys.executable, "-m", "consumer.cli", *command, "--kafka", as_reader.kafka, "--redis", as_reader.redis,
             "--topic", as_reader.topic, "--namespace", as_reader.namespace],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"Redis user {as_reader.redis_username!r} was refused (this user has no permissions" in done.stderr
        assert password not in done.stdout + done.stderr
