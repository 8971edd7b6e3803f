"""`metricfold sync`: publish the events an SDK spooled to files (offline runs, or Kafka unreachable), with a table
of what each file sent."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consumer.cli.options import Subcommands, add_connection_options, settings_from_args


def add_parsers(subparsers: Subcommands) -> None:
    sync = subparsers.add_parser(
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
    add_connection_options(sync)
    sync.set_defaults(func=_cmd_sync)


def _cmd_sync(args: argparse.Namespace) -> int:
    from consumer.tables import render_table
    from producer.spool import sync

    settings = settings_from_args(args)
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
