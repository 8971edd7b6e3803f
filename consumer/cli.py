"""The `metricfold` command. Run `metricfold --help`, or `metricfold COMMAND --help`."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from schemas.errors import BrokerUnavailable, ConfigError, MetricfoldError
from schemas.limits import check_run_part, parse_run_path
from schemas.settings import Settings
from schemas.text import printable

if TYPE_CHECKING:
    from consumer.metrics import ConsumerMetrics, MetricsServer
    from consumer.runner import ConsumeReport

__all__ = ["main"]

log = logging.getLogger("metricfold")


def _positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds greater than 0")
    return value


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 0 to 65535")
    return int(text)


def _non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


#: options a secret would be passed with, and where it goes instead: refused (a process's arguments are readable by
#: every user of the machine, with `ps`, and stay in the shell's history), without echoing what was given (argparse
#: would print an unknown option's value back as "unrecognized arguments: ...")
_SECRET_OPTIONS: dict[tuple[str, ...], str] = {
    ("--password", "--redis-password"): "METRICFOLD_REDIS_PASSWORD_FILE (a file of mode 0600) or METRICFOLD_REDIS_PASSWORD",
    ("--kafka-password", "--kafka-sasl-password", "--sasl-password"):
        "METRICFOLD_KAFKA_SASL_PASSWORD_FILE (a file of mode 0600) or METRICFOLD_KAFKA_SASL_PASSWORD",
}
_TOKEN_OPTIONS: dict[tuple[str, ...], str] = {
    ("--token", "--serve-token"): "--token-file / METRICFOLD_SERVE_TOKEN_FILE (a file of mode 0600) or METRICFOLD_SERVE_TOKEN",
}


class _RefuseSecret(argparse.Action):
    """A hidden option that refuses the secret given with it, naming the variable or file to use instead."""

    def __init__(self, option_strings: list[str], dest: str, instead: str = "", **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS)
        self.instead = instead

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string}: a secret is never taken on the command line (every user of this machine can "
                     f"read a process's arguments, and the shell keeps them in its history): use {self.instead} instead")


def _refuse_secret_options(parser: argparse.ArgumentParser, options: dict[tuple[str, ...], str]) -> None:
    for names, instead in options.items():
        parser.add_argument(*names, action=_RefuseSecret, instead=instead, dest=argparse.SUPPRESS)


def _redis_url_without_password(url: str) -> str:
    """--redis: a URL with a password in it is refused (without echoing it), like the other secret options."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None  # not a URL at all: Settings says what is wrong with it, with the password hidden
    if password is not None:
        raise argparse.ArgumentTypeError(
            "a password is never taken on the command line (every user of this machine can read a process's "
            "arguments): give the URL without it, and the password in METRICFOLD_REDIS_PASSWORD_FILE (a file of mode "
            "0600) or METRICFOLD_REDIS_PASSWORD; or the whole URL in METRICFOLD_REDIS")
    return url


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    _refuse_secret_options(parser, _SECRET_OPTIONS)
    group = parser.add_argument_group("connection (each defaults to its environment variable)")
    group.add_argument("--kafka", help="Kafka bootstrap servers, host:port[,...] (METRICFOLD_KAFKA, default localhost:9092)")
    group.add_argument("--redis", type=_redis_url_without_password,
                       help="Redis URL (METRICFOLD_REDIS, default redis://localhost:6379/0); a password goes in "
                       "METRICFOLD_REDIS_PASSWORD_FILE or METRICFOLD_REDIS_PASSWORD, never on the command line")
    group.add_argument("--topic", help="event topic (METRICFOLD_TOPIC, default metricfold.events)")
    group.add_argument("--namespace", help="Redis key prefix (METRICFOLD_NAMESPACE, default mf)")
    group.add_argument("--group", help="consumer group id (METRICFOLD_GROUP, default metricfold-<namespace>)")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        kafka=args.kafka, redis=args.redis, topic=args.topic, namespace=args.namespace, group=args.group
    )


def _cmd_topics(args: argparse.Namespace) -> int:
    from consumer.kafka_io import ensure_topics

    settings = _settings(args)
    created = ensure_topics(settings)
    note = f" (created {', '.join(created)})" if created else ""
    print(f"topics ready: {settings.topic}, {settings.dead_letter_topic}{note}")
    return 0


def _tune_gc_for_a_long_fold() -> None:
    """The fold makes many short-lived containers and keeps every cached run's state: with CPython's default
    thresholds the consumer collected ~35 times a second and scanned everything it had imported on each full
    collection (bench/load.py, 20,000 events/s: ~1 s of GC per 40 s, full collections up to 80 ms, each one
    a pause in the live fold). Leave what is loaded by now (modules, schemas, kafka-python's protocol
    tables) out of collections, and collect less often: ~0.1 s per 40 s, pauses up to ~40 ms. Memory is
    unaffected (reference counting frees almost everything; cycles are still collected)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


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
    settings = _settings(args)
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
    _tune_gc_for_a_long_fold()

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


def _cmd_sync(args: argparse.Namespace) -> int:
    from consumer.tables import render_table
    from producer.spool import sync

    settings = _settings(args)
    directory = Path(args.directory)
    report = sync(directory, settings)
    if not report.results:
        print(f"no spool files (*.spool.avro) under {directory}: nothing to send")
        return 0
    rows = [
        [str(r.path.relative_to(directory)), str(r.sent), str(r.already), str(r.refused),
         r.status + (f": {r.reason}" if r.reason else "")]
        for r in report.results
    ]
    print(render_table(["file", "sent", "already sent", "refused", "status"], rows))
    print(f"{report.records} records ({report.events} events) sent to {settings.topic}")
    problems = [r for r in report.results if not r.ok]
    if problems:
        print(f"metricfold: error: {len(problems)} of {len(report.results)} spool files were not fully published "
              "(skipped, refused or not sent: see the status column)", file=sys.stderr)
        return 1
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from consumer.store import Store
    from consumer.tables import print_run

    parse_run_path(args.run_path)
    with Store(_settings(args)) as store:
        print_run(args.run_path, store.read_run(args.run_path), as_json=args.json)
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from consumer.tables import print_runs

    entity_project = args.project.split("/")
    if len(entity_project) != 2:
        raise ConfigError(f"PROJECT {args.project!r} must look like 'entity/project'")
    check_run_part("entity", entity_project[0])
    check_run_part("project", entity_project[1])
    if args.limit < 1 or args.limit > 10_000:
        raise ConfigError(f"--limit must be between 1 and 10000, got {args.limit}")
    from consumer.store import Store

    columns = [c for c in (args.columns or "").split(",") if c]
    with Store(_settings(args)) as store:
        print_runs(
            store, args.project, sort=args.sort, ascending=args.ascending, limit=args.limit, columns=columns, as_json=args.json
        )
    return 0


def _parse_until_offsets(text: str) -> dict[int, int]:
    offsets: dict[int, int] = {}
    for part in text.split(","):
        try:
            partition, offset = part.split(":")
            offsets[int(partition)] = int(offset)
        except ValueError:
            raise ConfigError(f"--until-offset wants PARTITION:OFFSET[,PARTITION:OFFSET...], got {text!r}") from None
        if offsets[int(partition)] < 0 or int(partition) < 0:
            raise ConfigError(f"--until-offset partitions and offsets must be >= 0, got {part!r}")
    return offsets


def _parse_time_ms(text: str) -> int:
    import datetime

    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--until-time wants an ISO 8601 time such as 2026-11-28T21:30:00Z, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def _cmd_replay(args: argparse.Namespace) -> int:
    from consumer.replay import replay

    _tune_gc_for_a_long_fold()
    report = replay(
        _settings(args),
        generation=args.generation,
        switch=args.switch,
        keep=args.keep,
        until_offsets=_parse_until_offsets(args.until_offset) if args.until_offset else None,
        until_time_ms=_parse_time_ms(args.until_time) if args.until_time else None,
        allow_gaps=args.allow_gaps,
        progress=not args.quiet,
    )
    rate = report.events / report.seconds if report.seconds else 0.0
    print(f"replayed {report.records:,} records, {report.events:,} events in {report.seconds:.1f} s ({rate:,.0f} events/s)")
    print(f"generation {report.generation}  digest {report.digest}")
    if report.switched:
        print(f"switched: {report.generation} is now active" + (f"; deleted {report.deleted}" if report.deleted else ""))
    else:
        print("not switched: readers still use the active generation (pass --switch, or compare with `metricfold digest`)")
    return 0


def _cmd_digest(args: argparse.Namespace) -> int:
    from consumer.digest import digest_generation
    from consumer.store import Store

    with Store(_settings(args)) as store:
        generation = args.generation or store.active_generation()
        if generation is None:
            raise ConfigError(f"namespace {store.settings.namespace!r} has no active generation: nothing was folded yet")
        print(f"{digest_generation(store, generation)}  {store.settings.namespace}:{generation}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("`metricfold serve` needs Starlette and uvicorn: pip install 'metricfold[serve]'") from None
    from consumer.web.server import check_tls_files, load_token, serve

    settings = Settings.from_env(
        kafka=args.kafka, redis=args.redis, topic=args.topic, namespace=args.namespace, group=args.group,
        redis_username=args.redis_username,
    )
    token = load_token(args.token_file or os.environ.get("METRICFOLD_SERVE_TOKEN_FILE") or None)
    tls_cert = args.tls_cert or os.environ.get("METRICFOLD_SERVE_TLS_CERT") or None
    tls_key = args.tls_key or os.environ.get("METRICFOLD_SERVE_TLS_KEY") or None
    check_tls_files(tls_cert, tls_key)
    return serve(settings, host=args.host, port=args.port, token=token, access_log=args.access_log,
                 tls_cert=tls_cert, tls_key=tls_key)


def _cmd_demo(args: argparse.Namespace) -> int:
    from consumer.demo import run_demo

    return run_demo(_settings(args), serve=not args.no_serve, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metricfold",
        description="Streaming metrics summaries: trainers log to Kafka, the consumer folds them into Redis.",
        epilog="Start the local stack with `make up`, then `source .stack/env` to point these commands at it.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    topics = commands.add_parser("topics", help="create the event and dead-letter topics if missing")
    _add_connection_options(topics)
    topics.set_defaults(func=_cmd_topics)

    consume = commands.add_parser(
        "consume",
        help="fold the event topic into Redis (a consumer-group member; run several to share partitions)",
        description="Fold the event topic into Redis. Several processes with the same group share the partitions. "
        "SIGTERM or Ctrl-C finishes the current batch, commits and exits.",
    )
    _add_connection_options(consume)
    consume.add_argument("--until-caught-up", action="store_true", help="exit once every partition's lag is zero")
    consume.add_argument("--quiet", action="store_true", help="no progress lines")
    consume.add_argument(
        "--stall-timeout",
        type=_positive_seconds,
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
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at /metrics, liveness at /healthz and readiness at /readyz on this port "
        "(0: any free one, printed at the start); off by default",
    )
    watch.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDRESS",
                       help="address the metrics port listens on (127.0.0.1; 0.0.0.0 for every interface)")
    watch.add_argument(
        "--ready-max-lag",
        type=_non_negative_int,
        default=10_000,
        metavar="RECORDS",
        help="/readyz answers 200 once partitions are assigned and at most this many records wait in them (10000)",
    )
    consume.set_defaults(func=_cmd_consume)

    sync = commands.add_parser(
        "sync",
        help="publish spooled events (offline runs, or logged while Kafka was unreachable); safe to repeat",
        description="Publish every spool file in DIR to the event topic. Safe to run twice: records already sent are "
        "not sent again, and the consumer ignores an event it has already applied (producer id + seq). Each record "
        "is checked as the SDK checks what it sends: one the SDK would not have sent, or one larger than a Kafka "
        "record, is refused (not published; checked again by the next sync). Prints per file the records sent, "
        "already sent and refused, and a status with its reason; exits 1 when anything was refused, skipped (not "
        "a spool file, a marker sync did not write) or not sent (Kafka unreachable), 2 when DIR does not exist.",
    )
    sync.add_argument("directory", metavar="DIR", help="spool directory (default of the SDK: ./metricfold-spool)")
    _add_connection_options(sync)
    sync.set_defaults(func=_cmd_sync)

    summary = commands.add_parser("summary", help="print one run's summary from Redis")
    summary.add_argument("run_path", metavar="RUN_PATH", help="entity/project/run_id")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_connection_options(summary)
    summary.set_defaults(func=_cmd_summary)

    runs = commands.add_parser("runs", help="print a project's runs as a table with pinned summary columns")
    runs.add_argument("project", metavar="PROJECT", help="entity/project")
    runs.add_argument("--sort", metavar="PATH", help="sort by a summary path, e.g. loss.min or acc.best (default: last update)")
    runs.add_argument("--ascending", action="store_true", help="smallest first (default: largest first)")
    runs.add_argument(
        "--columns", metavar="P1,P2", help="summary paths to show as columns (default: the sort path and a few more)"
    )
    runs.add_argument("--limit", type=int, default=50, help="at most this many runs (50)")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_connection_options(runs)
    runs.set_defaults(func=_cmd_runs)

    replay = commands.add_parser(
        "replay",
        help="rebuild every summary from the topic into a new generation, then (with --switch) make it active",
        description="Fold the whole event topic, from the first offset of every partition, into a new Redis "
        "generation with the same fold as the live consumer; print its digest. With --switch, catch up with the "
        "live topic and make it the active generation in one step (the live consumer follows), then delete the old "
        "one unless --keep. Refuses when the topic has lost events to retention, unless --allow-gaps.",
    )
    replay.add_argument("--generation", metavar="NAME", help="name of the new generation (default: r<UTC timestamp>)")
    replay.add_argument("--switch", action="store_true", help="make the new generation active when it has caught up")
    replay.add_argument("--keep", action="store_true", help="with --switch: keep the old generation")
    until = replay.add_mutually_exclusive_group()
    until.add_argument("--until-offset", metavar="P:O[,P:O]", help="fold only records before these partition offsets")
    until.add_argument("--until-time", metavar="ISO8601", help="fold only records written before this time")
    replay.add_argument("--allow-gaps", action="store_true", help="replay even if events were lost to retention")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_connection_options(replay)
    replay.set_defaults(func=_cmd_replay)

    digest = commands.add_parser(
        "digest",
        help="a canonical SHA-256 of a generation's Redis state (equal however the state was produced)",
        description="Print a canonical SHA-256 over every key and value of a generation (default: the active one). "
        "Keys are sorted; hashes, sets and sorted sets by field/member; the per-partition checkpoints are left out. "
        "See consumer/digest.py for the exact encoding.",
    )
    digest.add_argument("--generation", metavar="NAME", help="the generation to digest (default: the active one)")
    _add_connection_options(digest)
    digest.set_defaults(func=_cmd_digest)

    serve = commands.add_parser(
        "serve",
        help="the web page (runs table with pinned summary columns, run pages, live updates) and the JSON API",
        description="Serve the runs page, the run page and the read-only JSON API (/api/openapi.json) from Redis, with "
        "live updates pushed from the consumer's pub/sub notices, and request metrics at /metrics (Prometheus). "
        "Binds 127.0.0.1 by default. Redis credentials and TLS "
        "come from METRICFOLD_REDIS_USERNAME / METRICFOLD_REDIS_PASSWORD[_FILE] / METRICFOLD_REDIS_CA_CERT (use the "
        "read-only ACL user metricfold-reader, see deploy/redis/README.md). With --token-file or "
        "METRICFOLD_SERVE_TOKEN every request needs 'Authorization: Bearer <token>' (a browser opens a page once "
        "with ?token=<token> and gets a cookie). With --tls-cert and --tls-key it speaks HTTPS.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (8765; 0: any free port)")
    serve.add_argument(
        "--token-file", metavar="PATH", help="require this bearer token (a file with one line; METRICFOLD_SERVE_TOKEN_FILE, "
        "or the token itself in METRICFOLD_SERVE_TOKEN)"
    )
    serve.add_argument("--tls-cert", metavar="PATH", help="serve HTTPS with this certificate (PEM, the chain after it; "
                       "METRICFOLD_SERVE_TLS_CERT); needs --tls-key")
    serve.add_argument("--tls-key", metavar="PATH", help="the certificate's private key (PEM, unencrypted; "
                       "METRICFOLD_SERVE_TLS_KEY)")
    _refuse_secret_options(serve, _TOKEN_OPTIONS)
    serve.add_argument("--redis-username", metavar="USER", help="Redis ACL user (METRICFOLD_REDIS_USERNAME; password only from "
                       "METRICFOLD_REDIS_PASSWORD or the file METRICFOLD_REDIS_PASSWORD_FILE names)")
    serve.add_argument("--access-log", action="store_true", help="log every request (a ?token= value shows as ***)")
    _add_connection_options(serve)
    serve.set_defaults(func=_cmd_serve)

    demo = commands.add_parser("demo", help="an end-to-end run against the configured Kafka and Redis")
    demo.add_argument("--no-serve", action="store_true", help="exit after the tables instead of serving the runs page")
    demo.add_argument("--port", type=int, default=8765, help="port of the runs page (8765; a free one if it is taken)")
    _add_connection_options(demo)
    demo.set_defaults(func=_cmd_demo)
    return parser


class _KafkaLoginRefusals(logging.Handler):
    """Keeps the brokers' answer when they refuse a login (wrong password, unknown user): kafka-python logs it and
    retries, then reports only that it could not bootstrap, so `cannot reach Kafka` would hide the reason."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.refusal: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        start = text.find("SaslAuthenticationFailedError")
        if start >= 0:
            refusal = text[start:].partition(" (backoff")[0]
            while refusal.startswith("SaslAuthenticationFailedError: SaslAuthenticationFailedError"):
                refusal = refusal.removeprefix("SaslAuthenticationFailedError: ")
            self.refusal = printable(refusal[:300])


_LOGIN_REFUSALS = _KafkaLoginRefusals()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # inside: --help into a closed pipe raises BrokenPipeError too
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        _LOGIN_REFUSALS.refusal = None
        connections = logging.getLogger("kafka.net.manager")  # where kafka-python logs a refused login
        if _LOGIN_REFUSALS not in connections.handlers:
            connections.addHandler(_LOGIN_REFUSALS)
        if not args.verbose:
            logging.getLogger("kafka").setLevel(logging.CRITICAL)
            # kafka-python's connection warnings stay quiet, but a refused login is kept (_KafkaLoginRefusals)
            connections.setLevel(logging.WARNING)
            connections.propagate = False
        code: int = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught below, not at exit
        return code
    except MetricfoldError as exc:
        message = str(exc)
        if isinstance(exc, BrokerUnavailable) and _LOGIN_REFUSALS.refusal:
            message += f"; the broker refused the login: {_LOGIN_REFUSALS.refusal}"
        # one line at a time: a message may quote a key or path holding control characters (schemas.text)
        print("metricfold: error: " + "\n".join(map(printable, message.split("\n"))), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`metricfold runs ... | head`): no traceback, and none at exit when Python flushes
        # stdout again; 141 is what a shell reports for a program ended by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
