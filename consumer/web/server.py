"""Run the web app with uvicorn: in the foreground (`metricfold serve`, the demo) or in a thread (tests, bench); over
HTTPS with a certificate and key (uvicorn's TLS: `metricfold serve --tls-cert --tls-key`)."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consumer.web.security import redact_token
from schemas.errors import ConfigError
from schemas.settings import Settings

__all__ = ["DEFAULT_PORT", "ServerThread", "bind", "check_tls_files", "load_token", "serve", "url_of"]

DEFAULT_PORT = 8765
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


def load_token(token_file: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token from --token-file, else METRICFOLD_SERVE_TOKEN; None when neither is set (or the variable is
    empty). A blank one (white space only) is refused, as is anything but 16 to 512 token characters."""
    env = os.environ if environ is None else environ
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        source = f"the token file {token_file}"
    else:
        raw = env.get("METRICFOLD_SERVE_TOKEN", "")
        token = raw.strip()
        source = "METRICFOLD_SERVE_TOKEN"
        if not raw:  # unset or empty (docker-compose passes `${METRICFOLD_SERVE_TOKEN:-}`): no token
            return None
        if not token:  # "  ": meant as a token, so never serve without one silently
            raise ConfigError(
                "METRICFOLD_SERVE_TOKEN holds only white space: set a token (e.g. `openssl rand -hex 32`), or unset it "
                "to serve without one"
            )
    if not _TOKEN.fullmatch(token):
        raise ConfigError(f"{source} must hold 16 to 512 characters of A-Z a-z 0-9 . _ ~ + / = - (e.g. `openssl rand -hex 32`)")
    return token


def check_tls_files(cert: str | None, key: str | None) -> None:
    """--tls-cert and --tls-key: both or neither, each a readable PEM file (uvicorn would fail later, less clearly).
    The key must be unencrypted: its password would be one more secret to pass."""
    if bool(cert) != bool(key):
        raise ConfigError("--tls-cert and --tls-key go together (METRICFOLD_SERVE_TLS_CERT, METRICFOLD_SERVE_TLS_KEY): "
                          "give both for HTTPS, or neither")
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is None:
            continue
        try:
            head = Path(path).read_text(encoding="ascii", errors="replace")[:200_000]
        except OSError as exc:
            raise ConfigError(f"{option}: cannot read {path}: {exc.strerror}") from None
        wanted = "CERTIFICATE" if option == "--tls-cert" else "PRIVATE KEY"
        if f"-----BEGIN {wanted}" not in head and not (wanted == "PRIVATE KEY" and " PRIVATE KEY-----" in head):
            raise ConfigError(f"{option}: {path} holds no PEM {wanted.lower()}")
        if option == "--tls-key" and "ENCRYPTED" in head:
            raise ConfigError(f"--tls-key: {path} is encrypted: serve reads an unencrypted key (keep it mode 0600)")


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST.fullmatch(host):
            raise ConfigError(f"--host {host!r} is not an IP address or a host name") from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port), or a ConfigError saying why not."""
    _check_host(host)
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be from 1 to 65535 (or 0 for any free port), got {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} does not resolve: {exc}") from None
    family, kind, proto, _, address = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted sockets only then; without it,
    # a response's body waits for the client's delayed ACK of its headers (~40 ms on every keep-alive request)
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror} (choose another --port)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, *, https: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if https else 'http'}://{shown}:{port}/"


class RedactToken(logging.Filter):
    """Hides the value of `?token=` in uvicorn's access log lines (`--access-log`): the request target is one of the
    record's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "?" in a for a in record.args):
            record.args = tuple(redact_token(a) if isinstance(a, str) else a for a in record.args)
        return True


def _server(settings: Settings, token: str | None, **options: Any) -> Any:
    import uvicorn

    from consumer.web.app import create_app

    config = uvicorn.Config(
        create_app(settings, token=token),
        log_level=options.pop("log_level", "warning"),
        access_log=options.pop("access_log", False),
        timeout_graceful_shutdown=2,
        lifespan="on",
        **options,
    )
    access = logging.getLogger("uvicorn.access")  # configured by uvicorn.Config above
    if not any(isinstance(f, RedactToken) for f in access.filters):
        access.addFilter(RedactToken())
    return uvicorn.Server(config)


def _tls_options(tls_cert: str | None, tls_key: str | None) -> dict[str, Any]:
    check_tls_files(tls_cert, tls_key)
    return {"ssl_certfile": tls_cert, "ssl_keyfile": tls_key} if tls_cert else {}


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
          access_log: bool = False, open_path: str = "", tls_cert: str | None = None, tls_key: str | None = None) -> int:
    """Serve in the foreground until Ctrl-C / SIGTERM; prints the URL once it listens. With *tls_cert* and *tls_key*
    (PEM files), over HTTPS."""
    tls = _tls_options(tls_cert, tls_key)
    sock = bind(host, port)
    loopback = host in ("localhost",) or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)
    if not loopback and token is None:
        print(f"warning: serving on {host} without a token: anyone who reaches it can read every summary "
              "(use --token-file or METRICFOLD_SERVE_TOKEN)", file=sys.stderr)
    elif not loopback and not tls:
        print(f"warning: serving on {host} over plain HTTP: the token and the summaries cross the network in clear "
              "(use --tls-cert and --tls-key)", file=sys.stderr)
    server = _server(settings, token, access_log=access_log, log_level="info" if access_log else "warning", **tls)
    url = url_of(sock, https=bool(tls))
    note = "  (bearer token required)" if token else ""
    print(f"serving namespace {settings.namespace} of {settings.redis_display} at {url}{note}", flush=True)
    if open_path:
        print(f"open {url.rstrip('/')}{open_path}", flush=True)
    print("press Ctrl-C to stop", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ServerThread:
    """The app on 127.0.0.1 on a free port in a background thread (tests, bench): `with ServerThread(s) as url:`."""

    def __init__(self, settings: Settings, *, token: str | None = None, host: str = "127.0.0.1",
                 tls_cert: str | None = None, tls_key: str | None = None) -> None:
        tls = _tls_options(tls_cert, tls_key)
        self.sock = bind(host, 0)
        self.url = url_of(self.sock, https=bool(tls)).rstrip("/")
        self.server = _server(settings, token, **tls)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
