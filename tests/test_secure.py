"""The stack locked down end to end (issue 18): `METRICFOLD_SECURE=1 deploy/local/stack.sh up` in a directory of this
session, on ports of its own, started once and stopped at the end. Kafka speaks SASL_SSL only (SCRAM-SHA-512, ACLs per
role, StandardAuthorizer, nothing allowed without an ACL), Redis TLS only with client certificates and its ACL users,
`metricfold serve` HTTPS with the bearer token. Every step of the pipeline runs as its role, with the settings
`stack.sh env ROLE` prints (passwords only from their files); every forbidden action is refused by the server, and
each refusal is checked on what the server answered or logged, never on our code refusing first; nothing the run
printed, logged or served shows a password or the token.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

import producer as mf
from consumer.cli import build_parser
from consumer.kafka_io import DeadLetterProducer, GroupConsumer, Record
from consumer.runner import Consumer
from consumer.store import Store, redis_client
from producer.transport import KafkaTransport
from schemas.errors import BrokerUnavailable, ConfigError, StoreUnavailable
from schemas.limits import Limits
from schemas.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.sh"
#: (Kafka, Kafka controller, Redis) ports to try, away from the dev, chaos, cluster and CI stacks
PORT_CHOICES = [(19992, 19993, 16979), (19982, 19983, 16969), (19972, 19973, 16959)]
ROLES = ("trainer", "consumer", "replay", "admin", "reader")
#: the loggers of the in-process clients: ours, kafka-python's, redis-py's, uvicorn's, httpx's
LOGGERS = ("consumer", "producer", "schemas", "metricfold", "kafka", "redis", "uvicorn", "httpx", "httpcore")

#: everything the run printed, answered or logged that the final test greps for secrets
OUTPUT: list[str] = []


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class _Lines(logging.Handler):
    """Every log record of the module's run, formatted (the final test greps them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            OUTPUT.append(self.format(record))


@dataclasses.dataclass
class SecureStack:
    directory: Path
    kafka_port: int
    controller_port: int
    redis_port: int

    def stack_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("METRICFOLD_")}
        return {**env, "METRICFOLD_SECURE": "1", "METRICFOLD_STACK_DIR": str(self.directory),
                "METRICFOLD_KAFKA_PORT": str(self.kafka_port), "METRICFOLD_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "METRICFOLD_REDIS_PORT": str(self.redis_port)}

    def control(self, *command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["bash", str(STACK_SCRIPT), *command], cwd=REPO, env=self.stack_env(),
                              capture_output=True, text=True, timeout=240)
        OUTPUT.extend((done.stdout, done.stderr))
        return done

    def role_env(self, role: str) -> dict[str, str]:
        """The variables `stack.sh env ROLE` exports (what `source <(stack.sh env ROLE)` sets)."""
        printed = self.control("env", role)
        assert printed.returncode == 0, printed.stderr
        env = {}
        for line in printed.stdout.splitlines():
            words = shlex.split(line, comments=True)
            if len(words) == 2 and words[0] == "export":
                name, _, value = words[1].partition("=")
                env[name] = value
        return env

    def settings(self, role: str, **changes: Any) -> Settings:
        return dataclasses.replace(Settings.from_env(self.role_env(role)), **changes)

    def cli(self, role: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`metricfold ARGS` in its own process, in the role's environment (as after `source <(stack.sh env ROLE)`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("METRICFOLD_")}
        done = subprocess.run([sys.executable, "-m", "consumer.cli", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout, env={**env, **self.role_env(role)})
        OUTPUT.extend((done.stdout, done.stderr))
        return done

    @property
    def tls(self) -> Path:
        return self.directory / "secure" / "tls"

    @property
    def logs(self) -> Path:
        return self.directory / "secure" / "logs"

    def secrets(self) -> dict[str, str]:
        """Every password and the serve token of the stack, by file name."""
        return {path.name: path.read_text().strip() for path in (self.directory / "secrets").iterdir() if path.is_file()}

    def broker_options(self) -> dict[str, Any]:
        """kafka-python options of the brokers' own user, the super user (to look at what the roles may not)."""
        password = (self.directory / "secrets" / "kafka-broker.password").read_text().strip()
        return {"bootstrap_servers": [f"127.0.0.1:{self.kafka_port}"], "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "broker", "sasl_plain_password": password,
                "ssl_cafile": str(self.tls / "ca.crt")}

    def admin_redis(self) -> redis.Redis:
        """Redis as its administrator (`default`), over TLS with the administrator's client certificate."""
        password = (self.directory / "secrets" / "redis-default.password").read_text().strip()
        return redis.Redis(host="127.0.0.1", port=self.redis_port, password=password, ssl=True,
                           ssl_ca_certs=str(self.tls / "ca.crt"), ssl_certfile=str(self.tls / "redis-client-default.crt"),
                           ssl_keyfile=str(self.tls / "redis-client-default.key"), decode_responses=True)

    def log_size(self, name: str) -> int:
        path = self.logs / name
        return path.stat().st_size if path.exists() else 0

    def logged_since(self, name: str, offset: int, wanted: str, timeout: float = 10.0) -> str:
        """The lines the server wrote to its log *name* (server.log, redis.log) since *offset*, once one holds
        *wanted* (an AssertionError if none does within *timeout*)."""
        deadline = time.monotonic() + timeout
        while True:
            with (self.logs / name).open("rb") as file:
                file.seek(offset)
                text = file.read().decode("utf-8", "replace")
            found = [line for line in text.splitlines() if wanted in line]
            if found or time.monotonic() > deadline:
                assert found, f"the server did not log {wanted!r} in {name}; it logged:\n{text[-3000:]}"
                return "\n".join(found)
            time.sleep(0.2)


@pytest.fixture(scope="session")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    """The locked-down stack, started once for the session (`METRICFOLD_SECURE=1 stack.sh up`) and stopped at its end."""
    for tool in ("openssl", "java", "redis-server"):
        if shutil.which(tool) is None:
            pytest.fail(f"the secure stack needs {tool}")
    for ports in PORT_CHOICES:
        if all(_port_free(p) for p in ports):
            break
    else:
        pytest.fail(f"no free loopback ports for the secure stack among {PORT_CHOICES}")
    made = SecureStack(tmp_path_factory.mktemp("secure-stack"), *ports)
    # every log record of the run, DEBUG included, goes to OUTPUT (and not into pytest's report: it is a lot)
    lines = _Lines()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(lines)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    try:
        started = made.control("up")
        assert started.returncode == 0, started.stdout + started.stderr
        yield made
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(lines)
            logger.setLevel(level)
            logger.propagate = propagate
        stopped = made.control("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_the_stack_is_locked_down_as_configured(secure: SecureStack) -> None:
    status = secure.control("status")
    server = (secure.directory / "secure" / "kafka" / "server.properties").read_text()
    redis_conf = (secure.directory / "secure" / "redis" / "redis.conf").read_text()
    listeners = next(line for line in server.splitlines() if line.startswith("listeners="))

    assert status.returncode == 0 and "locked down" in status.stdout, status.stdout + status.stderr
    assert listeners == (f"listeners=SASL_SSL://127.0.0.1:{secure.kafka_port},"
                         f"CONTROLLER://127.0.0.1:{secure.controller_port}")
    assert "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL" in server  # no plaintext listener
    for line in ("authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                 "allow.everyone.if.no.acl.found=false", "super.users=User:broker", "sasl.enabled.mechanisms=SCRAM-SHA-512",
                 "listener.name.controller.ssl.client.auth=required"):
        assert line in server.splitlines()
    assert "\nport 0\n" in redis_conf and f"\ntls-port {secure.redis_port}\n" in redis_conf
    assert "\ntls-auth-clients yes\n" in redis_conf
    # the secrets and keys: files of mode 0600 in directories of mode 0700; no password file argument left behind
    for directory in (secure.directory / "secrets", secure.tls):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for path in directory.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert {f"kafka-{u}.password" for u in ("broker", "trainer", "consumer", "replay", "admin")} <= set(secure.secrets())
    assert not (secure.directory / "secrets" / ".kafka-format.args").exists()
    assert stat.S_IMODE((secure.directory / "secure" / "kafka" / "server.properties").stat().st_mode) == 0o600
    # <stack dir>/env logs in as the consumer role; every role names its password files, never a password
    env_file = (secure.directory / "env").read_text()
    assert "METRICFOLD_KAFKA_SASL_USERNAME=consumer" in env_file and "METRICFOLD_REDIS_USERNAME=metricfold-consumer" in env_file
    for role in ROLES:
        env = secure.role_env(role)
        assert env["METRICFOLD_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["METRICFOLD_REDIS"].startswith("rediss://")
        assert not any(k in env for k in ("METRICFOLD_KAFKA_SASL_PASSWORD", "METRICFOLD_REDIS_PASSWORD"))
    assert "METRICFOLD_KAFKA_SASL_USERNAME" not in secure.role_env("reader")


def _offline_spool(directory: Path) -> None:
    with pytest.warns(mf.SpoolWarning):
        run = mf.init(entity="team", project="locked", run_id="offline", mode="offline", spool_dir=directory)
        run.log({"loss": 0.75})
        run.finish()


def _broker_read(secure: SecureStack, topic: str) -> list[Any]:
    """Every record of *topic*, read as the super user (no role may read the dead letters)."""
    consumer = KafkaConsumer(**secure.broker_options(), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < end for tp, end in ends.items()) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _https(secure: SecureStack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(secure.tls / "ca.crt"))


@contextlib.contextmanager
def _serving(secure: SecureStack) -> Iterator[str]:
    """`metricfold serve --port 0` as the reader (HTTPS and the token from `stack.sh env reader`); its URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICFOLD_")}
    server = subprocess.Popen([sys.executable, "-m", "consumer.cli", "serve", "--port", "0", "--access-log"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env, **secure.role_env("reader")})
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        OUTPUT.append(banner)
        assert " at https://127.0.0.1:" in banner and "bearer token required" in banner, banner
        yield banner.split(" at ", 1)[1].split()[0].rstrip("/")
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
        OUTPUT.extend((out, err))


def test_the_pipeline_runs_end_to_end_each_step_as_its_role(secure: SecureStack, tmp_path: Path) -> None:
    trainer = secure.settings("trainer")
    token = secure.secrets()["serve.token"]

    # admin: the topics (the other roles may not create them)
    topics = secure.cli("admin", "-v", "topics")
    assert topics.returncode == 0 and "topics ready" in topics.stdout, topics.stderr

    # trainer: the SDK, and `metricfold sync` of an offline run
    with mf.init(entity="team", project="locked", run_id="r1", settings=trainer, spool_dir=tmp_path / "spool") as run:
        run.define_metric("loss", summary="min")
        for step in range(20):
            run.log({"loss": 1.0 / (step + 1), "acc": step / 20})
    assert run.report is not None and run.report.records_sent > 0 and run.report.records_spooled == 0, run.report
    _offline_spool(tmp_path / "offline")
    synced = secure.cli("trainer", "sync", str(tmp_path / "offline"))
    assert synced.returncode == 0, synced.stdout + synced.stderr

    # consumer: the fold; reader: `summary` and `runs`; the trainer's Api() reads as the reader
    consumed = secure.cli("consumer", "-v", "consume", "--until-caught-up", "--quiet")
    assert consumed.returncode == 0, consumed.stderr
    summary = secure.cli("reader", "summary", "team/locked/r1", "--json")
    runs = secure.cli("reader", "runs", "team/locked")
    assert summary.returncode == 0 and json.loads(summary.stdout)["summary"]["loss"] == {"min": 0.05}, summary.stderr
    assert runs.returncode == 0 and "r1" in runs.stdout and "offline" in runs.stdout, runs.stderr
    assert mf.Api(trainer).run("team/locked/r1").summary["loss"] == {"min": 0.05}

    # replay (read-only on Kafka, the writer on Redis): the same digest as the live fold's
    replayed = secure.cli("replay", "replay", "--quiet")
    digest = secure.cli("consumer", "digest")
    assert replayed.returncode == 0, replayed.stderr
    assert digest.returncode == 0, digest.stderr
    assert f"digest {digest.stdout.split()[0]}" in replayed.stdout

    # the page and the API over HTTPS, with the token; the live feed sees a run the consumer folds now
    with _serving(secure) as url, httpx.Client(base_url=url, verify=_https(secure), timeout=20) as client:
        refused = client.get("/api/projects")
        headers = {"Authorization": f"Bearer {token}"}
        projects = client.get("/api/projects", headers=headers)
        page = client.get("/api/runs/team/locked/r1", headers=headers)
        OUTPUT.extend((refused.text, projects.text, page.text, json.dumps(dict(page.headers))))
        assert refused.status_code == 401
        assert projects.status_code == 200 and {"project": "team/locked", "runs": 2} in projects.json()["projects"]
        assert page.status_code == 200 and page.json()["summary"]["loss"] == {"min": 0.05}
        with client.stream("GET", "/api/projects/team/locked/changes", headers=headers) as stream:
            lines = stream.iter_lines()
            assert "event: ready" in [next(lines) for _ in range(2)]
            with mf.init(entity="team", project="locked", run_id="live", settings=trainer,
                         spool_dir=tmp_path / "spool") as live:
                live.log({"loss": 0.5})
            folding = Consumer(secure.settings("consumer"))
            try:
                folding.run(until_caught_up=True)
            finally:
                folding.close()
            seen = []
            for line in lines:
                seen.append(line)
                if line == "data: live":
                    break
            OUTPUT.extend(seen)
            assert "data: live" in seen

    # the dead-letter producer: an undecodable record, sent by the trainer's idempotent producer (WRITE on the topic
    # is all Kafka 4 asks of it: KIP-679), goes to <topic>.dlq as the consumer
    transport = KafkaTransport(trainer, Limits())
    try:
        delivery = transport.send(b"team/locked/bad", b"not an event")
        transport.flush(20)
        assert delivery.ok, delivery.error
        producer_id = transport._producer._transaction_manager.producer_id_and_epoch.producer_id  # type: ignore[union-attr]
        assert producer_id >= 0  # the broker granted InitProducerId: the producer is idempotent
    finally:
        transport.close(timeout_s=5)
    dead = secure.cli("consumer", "consume", "--until-caught-up", "--quiet")
    assert dead.returncode == 0 and "1 records sent to metricfold.events.dlq" in dead.stderr, dead.stderr
    letters = _broker_read(secure, "metricfold.events.dlq")
    assert [(r.key, r.value) for r in letters] == [(b"team/locked/bad", b"not an event")]
    # a replay counts the bad record again but sends it nowhere (the live consumer did; its user may only read)
    again = secure.cli("replay", "replay", "--quiet")
    assert again.returncode == 0, again.stderr
    assert len(_broker_read(secure, "metricfold.events.dlq")) == 1


def test_a_consumer_the_broker_refuses_the_dead_letter_topic_stops_naming_the_grant(secure: SecureStack) -> None:
    """Without WRITE on <topic>.dlq (here: the trainer's user) a dead letter is refused by the broker; the consumer
    says which ACL it lacks instead of retrying forever as if Kafka were away."""
    trainer = secure.settings("trainer")
    mark = secure.log_size("server.log")
    dead = DeadLetterProducer(trainer)
    try:
        with pytest.raises(ConfigError) as refused:
            dead.send(Record(partition=0, offset=0, key=b"team/locked/bad", value=b"x"), "a test")
            dead.flush(timeout_s=20)
    finally:
        dead.close()
    OUTPUT.append(str(refused.value))
    assert "TopicAuthorizationFailedError" in str(refused.value)  # the broker's answer
    assert "the Kafka user 'trainer'" in str(refused.value) and "WRITE" in str(refused.value)
    assert "Topic:LITERAL:metricfold.events.dlq " in secure.logged_since(  # refused at the metadata step
        "server.log", mark, "Principal = User:trainer is Denied operation = DESCRIBE")


def test_the_trainer_may_not_read_the_event_topic(secure: SecureStack) -> None:
    trainer = secure.settings("trainer")
    mark = secure.log_size("server.log")
    for group in (False, True):  # as a replay reads (every partition), and as a consumer-group member
        with pytest.raises(BrokerUnavailable) as refused:
            reader = GroupConsumer(trainer, on_assigned=lambda partitions: {}, on_revoked=lambda partitions: None,
                                   group=group)
            try:
                reader.poll(timeout_ms=2000)
            finally:
                reader.close()
        OUTPUT.append(str(refused.value))
        # the broker's error codes: 29 TOPIC_AUTHORIZATION_FAILED, 30 GROUP_AUTHORIZATION_FAILED
        assert ("[Error 30] GroupAuthorizationFailedError" if group else "[Error 29] TopicAuthorizationFailedError") \
            in str(refused.value)
    assert "Principal = User:trainer is Denied operation = READ" in secure.logged_since(
        "server.log", mark, "User:trainer is Denied operation = READ")


def test_the_consumer_may_not_write_the_event_topic(secure: SecureStack, tmp_path: Path) -> None:
    mark = secure.log_size("server.log")
    with pytest.warns(mf.SpoolWarning, match="TopicAuthorizationFailedError"), \
            mf.init(entity="team", project="locked", run_id="forged", settings=secure.settings("consumer"),
                    spool_dir=tmp_path) as run:
        run.log({"loss": 0.0})
    assert run.report is not None and run.report.records_sent == 0
    assert "[Error 29] TopicAuthorizationFailedError" in str(run.report.reason)
    denied = secure.logged_since("server.log", mark, "User:consumer is Denied operation = WRITE")
    assert "Topic:LITERAL:metricfold.events " in denied


def test_the_reader_may_not_write_redis(secure: SecureStack) -> None:
    reader = secure.settings("reader")
    client = redis_client(reader)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError) as refused:
            client.set(f"{reader.namespace}:active", "hijacked")
    finally:
        client.close()
    OUTPUT.append(str(refused.value))
    assert "no permissions to run the 'set' command" in str(refused.value)  # Redis's NOPERM reply
    with secure.admin_redis() as admin:
        entry = admin.acl_log(count=1)[0]
    assert (entry["username"], entry["reason"], entry["object"]) == ("metricfold-reader", "command", "set")


@pytest.mark.parametrize("case", ["wrong password", "unknown user"])
def test_a_wrong_password_or_an_unknown_user_is_refused_by_kafka_and_redis(secure: SecureStack, case: str) -> None:
    user = {"wrong password": None, "unknown user": f"nobody-{uuid.uuid4().hex[:6]}"}[case]
    consumer = secure.settings("consumer")
    wrong = dataclasses.replace(consumer, kafka_sasl_password="not-the-password", redis_password="not-the-password",
                                **({"kafka_sasl_username": user, "redis_username": user} if user else {}))

    # Kafka: kafka-python retries a refused login until its bootstrap times out; the broker's answer is in its log
    lines = _Lines()
    connections = logging.getLogger("kafka.net.manager")
    level = connections.level
    connections.addHandler(lines)
    connections.setLevel(logging.WARNING)
    mark = secure.log_size("server.log")
    try:
        with pytest.raises(Exception, match="Unable to bootstrap"):
            KafkaAdminClient(**wrong.kafka_options(), bootstrap_timeout_ms=2500).close()
    finally:
        connections.removeHandler(lines)
        connections.setLevel(level)
    # the broker's verdict, in its log (kafka-python passes the SaslAuthenticate error message on when it reads the
    # answer before the broker closes the connection: not always, so the client's side is not what is checked)
    assert "Failed authentication with /127.0.0.1" in secure.logged_since(
        "server.log", mark, "invalid credentials with SASL mechanism SCRAM-SHA-512")

    # Redis: WRONGPASS, and an `auth` entry in its ACL LOG
    with pytest.raises(StoreUnavailable) as refused, Store(wrong) as store:
        store.active_generation()
    OUTPUT.append(str(refused.value))
    assert "Redis refused the credentials (invalid username-password pair or user is disabled." in str(refused.value)
    with secure.admin_redis() as admin:
        entry = admin.acl_log(count=1)[0]
    assert (entry["reason"], entry["username"]) == ("auth", user or "metricfold-consumer")


def test_plaintext_to_the_tls_ports_is_refused(secure: SecureStack) -> None:
    mark_kafka, mark_redis = secure.log_size("server.log"), secure.log_size("redis.log")
    with pytest.raises(Exception, match="Unable to bootstrap"):
        KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{secure.kafka_port}", bootstrap_timeout_ms=2000).close()
    plain = Settings(redis=f"redis://127.0.0.1:{secure.redis_port}/0", redis_username="metricfold-reader",
                     redis_password=secure.secrets()["redis-metricfold-reader.password"])
    with pytest.raises(StoreUnavailable) as refused, Store(plain) as store:
        store.active_generation()
    OUTPUT.append(str(refused.value))

    assert "listenerType=BROKER" in secure.logged_since("server.log", mark_kafka, "(SSL handshake failed)")
    assert "Error accepting a client connection" in secure.logged_since("redis.log", mark_redis, "wrong version number")


def test_a_certificate_from_another_ca_is_refused(secure: SecureStack, tmp_path: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=another CA", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=broker",
            "-keyout", "client.key", "-out", "client.csr")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "7", "-days", "1",
            "-out", "client.crt")
    mark_kafka, mark_redis = secure.log_size("server.log"), secure.log_size("redis.log")

    # Redis asks every client for a certificate of the stack's CA: it refuses this one (its log says why; the client
    # sees the server's TLS alert, or with TLS 1.3 the connection closed once its handshake half is done)
    foreign = secure.settings("reader", redis_client_cert=str(tmp_path / "client.crt"),
                              redis_client_key=str(tmp_path / "client.key"))
    with pytest.raises(StoreUnavailable) as refused, Store(foreign) as store:
        store.active_generation()
    OUTPUT.append(str(refused.value))
    assert "Error accepting a client connection" in secure.logged_since("redis.log", mark_redis, "certificate verify failed")

    # the Kafka controller listener takes only the broker's certificate of the stack's CA (CN=broker here, wrong CA)
    context = ssl.create_default_context(cafile=str(secure.tls / "ca.crt"))
    context.load_cert_chain(str(tmp_path / "client.crt"), str(tmp_path / "client.key"))
    with pytest.raises(ssl.SSLError, match=r"ALERT_CERTIFICATE_UNKNOWN|ALERT_UNKNOWN_CA|ALERT_BAD_CERTIFICATE"), \
            socket.create_connection(("127.0.0.1", secure.controller_port), timeout=10) as sock, \
            context.wrap_socket(sock, server_hostname="127.0.0.1") as conn:
        conn.sendall(b"\0\0\0\0")
        conn.recv(16)
    assert "listenerType=CONTROLLER" in secure.logged_since("server.log", mark_kafka, "(SSL handshake failed)")


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["summary", "team/locked/r1", "--redis-password", "{secret}"], "METRICFOLD_REDIS_PASSWORD_FILE"),
        (["consume", "--password={secret}"], "METRICFOLD_REDIS_PASSWORD_FILE"),
        (["topics", "--kafka-sasl-password", "{secret}"], "METRICFOLD_KAFKA_SASL_PASSWORD_FILE"),
        (["serve", "--token", "{secret}"], "METRICFOLD_SERVE_TOKEN_FILE"),
        (["consume", "--kafka", "consumer:{secret}@127.0.0.1:9092"], "METRICFOLD_KAFKA_SASL_PASSWORD_FILE"),
        (["runs", "team/locked", "--redis", "rediss://metricfold-reader:{secret}@127.0.0.1:6379/0"],
         "METRICFOLD_REDIS_PASSWORD_FILE"),
        (["serve", "--redis=redis://:{secret}@127.0.0.1:6379/0"], "METRICFOLD_REDIS_PASSWORD_FILE"),
    ],
)
def test_a_secret_on_the_command_line_is_refused_naming_the_variable_or_file(
    secure: SecureStack, args: list[str], variable: str
) -> None:
    secret = secure.secrets()["kafka-consumer.password"]
    done = secure.cli("consumer", *(a.replace("{secret}", secret) for a in args), timeout=30)

    assert done.returncode == 2, done.stdout + done.stderr
    assert variable in done.stderr
    assert "Traceback" not in done.stderr
    assert secret not in done.stdout + done.stderr


def test_a_kafka_password_file_is_read_like_the_redis_one(tmp_path: Path) -> None:
    path = tmp_path / "kafka.password"
    path.write_text("pw-from-the-file\n")
    read = Settings.from_env({"METRICFOLD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "METRICFOLD_KAFKA_SASL_MECHANISM":
                              "SCRAM-SHA-512", "METRICFOLD_KAFKA_SASL_USERNAME": "trainer",
                              "METRICFOLD_KAFKA_SASL_PASSWORD_FILE": str(path)})
    assert read.kafka_options()["sasl_plain_password"] == "pw-from-the-file"
    with pytest.raises(ConfigError, match="METRICFOLD_KAFKA_SASL_PASSWORD and METRICFOLD_KAFKA_SASL_PASSWORD_FILE"):
        Settings.from_env({"METRICFOLD_KAFKA_SASL_PASSWORD": "x", "METRICFOLD_KAFKA_SASL_PASSWORD_FILE": str(path)})
    with pytest.raises(ConfigError, match="needs METRICFOLD_KAFKA_SASL_USERNAME"):
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512").kafka_options()
    with pytest.raises(ConfigError, match="must be one of"):
        Settings(kafka_security_protocol="SASL_TLS")


def test_no_password_or_token_in_help_logs_errors_or_answers_of_the_whole_run(secure: SecureStack) -> None:
    """Runs last: greps everything this module's run printed (stack.sh, every CLI process, the server's banner and
    access log), answered (/api), raised and logged (the Python log, the brokers' and Redis's own logs)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    texts = [parser.format_help(), *(sub.format_help() for sub in commands.choices.values())]
    texts += [secure.control("--help").stdout]
    logs = [path.read_text(errors="replace") for path in secure.logs.rglob("*") if path.is_file()]
    everything = "\n".join([*OUTPUT, *texts, *logs])
    assert "SASL_SSL" in everything and "metricfold serve" in everything  # it did capture the run

    leaked = [name for name, secret in secure.secrets().items() if secret in everything]

    assert leaked == [], f"these secrets appear in the run's output: {leaked}"
