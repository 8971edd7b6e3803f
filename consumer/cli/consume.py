"""`metricfold consume`: fold the event topic into Redis as a consumer-group member, until stopped (SIGTERM or
Ctrl-C finish the current batch) or caught up; with per-batch timings and a metrics and health port if asked."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from consumer.cli.gc_tuning import tune_gc_for_a_long_fold
from consumer.cli.options import Subcommands, add_connection_options, non_negative_int, port, positive_seconds, settings_from_args
from schemas.errors import ConfigError
from schemas.settings import Settings

if TYPE_CHECKING:
    from consumer.metrics import ConsumerMetrics, MetricsServer
    from consumer.runner import ConsumeReport

log = logging.getLogger("metricfold")


def add_parsers(subparsers: Subcommands) -> None:
    consume = subparsers.add_parser(
        "consume",
        help="fold the event topic into Redis (a consumer-group member; run several to share partitions)",
        description="Fold the event topic into Redis. Several processes with the same group share the partitions. "
        "SIGTERM or Ctrl-C finishes the current batch, commits and exits.",
    )
    add_connection_options(consume)
    consume.add_argument("--until-caught-up", action="store_true", help="exit once every partition's lag is zero")
    consume.add_argument("--quiet", action="store_true", help="no progress lines")
    consume.add_argument(
        "--stall-timeout",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="make a new Kafka client when the consumer fetches nothing this long although records wait in its "
        "partitions (a broker that stopped answering, a client that stopped asking), and resume from Redis (30)",
    )
    consume.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS", help="progress line interval (5)")
    consume.add_argument(
        "--timings",
        type=Path,
        metavar="FILE",
        help="append one JSON line per batch to FILE: records, runs written, poll / fold / Redis ms, and the age of "
        "its oldest and newest record (from their Kafka timestamps) when polled",
    )
    watch = consume.add_argument_group("metrics and health (see the README, 'Watching the consumer')")
    watch.add_argument(
        "--metrics-port",
        type=port,
        metavar="PORT",
        help="serve Prometheus metrics at /metrics, liveness at /healthz and readiness at /readyz on this port "
        "(0: any free one, printed at the start); off by default",
    )
    watch.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDRESS",
                       help="address the metrics port listens on (127.0.0.1; 0.0.0.0 for every interface)")
    watch.add_argument(
        "--ready-max-lag",
        type=non_negative_int,
        default=10_000,
        metavar="RECORDS",
        help="/readyz answers 200 once partitions are assigned and at most this many records wait in them (10000)",
    )
    consume.set_defaults(func=_cmd_consume)


def _open_timings(path: Path) -> TextIO:
    try:
        return path.open("a", buffering=1, encoding="utf-8")  # line-buffered: a kill -9 loses at most one line
    except OSError as exc:
        raise ConfigError(f"--timings: cannot open {path} for appending: {exc.strerror or exc}") from exc


def _start_metrics(args: argparse.Namespace, settings: Settings) -> tuple[ConsumerMetrics, MetricsServer]:
    """`consume --metrics-port`: the metrics and health endpoints, listening before the consumer starts (so that
    /healthz and /readyz answer during its start)."""
    from consumer.metrics import ConsumerMetrics, MetricsServer

    metrics = ConsumerMetrics(settings.topic, ready_max_lag=args.ready_max_lag)
    server = MetricsServer(metrics, args.metrics_host, args.metrics_port).start()
    print(f"metrics at {server.url}/metrics, health at {server.url}/healthz and {server.url}/readyz",
          file=sys.stderr, flush=True)
    return metrics, server


class _StoppedWhileStarting(BaseException):
    """SIGTERM or SIGINT before the consumer was running: nothing to finish, exit cleanly. (Not an Exception:
    client libraries catch those, wrapped as their own errors.)"""


def _cmd_consume(args: argparse.Namespace) -> int:
    from consumer.kafka_io import ensure_topics
    from consumer.runner import BatchTiming, Consumer

    running: list[Consumer] = []

    def stop(signum: int, frame: object) -> None:
        if not running:
            raise _StoppedWhileStarting(f"signal {signum}")
        log.warning("signal %d: finishing the current batch, then exiting", signum)
        running[0].stopping = True

    # from the first moment: a process stopped while it connects exits 0, not killed by the signal's default action
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    settings = settings_from_args(args)
    timings = _open_timings(args.timings) if args.timings else None
    watch = _start_metrics(args, settings) if args.metrics_port is not None else None
    try:
        ensure_topics(settings)
        consumer = Consumer(settings, stall_limit_s=args.stall_timeout)
        running.append(consumer)
    except _StoppedWhileStarting as exc:
        log.warning("%s while starting: exiting before consuming anything", exc)
        if watch is not None:
            watch[1].close()
        return 0
    except BaseException:
        if watch is not None:
            watch[1].close()
        raise
    if watch is not None:
        consumer.metrics = watch[0]
    if timings is not None:
        sink = timings

        def write_timing(timing: BatchTiming) -> None:
            sink.write(json.dumps(dataclasses.asdict(timing)) + "\n")

        consumer.on_timing = write_timing
    tune_gc_for_a_long_fold()

    last = [time.monotonic()]

    def progress(report: ConsumeReport) -> None:
        if not args.quiet and time.monotonic() - last[0] >= args.progress_every:
            last[0] = time.monotonic()
            print(
                f"consumed {report.records} records, {report.events_applied} events applied, "
                f"{report.dead_letters + report.undecodable} dead letters",
                file=sys.stderr,
                flush=True,
            )

    print(
        f"consuming {settings.topic} at {settings.kafka_display} as group {settings.group_id} into "
        f"{settings.redis_display} (namespace {settings.namespace}, generation {consumer.generation})",
        file=sys.stderr,
        flush=True,
    )
    try:
        report = consumer.run(until_caught_up=args.until_caught_up, on_batch=progress)
    finally:
        consumer.close()
        if timings is not None:
            timings.close()
        if watch is not None:
            watch[1].close()
    rate = report.events_applied / report.seconds if report.seconds else 0.0
    print(
        f"done: {report.records} records, {report.events_applied} events applied ({rate:,.0f}/s), "
        f"{report.dead_letters} events and {report.undecodable} records sent to {settings.dead_letter_topic}",
        file=sys.stderr,
    )
    return 0
