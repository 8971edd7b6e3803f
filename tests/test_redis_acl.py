"""Least privilege: the ACL users of deploy/redis/users.acl, on the real Redis.

The reader (serve, Grafana, the read API) can read the namespace and subscribe to its channels, and every write is
refused by Redis itself; the consumer can fold but not run admin commands. The rules are the file's own: when the
running Redis was started without the file, its `user` lines are applied with ACL SETUSER (the file's lines are
exactly ACL SETUSER arguments). The namespace tests run the same rules with `mf:` replaced by the test namespace,
as a throwaway user, so they never touch the real `mf` namespace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

import producer as mf
from consumer.store import ChangeFeed, Store, redis_client
from consumer.web.server import ServerThread
from schemas.errors import ConfigError
from schemas.settings import Settings

from support import consume_all

pytestmark = pytest.mark.integration

ACL_FILE = Path(__file__).resolve().parent.parent / "deploy" / "redis" / "users.acl"
PASSWORDS = {"metricfold-consumer": "metricfold-consumer-local", "metricfold-reader": "metricfold-reader-local"}


def acl_rules() -> dict[str, list[str]]:
    rules = {}
    for line in ACL_FILE.read_text().splitlines():
        words = line.split()
        assert words[0] == "user", f"{ACL_FILE}: every line is a user rule (Redis 7.0 ACL files have no comments)"
        rules[words[1]] = words[2:]
    return rules


@pytest.fixture
def acl_users(redis_client: redis.Redis) -> dict[str, list[str]]:
    rules = acl_rules()
    for name, words in rules.items():
        if name != "default" and redis_client.acl_getuser(name) is None:
            redis_client.execute_command("ACL", "SETUSER", name, "reset", *words)
    return rules


@pytest.fixture
def namespace_users(
    acl_users: dict[str, list[str]], settings: Settings, redis_client: redis.Redis
) -> Iterator[dict[str, Settings]]:
    """The consumer's and the reader's rules for the test namespace: settings that log in as each."""
    made = {}
    for role in ("consumer", "reader"):
        name, password = f"{settings.namespace}-{role}", secrets.token_hex(16)
        words = [w.replace("~mf:*", f"~{settings.namespace}:*").replace("&mf:*", f"&{settings.namespace}:*")
                 for w in acl_users[f"metricfold-{role}"] if not w.startswith(("#", ">"))]
        redis_client.execute_command("ACL", "SETUSER", name, "reset", *words, f">{password}")
        made[role] = dataclasses.replace(settings, redis_username=name, redis_password=password)
    yield made
    for role in made:
        redis_client.execute_command("ACL", "DELUSER", f"{settings.namespace}-{role}")


def test_reader_user_write_is_refused_by_redis(acl_users: dict[str, list[str]], stack: object, settings: Settings) -> None:
    reader = redis.Redis.from_url(settings.redis, username="metricfold-reader", password=PASSWORDS["metricfold-reader"])
    try:
        reader.get("mf:active")  # reading the namespace is allowed
        reader.smembers("mf:g1:projects")
        for write in (
            lambda: reader.set("mf:active", "hijacked"),
            lambda: reader.hset("mf:g1:run:{a/b/c}:flat", "loss.min", "0"),
            lambda: reader.delete("mf:active"),
            lambda: reader.publish("mf:g1:changes:a/b", "c"),
            lambda: reader.eval_ro("return redis.call('SET', KEYS[1], 'x')", 1, "mf:active"),
            lambda: reader.evalsha("0" * 40, 0),
            lambda: reader.flushall(),
            lambda: reader.config_set("maxmemory", "1"),
            lambda: reader.keys("*"),
            lambda: reader.get("outside:the:namespace"),
        ):
            with pytest.raises(redis.ResponseError) as refused:
                write()
            assert isinstance(refused.value, redis.exceptions.NoPermissionError) or "can't run this command" in str(refused.value)
    finally:
        reader.close()


def test_consumer_user_cannot_run_admin_commands_or_write_outside_the_namespace(
    acl_users: dict[str, list[str]], settings: Settings
) -> None:
    consumer = redis.Redis.from_url(settings.redis, username="metricfold-consumer", password=PASSWORDS["metricfold-consumer"])
    try:
        for forbidden in (lambda: consumer.flushall(), lambda: consumer.keys("*"), lambda: consumer.config_get("*"),
                          lambda: consumer.set("outside:the:namespace", "x")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                forbidden()
    finally:
        consumer.close()


def test_consumer_folds_and_reader_serves_with_the_files_rules(namespace_users: dict[str, Settings]) -> None:
    as_consumer, as_reader = namespace_users["consumer"], namespace_users["reader"]
    with mf.init(entity="team", project="acl", run_id="r1", settings=as_consumer) as run:
        run.define_metric("loss", summary="min")
        run.log({"loss": 0.5})
        run.log({"loss": 0.25})

    consume_all(as_consumer)  # the whole fold (Lua writes, checkpoints, publish) as the consumer user

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
                    redis_client(as_consumer).publish(f"{as_consumer.namespace}:g1:changes:team/acl", "r1")
                    continue
                return notice
            return None
        finally:
            await feed.aclose()

    assert asyncio.run(asyncio.wait_for(first_notice(), 10)) == "r1"  # the reader may subscribe


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


def test_grafana_dashboard_queries_run_as_the_reader(namespace_users: dict[str, Settings]) -> None:
    """Every query of deploy/grafana/dashboards/metricfold.json, with its variables filled in, as the reader."""
    as_consumer, as_reader = namespace_users["consumer"], namespace_users["reader"]
    with mf.init(entity="team", project="graf", run_id="r1", settings=as_consumer) as run:
        run.define_metric("acc", summary="best", objective="maximize")
        run.log({"acc": 0.75, "grad": {"norm": 2.0}})
    consume_all(as_consumer)
    dashboard = json.loads((ACL_FILE.parent.parent / "grafana" / "dashboards" / "metricfold.json").read_text())
    datasource = (ACL_FILE.parent.parent / "grafana" / "provisioning" / "datasources" / "redis.yaml").read_text()
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
