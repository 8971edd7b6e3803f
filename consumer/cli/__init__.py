"""The `metricfold` command. Run `metricfold --help`, or `metricfold COMMAND --help`.

Each command lives in its own module here, which adds its parser (`add_parsers`) next to the code that runs it;
`build_parser` puts them together in the order `--help` lists them, and `main` runs one and turns errors into
exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from consumer.cli import consume, demo, read, replay, serve, sync, topics
from consumer.cli.logs import LOGIN_REFUSALS, configure_logging
from schemas.errors import BrokerUnavailable, MetricfoldError
from schemas.text import printable

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metricfold",
        description="Streaming metrics summaries: trainers log to Kafka, the consumer folds them into Redis.",
        epilog="Start the local stack with `make up`, then `source .stack/env` to point these commands at it.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for commands in (topics, consume, sync, read, replay, serve, demo):
        commands.add_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # inside: --help into a closed pipe raises BrokenPipeError too
        configure_logging(args.verbose)
        code: int = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught below, not at exit
        return code
    except MetricfoldError as exc:
        message = str(exc)
        if isinstance(exc, BrokerUnavailable) and LOGIN_REFUSALS.refusal:
            message += f"; the broker refused the login: {LOGIN_REFUSALS.refusal}"
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
