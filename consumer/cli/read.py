"""`metricfold summary` and `metricfold runs`: print what the fold keeps in Redis, one run or a project's runs,
as tables or JSON."""

from __future__ import annotations

import argparse

from consumer.cli.options import Subcommands, add_connection_options, settings_from_args
from schemas.errors import ConfigError
from schemas.limits import check_run_part, parse_run_path


def add_parsers(subparsers: Subcommands) -> None:
    summary = subparsers.add_parser("summary", help="print one run's summary from Redis")
    summary.add_argument("run_path", metavar="RUN_PATH", help="entity/project/run_id")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_connection_options(summary)
    summary.set_defaults(func=_cmd_summary)

    runs = subparsers.add_parser("runs", help="print a project's runs as a table with pinned summary columns")
    runs.add_argument("project", metavar="PROJECT", help="entity/project")
    runs.add_argument("--sort", metavar="PATH", help="sort by a summary path, e.g. loss.min or acc.best (default: last update)")
    runs.add_argument("--ascending", action="store_true", help="smallest first (default: largest first)")
    runs.add_argument(
        "--columns", metavar="P1,P2", help="summary paths to show as columns (default: the sort path and a few more)"
    )
    runs.add_argument("--limit", type=int, default=50, help="at most this many runs (50)")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_connection_options(runs)
    runs.set_defaults(func=_cmd_runs)


def _cmd_summary(args: argparse.Namespace) -> int:
    from consumer.store import Store
    from consumer.tables import print_run

    parse_run_path(args.run_path)
    with Store(settings_from_args(args)) as store:
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
    with Store(settings_from_args(args)) as store:
        print_runs(
            store, args.project, sort=args.sort, ascending=args.ascending, limit=args.limit, columns=columns, as_json=args.json
        )
    return 0
