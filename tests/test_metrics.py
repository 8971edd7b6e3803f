"""Metrics and health (issue 17 item 4), on the real broker and Redis: `metricfold consume --metrics-port` scraped
by Debian's prometheus server, whose HTTP API must give back the events the consumer folded; /readyz and /healthz
of a consumer; `metricfold serve`'s own request metrics behind its token."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

import producer as mf
from consumer.kafka_io import GroupConsumer
from consumer.metrics import ConsumerMetrics, MetricsServer
from consumer.runner import Consumer, ConsumeReport
from consumer.store import Store
from consumer.web.server import ServerThread
from schemas.settings import Settings

from support import consume_all, consumer_process, metricfold_cli, start_stream, stream_events, wait_all

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
TOKEN = "metrics-test-token-0123456789"


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _json(url: str) -> tuple[int, dict[str, Any]]:
    status, body = _get(url)
    return status, json.loads(body)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _events_folded(settings: Settings) -> int:
    with Store(settings) as store:
        return store.stats().get("events", 0)


# ---------------------------------------------------------------- readiness and lag, measured on the real broker
def test_not_ready_before_assignment_then_lag_gauges_and_ready_once_caught_up(settings: Settings) -> None:
    for i in range(3):
        with mf.init(entity="team", project="watch", run_id=f"r{i}", settings=settings) as run:
            run.log({"loss": 1.0 / (i + 1)})
    metrics = ConsumerMetrics(settings.topic, ready_max_lag=0, lag_every_s=0.0)
    server = MetricsServer(metrics).start()
    reader: GroupConsumer | None = None
    try:
        status, body = _json(f"{server.url}/readyz")
        assert (status, body["ready"], body["reason"]) == (503, False, "no partitions assigned yet")
        assert _json(f"{server.url}/healthz")[0] == 200
        metrics.tick(ConsumeReport(), None)
        status, body = _json(f"{server.url}/readyz")
        assert status == 503 and "no Kafka client" in body["reason"]

        reader = GroupConsumer(settings, on_assigned=lambda partitions: {}, on_revoked=lambda partitions: None, group=False)
        metrics.tick(ConsumeReport(), reader)  # assigned every partition, positioned at the start: the whole log waits
        waiting = sum(reader.partition_lag().values())
        assert waiting >= 3  # a record (or more) for each run
        status, body = _json(f"{server.url}/readyz")
        assert (status, body["ready"], body["partitions"], body["lag"]) == (503, False, [0, 1, 2, 3], waiting)
        assert "over 0 (--ready-max-lag)" in body["reason"]
        gauges = _samples(_get(f"{server.url}/metrics")[1].decode())
        lag_by_partition = {dict(labels)["partition"]: value for (name, labels), value in gauges.items()
                            if name == "metricfold_partition_lag"}
        assert sorted(lag_by_partition) == ["0", "1", "2", "3"] and sum(lag_by_partition.values()) == waiting
        assert gauges[("metricfold_assigned_partitions", ())] == 4

        read = 0
        deadline = time.monotonic() + 30
        while read < waiting and time.monotonic() < deadline:
            read += len(reader.poll(timeout_ms=200))
        assert read == waiting
        metrics.tick(ConsumeReport(), reader)
        status, body = _json(f"{server.url}/readyz")
        assert (status, body["ready"], body["lag"]) == (200, True, 0)
        assert gauges[("metricfold_ready", ())] == 0  # as scraped before
        assert _samples(_get(f"{server.url}/metrics")[1].decode())[("metricfold_ready", ())] == 1
        assert _samples(_get(f"{server.url}/metrics")[1].decode())[("metricfold_partition_lag", (
            ("partition", "0"), ("topic", settings.topic)))] == 0
    finally:
        if reader is not None:
            reader.close()
        server.close()


def test_a_running_consumer_counts_what_it_folds_and_healthz_fails_once_its_loop_stops(settings: Settings) -> None:
    for i in range(4):
        with mf.init(entity="team", project="watch", run_id=f"r{i}", settings=settings) as run:
            for step in range(50):
                run.log({"loss": 1.0 / (step + 1)})
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    producer.send(settings.topic, key=b"not a run path", value=b"junk").get(timeout=30)
    producer.close()
    metrics = ConsumerMetrics(settings.topic, ready_max_lag=0, alive_within_s=1.0)
    consumer = Consumer(settings)
    consumer.metrics = metrics
    server = MetricsServer(metrics).start()
    thread = threading.Thread(target=consumer.run, daemon=True)
    try:
        thread.start()
        # ready with --ready-max-lag 0: every record was read and written
        _until("the consumer to be ready", lambda: _json(f"{server.url}/readyz")[0] == 200, 30)
        status, body = _json(f"{server.url}/healthz")
        assert (status, body["alive"]) == (200, True) and body["last_loop_seconds_ago"] < 1.0
        folded = _events_folded(settings)
        assert folded == 4 * (2 + 50)  # per run: started, 50 logs, finished

        def figure(name: str, **labels: str) -> float:
            return _samples(_get(f"{server.url}/metrics")[1].decode()).get((name, tuple(sorted(labels.items()))), -1.0)

        assert figure("metricfold_events_folded_total") == folded == consumer.report.events_applied
        assert figure("metricfold_records_folded_total") == consumer.report.records >= 5
        assert figure("metricfold_dead_letters_total", reason="undecodable") == 1
        assert figure("metricfold_dead_letters_total", reason="refused") == 0
        assert figure("metricfold_batch_duration_seconds_count", stage="redis") == consumer.report.batches >= 1
        assert figure("metricfold_freshness_seconds_count") == consumer.report.batches
        assert figure("metricfold_rebalances_total", kind="assigned") >= 1
        assert figure("metricfold_kafka_client_rebuilds_total") == 0
        # idle now: the fold states are stored
        assert _until("the fold states to be written", lambda: figure("metricfold_state_bytes_written_total") > 0, 10)
        consumer.stopping = True
        thread.join(timeout=30)
        assert not thread.is_alive()
        time.sleep(1.5)
        status, body = _json(f"{server.url}/healthz")
        assert (status, body["alive"]) == (503, False) and "has not gone round" in body["reason"]
        assert _json(f"{server.url}/readyz")[0] == 503  # a consumer that is not alive is not ready either
    finally:
        consumer.stopping = True
        thread.join(timeout=30)
        consumer.close()
        server.close()


# ---------------------------------------------------------------- Prometheus scrapes a live consumer
def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        install = subprocess.run(["bash", str(REPO / "deploy" / "local" / "prometheus.sh")], capture_output=True, text=True)
        found = shutil.which("prometheus")
        if found is None:
            pytest.skip("Debian's prometheus server is not installed and deploy/local/prometheus.sh could not install it "
                        f"({install.stderr.strip()[-300:]}): run `make prometheus` as root, or "
                        "`sudo apt-get install -y prometheus`")
    return found


@contextlib.contextmanager
def _prometheus_server(binary: str, directory: Path, target: str) -> Iterator[str]:
    """Prometheus on a free loopback port, scraping *target* (host:port) every second, its data in *directory*."""
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        f"scrape_configs:\n  - job_name: metricfold-consumer\n    static_configs:\n      - targets: ['{target}']\n"
    )
    port = _free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({proc.returncode}): {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                return _get(f"{url}/-/ready", timeout=1)[0] == 200
            return False

        _until("prometheus to be ready", ready, 30)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _query(prometheus: str, expression: str) -> list[dict[str, Any]]:
    status, body = _json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expression}))
    assert status == 200 and body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_the_events_a_live_consumer_folds(settings: Settings, tmp_path: Path) -> None:
    binary = _prometheus()
    log = tmp_path / "consumer.log"
    consumer = consumer_process(settings, log, "--metrics-port", "0")
    try:
        found = _until("the consumer's metrics address in its log",
                       lambda: re.search(r"metrics at http://(127\.0\.0\.1:\d+)/metrics", log.read_text()), 30)
        address = found.group(1)
        with _prometheus_server(binary, tmp_path, address) as prometheus:
            _until("Prometheus to scrape the consumer", lambda: _query(prometheus, "up") and
                   _query(prometheus, "up")[0]["value"][1] == "1", 20)
            producers, runs, per_run = 2, 3, 200
            wait_all(start_stream(settings, producers, runs, per_run, pause_s=0.2))
            expected = stream_events(runs, per_run) * producers
            _until("the consumer to fold every event", lambda: _events_folded(settings) == expected, 60)

            def scraped() -> float | None:
                result = _query(prometheus, "metricfold_events_folded_total")
                value = float(result[0]["value"][1]) if result else None
                return value if value == expected else None

            assert _until(f"Prometheus to hold {expected} folded events", scraped, 20) == expected
            assert _events_folded(settings) == expected  # nothing more was folded meanwhile
            # the lag the consumer measured reached Prometheus too: nothing waits any more
            assert _until("a lag of 0", lambda: (r := _query(prometheus, "sum(metricfold_partition_lag)")) and
                          r[0]["value"][1] == "0", 20)
            assert _json(f"http://{address}/readyz")[0] == 200
            assert _json(f"http://{address}/healthz")[0] == 200
            # every query of the Grafana dashboard is valid PromQL (Prometheus answers 400 to one that is not)
            dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "consumer.json").read_text())
            for expression in [t["expr"] for p in dashboard["panels"] for t in p["targets"]]:
                _query(prometheus, expression)
    finally:
        consumer.terminate()
        assert consumer.wait(timeout=30) == 0, log.read_text()[-3000:]
    with pytest.raises(OSError):  # the metrics port closed with the consumer
        _get(f"http://{address}/healthz", timeout=2)


def test_the_compose_prometheus_config_is_valid_and_scrapes_where_the_services_serve() -> None:
    _prometheus()  # Debian's package brings promtool along
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package has it)")
    config_path = REPO / "deploy" / "prometheus" / "prometheus.yml"
    checked = subprocess.run([promtool, "check", "config", str(config_path)], capture_output=True, text=True)
    config = config_path.read_text()
    compose = (REPO / "deploy" / "docker-compose.yml").read_text()
    datasource = (REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    consumer_port = re.search(r'"metricfold", "consume", "--metrics-port", "(\d+)"', compose)
    serve_port = re.search(r'"metricfold", "serve", [^\n]*"--port", "(\d+)"', compose)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert consumer_port and f'"consumer:{consumer_port[1]}"' in config
    assert serve_port and f'"serve:{serve_port[1]}"' in config
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml" in compose
    assert "url: http://prometheus:9090\n" in datasource and "  prometheus:\n" in compose


# ---------------------------------------------------------------- serve's own request metrics
def test_serve_counts_requests_by_route_and_open_streams_behind_its_token(settings: Settings) -> None:
    with mf.init(entity="team", project="live", run_id="r0", settings=settings) as run:
        run.log({"loss": 1.0})
    consume_all(settings)
    auth = {"authorization": f"Bearer {TOKEN}"}
    with ServerThread(settings, token=TOKEN) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/metrics").status_code == 401  # the token guards /metrics as everything else
        assert client.get("/api/projects", headers=auth).status_code == 200
        assert client.get("/api/runs/team/live/nope", headers=auth).status_code == 404
        assert client.get("/api/runs/team/live/r0", headers=auth).status_code == 200

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            reply = client.get("/metrics", headers=auth)
            assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
            return _samples(reply.text)

        def requests(route: str, status: str) -> float:
            return samples.get(("metricfold_serve_requests_total", (("route", route), ("status", status))), 0.0)

        samples = scrape()
        assert requests("/metrics", "401") == 1
        assert requests("/api/projects", "200") == 1
        assert requests("/api/runs/{entity}/{project}/{run_id}", "404") == 1
        assert requests("/api/runs/{entity}/{project}/{run_id}", "200") == 1
        assert samples[("metricfold_serve_request_duration_seconds_count",
                        (("route", "/api/runs/{entity}/{project}/{run_id}"),))] == 2
        assert samples[("metricfold_serve_live_streams", ())] == 0

        with client.stream("GET", "/api/projects/team/live/changes", headers=auth) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()  # kept: a dropped iterator closes the response
            assert next(lines).startswith("retry:")  # the stream is open
            samples = scrape()
            assert samples[("metricfold_serve_live_streams", ())] == 1
            lines.close()
        _until("the closed stream to be counted out",
               lambda: scrape()[("metricfold_serve_live_streams", ())] == 0, 20)


def test_consume_refuses_a_metrics_port_in_use_before_connecting(settings: Settings) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = metricfold_cli(settings, "consume", "--metrics-port", str(port), timeout=60)
    assert done.returncode == 2
    assert f"cannot serve the metrics on 127.0.0.1:{port}" in done.stderr and "choose another --metrics-port" in done.stderr
