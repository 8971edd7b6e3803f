"""The token of `metricfold serve` and its redirect (issue 20, item 2), and honest 405 answers (item 4), against a
real server (ServerThread, or `metricfold serve` in its own process) over the real Redis."""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

import producer as mf
from consumer.web.server import ServerThread
from schemas.settings import Settings

from support import cli_env, consume_all

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(settings: Settings) -> Settings:
    """team/sec with one folded run r1 (loss)."""
    with mf.init(entity="team", project="sec", run_id="r1", settings=settings) as run:
        run.log({"loss": 0.5})
    consume_all(settings)
    return settings


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_errors() -> Iterator[Records]:
    """What uvicorn logs as errors (an exception in the app, e.g. h11 refusing a header), from any thread."""
    handler = Records()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def raw_get(base: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """One GET with the request target sent byte for byte (httpx would normalise it); the status and headers, or an
    AssertionError if the server dropped the connection without an answer."""
    address = urlsplit(base)
    assert address.hostname is not None and address.port is not None
    lines = [f"GET {target} HTTP/1.1", f"Host: {address.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert data, f"the server dropped the connection of GET {target!r} without an answer"
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    answer = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        answer[name.strip().lower()] = value.strip()
    return int(head[0].split()[1]), answer


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
        ("//evil.example", "/evil.example"),
        ("///evil.example/x", "/evil.example/x"),
        ("/%5C%5Cevil.example", "/%5C%5Cevil.example"),
        ("/\\\\evil.example", "/%5C%5Cevil.example"),
        ("/%2F/evil.example", "/%2F/evil.example"),
        ("/projects/a%3Fb", "/projects/a%3Fb"),
        ("/a%0d%0aX-Evil:%201", "/a%0d%0aX-Evil:%201"),
        ("/a%00b", "/a%00b"),
        ("/a%zzb%", "/a%25zzb%25"),
        ("/caf%C3%A9", "/caf%C3%A9"),
    ],
)
def test_the_token_redirect_is_built_from_the_raw_path_and_stays_on_this_server(
    settings: Settings, server_errors: Records, path: str, location: str
) -> None:
    with ServerThread(settings, token=TOKEN) as base:
        status, headers = raw_get(base, f"{path}?token={TOKEN}")

    assert status == 303 and headers["location"] == location
    target = headers["location"]
    assert target.startswith("/") and not target.startswith(("//", "/\\"))
    assert urlsplit(urljoin(base + "/", target)).netloc == urlsplit(base).netloc
    assert f"metricfold_token={TOKEN};" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]
    assert not [r for r in server_errors.records if r.levelno >= logging.ERROR]


def test_the_redirect_keeps_every_other_parameter_as_sent_and_drops_every_spelling_of_token(settings: Settings) -> None:
    query = f"sort=loss&col=a%26b&token={TOKEN}&col=%C3%A9+x&limit=5&%74oken={TOKEN}&tok%65n=x&col=%"
    with ServerThread(settings, token=TOKEN) as base:
        status, headers = raw_get(base, f"/projects/team/sec?{query}")

    assert status == 303
    assert headers["location"] == "/projects/team/sec?sort=loss&col=a%26b&col=%C3%A9+x&limit=5&col=%25"


def test_a_token_in_the_url_is_taken_out_at_once_and_never_reaches_a_page(project: Settings) -> None:
    with ServerThread(project, token=TOKEN) as base, httpx.Client(base_url=base, timeout=10) as browser:
        first = browser.get(f"/projects/team/sec?sort=loss&token={TOKEN}")
        assert first.status_code == 303 and first.headers["location"] == "/projects/team/sec?sort=loss"
        # a browser that already has the cookie opens a shared ?token= link: the token leaves the URL all the same
        again = browser.get(f"/runs/team/sec/r1?token={TOKEN}")
        wrong = browser.get("/projects/team/sec?token=not-the-token-at-all")
        bearer = httpx.get(f"{base}/api/projects?token={TOKEN}", headers={"Authorization": f"Bearer {TOKEN}"})
        pages = [browser.get(again.headers["location"]), browser.get(first.headers["location"]),
                 browser.get(wrong.headers["location"])]
        refused = httpx.get(f"{base}/projects/team/sec?token=not-the-token-at-all")

    assert again.status_code == 303 and again.headers["location"] == "/runs/team/sec/r1"
    assert wrong.status_code == 303 and wrong.headers["location"] == "/projects/team/sec"
    assert "set-cookie" not in wrong.headers  # a wrong token sets nothing; the cookie already held stays
    assert bearer.status_code == 303 and bearer.headers["location"] == "/api/projects"
    for page in pages:
        assert page.status_code == 200 and "data-refresh" in page.text
        assert TOKEN not in page.text and "token" not in page.text
    assert refused.status_code == 401 and "not-the-token-at-all" not in refused.text


def test_a_server_without_a_token_also_takes_a_token_out_of_the_url(project: Settings) -> None:
    with ServerThread(project) as base, httpx.Client(base_url=base, timeout=10) as browser:
        moved = browser.get(f"/projects/team/sec?limit=5&token={TOKEN}")
        page = browser.get(moved.headers["location"])

    assert moved.status_code == 303 and moved.headers["location"] == "/projects/team/sec?limit=5"
    assert "set-cookie" not in moved.headers
    assert page.status_code == 200 and TOKEN not in page.text


def _serve(settings: Settings, *extra: str, token: str) -> subprocess.Popen[str]:
    env = {**cli_env(settings), "METRICFOLD_SERVE_TOKEN": token, "METRICFOLD_REDIS": settings.redis,
           "METRICFOLD_KAFKA": settings.kafka, "METRICFOLD_NAMESPACE": settings.namespace, "METRICFOLD_TOPIC": settings.topic}
    return subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "serve", "--port", "0", *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_the_access_log_never_shows_the_token(project: Settings) -> None:
    server = _serve(project, "--access-log", token=TOKEN)
    try:
        assert server.stdout is not None
        base = None
        for line in server.stdout:
            if found := re.search(r"http://127\.0\.0\.1:\d+", line):
                base = found.group()
                break
        assert base, "metricfold serve did not print its URL"
        with httpx.Client(base_url=base, timeout=10) as browser:
            assert browser.get(f"/projects/team/sec?token={TOKEN}&sort=loss").status_code == 303
            assert browser.get(f"/api/projects?%74oken={TOKEN}").status_code == 303
            assert httpx.get(f"{base}/api/projects?token=a-wrong-token-0123456").status_code == 401  # no cookie
            assert browser.get("/projects/team/sec?sort=loss").status_code == 200  # the cookie
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=20)
    log = out + err

    assert "GET /projects/team/sec?token=***&sort=loss" in log
    assert "GET /api/projects?%74oken=***" in log and "GET /api/projects?token=***" in log
    assert TOKEN not in log and "a-wrong-token-0123456" not in log


def test_a_blank_serve_token_is_refused(settings: Settings) -> None:
    from consumer.web.server import load_token
    from schemas.errors import ConfigError

    assert load_token(None, {"METRICFOLD_SERVE_TOKEN": ""}) is None  # empty: unset (docker-compose's default)
    with pytest.raises(ConfigError, match="white space"):
        load_token(None, {"METRICFOLD_SERVE_TOKEN": " \t "})
    server = _serve(settings, token="   ")
    try:
        out, err = server.communicate(timeout=30)  # serving (the bug) would not end: the timeout fails the test
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()

    assert server.returncode == 2 and "METRICFOLD_SERVE_TOKEN holds only white space" in err
    assert "serving" not in out


def test_405_answers_say_which_methods_are_allowed(settings: Settings) -> None:
    paths = ["/api/projects", "/projects/team/sec", "/api/runs/team/sec/r1/tensor", "/static/app.js"]
    with ServerThread(settings, token=TOKEN) as base, httpx.Client(base_url=base, timeout=10) as client:
        replies = [
            client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
            for method in ("POST", "PUT", "DELETE", "PATCH")
            for path in paths
        ]

    for reply in replies:
        assert reply.status_code == 405, reply.request
        assert sorted(m.strip() for m in reply.headers["allow"].split(",")) == ["GET", "HEAD"]
