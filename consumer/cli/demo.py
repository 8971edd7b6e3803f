"""`metricfold demo`: an end-to-end run against the configured Kafka and Redis (consumer/demo.py does the work)."""

from __future__ import annotations

import argparse

from consumer.cli.options import Subcommands, add_connection_options, settings_from_args


def add_parsers(subparsers: Subcommands) -> None:
    demo = subparsers.add_parser("demo", help="an end-to-end run against the configured Kafka and Redis")
    demo.add_argument("--no-serve", action="store_true", help="exit after the tables instead of serving the runs page")
    demo.add_argument("--port", type=int, default=8765, help="port of the runs page (8765; a free one if it is taken)")
    add_connection_options(demo)
    demo.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from consumer.demo import run_demo

    return run_demo(settings_from_args(args), serve=not args.no_serve, port=args.port)
