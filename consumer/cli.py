"""The `metricfold` command. Run `metricfold --help`, or `metricfold COMMAND --help`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from schemas.errors import MetricfoldError
from schemas.settings import Settings

__all__ = ["main"]

log = logging.getLogger("metricfold")


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (each defaults to its environment variable)")
    group.add_argument("--kafka", help="Kafka bootstrap servers, host:port[,...] (METRICFOLD_KAFKA, default localhost:9092)")
    group.add_argument("--redis", help="Redis URL (METRICFOLD_REDIS, default redis://localhost:6379/0)")
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from consumer.demo import run_demo

    return run_demo(_settings(args))


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

    demo = commands.add_parser("demo", help="an end-to-end run against the configured Kafka and Redis")
    _add_connection_options(demo)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        code: int = args.func(args)
        return code
    except MetricfoldError as exc:
        print(f"metricfold: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
