"""`metricfold topics`: create the event and dead-letter topics if they are missing."""

from __future__ import annotations

import argparse

from consumer.cli.options import Subcommands, add_connection_options, settings_from_args


def add_parsers(subparsers: Subcommands) -> None:
    topics = subparsers.add_parser("topics", help="create the event and dead-letter topics if missing")
    add_connection_options(topics)
    topics.set_defaults(func=_cmd_topics)


def _cmd_topics(args: argparse.Namespace) -> int:
    from consumer.kafka_io import ensure_topics

    settings = settings_from_args(args)
    created = ensure_topics(settings)
    note = f" (created {', '.join(created)})" if created else ""
    print(f"topics ready: {settings.topic}, {settings.dead_letter_topic}{note}")
    return 0
