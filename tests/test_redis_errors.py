"""A wrong Redis URL or a server that is not Redis: one clear line (never a traceback), and no password shown.

The services that are not Redis are real sockets: the Kafka broker's port, and two throwaway servers started
here (one answers every command with `-ERR unknown command`, one with bytes that are not the Redis protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import socketserver
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

import producer as mf
from consumer.store import ChangeFeed, Store
from consumer.store.client import _mapped
from consumer.web.server import ServerThread
from producer.api import Api
from schemas.errors import StoreUnavailable
from schemas.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
SECRET = f"SECRET-{uuid.uuid4().hex[:12]}"
NOT_REDIS = "does not speak the Redis protocol"


class _Replies(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            if self.server.mode == "err":  # type: ignore[attr-defined]
                self.request.sendall(b"-ERR unknown command\r\n" * max(1, data.count(b"*")))
            else:
                self.request.sendall(b"HTTP/1.1 400 Bad Request\r\n\x1b[31m\r\n\r\n")
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def fake_service(mode: str) -> Iterator[int]:
    """A TCP service on 127.0.0.1 that is not Redis; yields its port."""
    server = _Server(("127.0.0.1", 0), _Replies)
    server.mode = mode  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port() -> int:
    """A loopback port nothing listens on (checked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is taken"
    return port


def admin_url(stack: Any, db: int = 0) -> str:
    """The stack's Redis URL with the administrator's password in it (any password when the default user has none)."""
    host_port = stack.redis_url.split("://", 1)[1].split("/", 1)[0]
    return f"redis://default:{stack.redis_password or SECRET}@{host_port}/{db}"


@pytest.fixture(scope="module")
def hidden(stack: Any) -> tuple[str, ...]:
    """What no output may show: the made-up password, and the administrator's real one (in the db-99 URL)."""
    return (SECRET, stack.redis_password) if stack.redis_password else (SECRET,)


def shown(hidden: tuple[str, ...], *texts: str) -> list[str]:
    return [secret for secret in hidden for text in texts if secret in text]


@pytest.fixture(scope="module")
def services(stack: Any) -> Iterator[dict[str, str]]:
    """Redis URLs of every bad case, by name."""
    redis_host_port = stack.redis_url.split("://", 1)[1].split("/", 1)[0]
    kafka_port = stack.kafka.rsplit(":", 1)[1]
    with fake_service("err") as err_port, fake_service("garbage") as garbage_port:
        yield {
            "unreachable": f"redis://u:{SECRET}@127.0.0.1:{closed_port()}/0",
            "port-99999": f"redis://u:{SECRET}@127.0.0.1:99999/0",
            "port-abc": f"redis://u:{SECRET}@127.0.0.1:abc/0",
            "bad-option": f"redis://u:{SECRET}@{redis_host_port}/0?socket_timeout=soon",
            "db-99": admin_url(stack, 99),
            "wrong-password": f"redis://nobody:{SECRET}@{redis_host_port}/0",
            "kafka": f"redis://u:{SECRET}@127.0.0.1:{kafka_port}/0",
            "answers-err": f"redis://127.0.0.1:{err_port}/0",
            "answers-garbage": f"redis://u:{SECRET}@127.0.0.1:{garbage_port}/3",
        }


EXPECTED = {
    "unreachable": "cannot reach Redis at redis://u:***@127.0.0.1:",
    "port-99999": "port must be a number from 1 to 65535",
    "port-abc": "port must be a number from 1 to 65535",
    "bad-option": "Invalid value for 'socket_timeout'",
    "db-99": "Redis has no database 99",
    "wrong-password": "Redis refused the credentials",
    "kafka": NOT_REDIS,
    "answers-err": NOT_REDIS,
    "answers-garbage": NOT_REDIS,
}


def cli_env(redis_url: str) -> dict[str, str]:
    """The environment with *redis_url* as METRICFOLD_REDIS and no other Redis credentials: the URL carries its own
    (`--redis` refuses a URL with a password: a secret never goes on the command line)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("METRICFOLD_REDIS")}, "METRICFOLD_REDIS": redis_url}


def metricfold(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120,
        env=cli_env(redis_url),
    )


@pytest.mark.parametrize("command", [["summary", "team/vision/r1"], ["runs", "team/vision"]])
@pytest.mark.parametrize("case", list(EXPECTED))
def test_cli_says_what_is_wrong_with_redis_in_one_line(
    services: dict[str, str], hidden: tuple[str, ...], case: str, command: list[str]
) -> None:
    done = metricfold(*command, "--namespace", "mferrors", redis_url=services[case])

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("metricfold: error: "), done.stderr
    assert EXPECTED[case] in done.stderr, done.stderr
    assert not shown(hidden, done.stdout, done.stderr)
    assert case != "db-99" or "redis://default:***@" in done.stderr


def test_cli_names_the_host_it_cannot_reach(services: dict[str, str]) -> None:
    url = services["unreachable"]
    done = metricfold("summary", "team/vision/r1", redis_url=url)

    host_port_db = url.rsplit("@", 1)[1]
    assert f"cannot reach Redis at redis://u:***@{host_port_db}: " in done.stderr


def test_consume_summary_and_runs_never_print_the_url_password(settings: Settings, stack: Any, hidden: tuple[str, ...]) -> None:
    with mf.init(entity="team", project="vision", run_id="r1", settings=settings) as run:
        run.log({"loss": 0.5})
    connection = ["--kafka", settings.kafka, "--topic", settings.topic, "--namespace", settings.namespace]

    consumed = metricfold("consume", "--until-caught-up", *connection, redis_url=admin_url(stack))
    summary = metricfold("summary", "team/vision/r1", *connection, redis_url=admin_url(stack))
    runs = metricfold("runs", "team/vision", *connection, redis_url=admin_url(stack))
    unreachable = metricfold("consume", "--until-caught-up", *connection,
                             redis_url=f"redis://u:{SECRET}@127.0.0.1:{closed_port()}/0")

    assert consumed.returncode == 0, consumed.stderr
    assert "into redis://default:***@" in consumed.stderr  # the banner
    assert summary.returncode == 0 and "loss" in summary.stdout, summary.stderr
    assert runs.returncode == 0 and "r1" in runs.stdout, runs.stderr
    assert unreachable.returncode == 2 and "cannot reach Redis at redis://u:***@127.0.0.1:" in unreachable.stderr
    for done in (consumed, summary, runs, unreachable):
        assert not shown(hidden, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr


def test_serve_answers_503_naming_the_host_but_not_the_password() -> None:
    port = closed_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "serve", "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(f"redis://u:{SECRET}@127.0.0.1:{port}/0"),
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        url = banner.split(" at ", 1)[1].split()[0]
        with httpx.Client(base_url=url, timeout=30) as client:
            api = client.get("/api/projects")
            page = client.get("/")
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)

    assert f"of redis://u:***@127.0.0.1:{port}/0 at http" in banner
    assert api.status_code == 503 and api.json()["error"] == "unavailable"
    assert f"cannot reach Redis at redis://u:***@127.0.0.1:{port}/0" in api.json()["message"]
    assert page.status_code == 503 and f"redis://u:***@127.0.0.1:{port}/0" in page.text
    for text in (banner, out, err, api.text, page.text):
        assert SECRET not in text


@pytest.mark.parametrize("case", ["kafka", "answers-err", "answers-garbage", "db-99"])
def test_serve_answers_503_with_the_reason_for_a_server_that_is_not_redis(
    services: dict[str, str], hidden: tuple[str, ...], case: str
) -> None:
    settings = Settings(redis=services[case], namespace="mferrors")
    with ServerThread(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        api = client.get("/api/projects")
        page = client.get("/projects/team/vision")

    assert api.status_code == 503 and EXPECTED[case] in api.json()["message"]
    assert page.status_code == 503 and EXPECTED[case] in page.text
    assert not shown(hidden, api.text, page.text)


@pytest.mark.parametrize("case", ["kafka", "answers-err", "answers-garbage", "db-99", "wrong-password"])
def test_the_api_reads_raise_store_unavailable_with_the_reason(
    services: dict[str, str], hidden: tuple[str, ...], case: str
) -> None:
    api = Api(Settings(redis=services[case], namespace="mferrors"))

    for read in (lambda: api.run("team/vision/r1"), lambda: api.runs("team/vision")):
        with pytest.raises(StoreUnavailable, match=EXPECTED[case]) as raised:
            read()
        assert not shown(hidden, str(raised.value))


@pytest.mark.parametrize("case", ["answers-err", "answers-garbage"])
def test_a_live_watch_of_a_server_that_is_not_redis_ends_with_store_unavailable(services: dict[str, str], case: str) -> None:
    feed = ChangeFeed(Settings(redis=services[case], namespace="mferrors"))

    async def first_notice() -> str | None:
        try:
            async for notice in feed.watch("team/vision"):
                return notice
            return None
        finally:
            await feed.aclose()

    with pytest.raises(StoreUnavailable, match=r"Redis (subscription )?at redis://(u:\*\*\*@)?127\.0\.0\.1:") as raised:
        asyncio.run(asyncio.wait_for(first_notice(), 30))
    assert SECRET not in str(raised.value)


def test_an_error_reply_to_a_command_is_not_taken_for_a_server_that_is_not_redis(stack: Any) -> None:
    """Only the setup of a connection is checked: a script's error stays a ResponseError (the caller's to judge)."""
    settings = Settings(redis=admin_url(stack), namespace="mferrors")
    with Store(settings) as store, pytest.raises(redis.ResponseError, match="boom"), _mapped(settings):
        store.client.eval("return redis.error_reply('boom')", 0)

