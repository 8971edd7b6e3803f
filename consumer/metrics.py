"""Prometheus metrics and health answers: the consumer's (`metricfold consume --metrics-port`) and serve's.

The only module on the consumer side that imports prometheus_client. Each consumer process (and each serve app)
has a CollectorRegistry of its own, not the library's global one, so two in one process (tests) stay apart.

The consumer's figures come from small calls in consumer/runner.py, made per batch or per event of note (a
rebalance, a dead letter, an error), never per record; `ConsumerMetrics.tick` runs once per turn of the loop,
in the loop's thread: it copies the ConsumeReport's counts into the counters and, at most every LAG_EVERY_S,
asks Kafka for the lag of the assigned partitions (kafka-python is not thread-safe, so the HTTP thread never
touches the client: it answers from what the last tick left).

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
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from schemas.errors import BrokerUnavailable, ConfigError

if TYPE_CHECKING:
    from consumer.kafka_io import GroupConsumer
    from consumer.runner import BatchTiming, ConsumeReport

__all__ = [
    "ALIVE_WITHIN_S",
    "CONTENT_TYPE",
    "LAG_EVERY_S",
    "READY_MAX_LAG",
    "ConsumerMetrics",
    "MetricsServer",
    "ServeMetrics",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: the consume loop counts as alive while it went round within this many seconds (a poll waits 200 ms at most;
#: Kafka requests time out after 30 s, Redis retries back off up to 10 s)
ALIVE_WITHIN_S = 60.0
#: the lag of the assigned partitions is asked for at most this often (one end-offsets request), and at the next
#: turn of the loop after a rebalance
LAG_EVERY_S = 5.0
#: how long the brokers have to answer that request (the loop waits meanwhile); past it the lag is unknown, the
#: consumer not ready, and the lag is asked for again after LAG_RETRY_S (or at the next rebalance or new client)
LAG_TIMEOUT_S = 2.0
LAG_RETRY_S = 30.0
#: /readyz's default threshold (`--ready-max-lag`): records waiting in the member's partitions, in all
READY_MAX_LAG = 10_000

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ConsumerMetrics:
    """The metrics of one consumer process, and its health; `Consumer.metrics = ConsumerMetrics(topic)`."""

    def __init__(self, topic: str, *, ready_max_lag: int = READY_MAX_LAG, lag_every_s: float = LAG_EVERY_S,
                 alive_within_s: float = ALIVE_WITHIN_S) -> None:
        if ready_max_lag < 0:
            raise ConfigError(f"--ready-max-lag must be 0 or more records, got {ready_max_lag}")
        self.topic = topic
        self.ready_max_lag = ready_max_lag
        self.lag_every_s = lag_every_s
        self.alive_within_s = alive_within_s
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.records = Counter("metricfold_records_folded", "Kafka records read and folded (undecodable ones included)",
                               registry=r)
        self.events = Counter("metricfold_events_folded", "Events applied to the run views (as Redis counts them)",
                              registry=r)
        self.batches = Counter("metricfold_batches", "Batches (polls with records) folded", registry=r)
        self.dead_letters = Counter("metricfold_dead_letters", "Records or events sent to the dead-letter topic, by "
                                    "reason: undecodable (not an event), refused (by the fold), poisoned (failed the "
                                    "fold or the write on its own)", ["reason"], registry=r)
        self.conflicts = Counter("metricfold_write_conflicts", "Run writes refused because Redis held another "
                                 "applied offset (the batch is folded again)", registry=r)
        self.batch_seconds = Histogram("metricfold_batch_duration_seconds", "Where a batch's time went: poll (waiting "
                                       "for records), fold (decode, fold, dead letters), redis (the round trip)",
                                       ["stage"], buckets=_DURATION_BUCKETS, registry=r)
        self.freshness = Histogram("metricfold_freshness_seconds", "Per batch: from its oldest record's Kafka "
                                   "timestamp (the producer's clock at send) until the batch was written to Redis",
                                   buckets=_FRESHNESS_BUCKETS, registry=r)
        self.lag = Gauge("metricfold_partition_lag", "Records between the consumer's position and the end of an "
                         "assigned partition (measured every few seconds)", ["topic", "partition"], registry=r)
        self.assigned = Gauge("metricfold_assigned_partitions", "Partitions assigned to this consumer", registry=r)
        self.ready = Gauge("metricfold_ready", "1 when /readyz says ready (at the last lag measurement), else 0",
                           registry=r)
        self.rebalances = Counter("metricfold_rebalances", "Partition assignments and revocations seen",
                                  ["kind"], registry=r)
        self.rebuilds = Counter("metricfold_kafka_client_rebuilds", "Kafka clients closed and made anew (a stall, "
                                "a broker away)", registry=r)
        self.redis_errors = Counter("metricfold_redis_errors", "Redis failures the consumer resumed from", registry=r)
        self.kafka_errors = Counter("metricfold_kafka_errors", "Kafka failures the consumer resumed from", registry=r)
        self.state_bytes = Counter("metricfold_state_bytes_written", "Bytes of run fold states written to Redis",
                                   registry=r)
        self.last_loop = Gauge("metricfold_last_loop_timestamp_seconds", "Unix time the consume loop last went round",
                               registry=r)
        for reason in ("undecodable", "refused", "poisoned"):
            self.dead_letters.labels(reason)  # shown as 0 before the first one
        for kind in ("assigned", "revoked"):
            self.rebalances.labels(kind)
        self._stages = tuple(self.batch_seconds.labels(stage) for stage in ("poll", "fold", "redis"))
        self._undecodable = self.dead_letters.labels("undecodable")
        self._seen = (0, 0, 0, 0, 0, 0)  # the report's counts already added to the counters
        self._clients = 0
        self._lag_at = 0.0  # monotonic time of the next lag measurement
        self._lag_partitions: set[int] = set()
        self._tick_at = time.monotonic()  # the loop counts as alive from the start
        self._rebalanced_at = 0.0  # monotonic time of the last assignment change
        self._measured_at: float | None = None  # monotonic time of the last lag measurement
        #: (ready, reason, detail), replaced whole by the loop thread, read by the HTTP thread
        self._readiness: tuple[bool, str, dict[str, Any]] = (False, "no partitions assigned yet", {})

    # ------------------------------------------------------------------ calls from the runner
    def tick(self, report: ConsumeReport, kafka: GroupConsumer | None) -> None:
        """Once per turn of the consume loop: the report's counts into the counters, and now and then the lag."""
        now = time.monotonic()
        self._tick_at = now
        self.last_loop.set(time.time())
        seen = (report.records, report.events_applied, report.undecodable, report.batches, report.conflicts,
                report.redis_failures)
        if seen != self._seen:
            old = self._seen
            self._seen = seen
            self.records.inc(seen[0] - old[0])
            self.events.inc(seen[1] - old[1])
            self._undecodable.inc(seen[2] - old[2])
            self.batches.inc(seen[3] - old[3])
            self.conflicts.inc(seen[4] - old[4])
            self.redis_errors.inc(seen[5] - old[5])
        if now >= self._lag_at:
            self._lag_at = now + self.lag_every_s
            self._measure_lag(kafka, now)

    def batch(self, timing: BatchTiming) -> None:
        """One written batch's durations and freshness."""
        poll, fold, redis = self._stages
        poll.observe(timing.poll_ms / 1000.0)
        fold.observe(timing.fold_ms / 1000.0)
        redis.observe(timing.redis_ms / 1000.0)
        if timing.oldest_age_ms is not None:
            readable_ms = timing.oldest_age_ms + timing.fold_ms + timing.redis_ms
            self.freshness.observe(max(0.0, readable_ms / 1000.0))

    def rebalanced(self, kind: str, partitions: list[int]) -> None:
        """*kind*: "assigned" or "revoked"; the lag is measured again at the next turn of the loop."""
        self.rebalances.labels(kind).inc()
        self._rebalanced_at = time.monotonic()
        self._lag_at = 0.0

    def dead_letter(self, reason: str, count: int = 1) -> None:
        self.dead_letters.labels(reason).inc(count)

    def kafka_client_made(self) -> None:
        """A Kafka client was made: every one after the first is a rebuild."""
        self._clients += 1
        if self._clients > 1:
            self.rebuilds.inc()
        self._lag_at = 0.0

    def kafka_error(self) -> None:
        self.kafka_errors.inc()

    def state_written(self, size: int) -> None:
        self.state_bytes.inc(size)

    # ------------------------------------------------------------------ lag and readiness
    def _measure_lag(self, kafka: GroupConsumer | None, now: float) -> None:
        if kafka is None:
            self._set_lag({})
            self._readiness = (False, "no Kafka client (one is being made)", {})
            self.ready.set(0)
            return
        try:
            lags = kafka.partition_lag(timeout_s=LAG_TIMEOUT_S)
        except BrokerUnavailable as exc:  # not the loop's business: the lag is unknown until the next try
            log.info("the lag could not be measured: %s", exc)
            self._readiness = (False, f"the lag could not be measured: {exc}", {})
            self.ready.set(0)
            self._lag_at = now + max(self.lag_every_s, LAG_RETRY_S)
            return
        self._set_lag(lags)
        total = sum(lags.values())
        detail: dict[str, Any] = {"partitions": sorted(lags), "lag": total, "max_lag": self.ready_max_lag}
        if not lags:
            self._readiness = (False, "no partitions assigned", detail)
        elif self._rebalanced_at > now:  # assigned again while measuring
            self._readiness = (False, "partitions were assigned again; measuring their lag", detail)
        elif total > self.ready_max_lag:
            self._readiness = (False, f"lag {total} records is over {self.ready_max_lag} (--ready-max-lag)", detail)
        else:
            self._readiness = (True, "partitions assigned and caught up", detail)
        self._measured_at = now
        self.ready.set(1 if self._readiness[0] else 0)

    def _set_lag(self, lags: dict[int, int]) -> None:
        for gone in self._lag_partitions - lags.keys():
            self.lag.remove(self.topic, str(gone))
        for partition, lag in lags.items():
            self.lag.labels(self.topic, str(partition)).set(lag)
        self._lag_partitions = set(lags)
        self.assigned.set(len(lags))

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of /healthz."""
        silent = time.monotonic() - self._tick_at
        alive = silent <= self.alive_within_s
        body: dict[str, Any] = {"alive": alive, "last_loop_seconds_ago": round(silent, 3)}
        if not alive:
            body["reason"] = f"the consume loop has not gone round for {silent:.0f} s (limit {self.alive_within_s:.0f} s)"
        return (200 if alive else 503), body

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of /readyz; a consumer whose loop is not alive, or whose lag was last measured
        more than 3 intervals (and at least 30 s) ago, is not ready either."""
        ready, reason, detail = self._readiness
        status, health = self.health()
        measured = self._measured_at
        stale = measured is None or time.monotonic() - measured > max(30.0, 3 * self.lag_every_s)
        if status != 200:
            ready, reason = False, health["reason"]
        elif ready and stale:
            ready, reason = False, "the lag has not been measured lately"
        return (200 if ready else 503), {"ready": ready, "reason": reason, **detail}


class ServeMetrics:
    """The request metrics of one `metricfold serve` app (consumer/web/instrument.py feeds them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        self.requests = Counter("metricfold_serve_requests", "HTTP requests answered, by route (its template) and "
                                "status", ["route", "status"], registry=r)
        self.latency = Histogram("metricfold_serve_request_duration_seconds", "From a request's arrival until its "
                                 "response headers were sent, by route", ["route"], buckets=_REQUEST_BUCKETS, registry=r)
        self.streams = Gauge("metricfold_serve_live_streams", "Open live-update streams (server-sent events)", registry=r)

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
