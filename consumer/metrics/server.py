"""The consumer's metrics HTTP server (MetricsServer), in a daemon thread of the consume process:

    GET /metrics   the Prometheus text format
    GET /healthz   200 while the loop turns (it went round within ALIVE_WITHIN_S), else 503
    GET /readyz    200 when partitions are assigned and their lag, measured since the last assignment, is at most
                   --ready-max-lag records in all; else 503 with {"ready": false, "reason": ...}
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer.metrics.consumer_metrics import ConsumerMetrics
from schemas.errors import ConfigError

__all__ = ["CONTENT_TYPE", "MetricsServer"]

log = logging.getLogger("consumer.metrics")  # the package's lines keep the name they have always had

#: the content type of the Prometheus text format (/metrics here, and serve's)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        metrics = self.server.metrics
        if path == "/metrics":
            self._send(200, CONTENT_TYPE, generate_latest(metrics.registry))
        elif path in ("/healthz", "/readyz"):
            status, body = metrics.health() if path == "/healthz" else metrics.readiness()
            self._send(status, "application/json", json.dumps(body).encode() + b"\n")
        else:
            self._send(404, "application/json", json.dumps(
                {"error": "not_found", "message": f"no page at {path}: try /metrics, /healthz or /readyz"}).encode() + b"\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("cache-control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics request: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: ConsumerMetrics) -> None:
        self.metrics = metrics
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class MetricsServer:
    """/metrics, /healthz and /readyz of *metrics* on host:port (port 0: any free one), in a daemon thread."""

    def __init__(self, metrics: ConsumerMetrics, host: str = "127.0.0.1", port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"--metrics-port must be from 1 to 65535 (or 0 for any free port), got {port}")
        try:
            self._server = _Server((host, port), metrics)
        except OSError as exc:
            raise ConfigError(f"cannot serve the metrics on {host}:{port}: {exc.strerror or exc} "
                              "(choose another --metrics-port or --metrics-host)") from None
        address = self._server.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="metricfold-metrics", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
