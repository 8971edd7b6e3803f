"""`metricfold summary` and `metricfold runs`: print what the fold keeps in Redis, one run or a project's runs,
as tables or JSON."""

from __future__ import annotations

import argparse

from consumer.cli.options import Subcommands, add_connection_options, settings_from_args
from schemas.errors import ConfigError
from schemas.filters import parse_where
from schemas.limits import check_run_part, parse_run_path

_RUNS_EXAMPLES = """examples:
  metricfold runs team/vision --where 'acc.best > 0.9' --where 'state = finished' --sort acc.best
  metricfold runs team/vision --where 'state in ["finished","crashed"]' --where 'tags = baseline'
  metricfold runs team/vision --where 'config.optimizer = adam' --where 'loss.min <= 0.3 or group = sweep-2'
  metricfold runs team/vision --where 'lr\\.base != 0.1' --columns acc.best,loss.min --csv > runs.csv

A filter is PATH OP VALUE (several joined by `or`); --where may repeat, and every one must pass. A numeric
condition (!= and nin too) keeps only runs that have a number at the path; an unknown path keeps none. tags = X:
the run has the tag X. config.KEY: a top-level config key, = != in nin, the value as JSON (bare words are text).
Write a path with spaces as a JSON string: '"val acc" > 0.5'."""


def add_parsers(subparsers: Subcommands) -> None:
    summary = subparsers.add_parser("summary", help="print one run's summary from Redis")
    summary.add_argument("run_path", metavar="RUN_PATH", help="entity/project/run_id")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_connection_options(summary)
    summary.set_defaults(func=_cmd_summary)

    runs = subparsers.add_parser(
        "runs", help="print a project's runs as a table with pinned summary columns (filtered, or as CSV)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print a project's runs, sorted, with pinned summary columns; --where keeps the runs that pass "
        "every filter, --csv prints CSV for pandas.read_csv.",
        epilog=_RUNS_EXAMPLES,
    )
    runs.add_argument("project", metavar="PROJECT", help="entity/project")
    runs.add_argument("--sort", metavar="PATH", help="sort by a summary path, e.g. loss.min or acc.best (default: last update)")
    runs.add_argument("--ascending", action="store_true", help="smallest first (default: largest first)")
    runs.add_argument(
        "--columns", metavar="P1,P2", help="summary paths to show as columns (default: the sort path and a few more)"
    )
    runs.add_argument("--limit", type=int, default=50, help="at most this many runs (50)")
    runs.add_argument(
        "--where", action="append", default=[], metavar="'PATH OP VALUE'",
        help="keep the runs that pass this filter (repeat: all must pass): OP is > >= < <= = != in nin; PATH a numeric "
        "summary path (acc.best, lr\\.base), state, tags, group, job_type or config.KEY; see the examples",
    )
    output = runs.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument("--csv", action="store_true", help="print CSV (run_id, name, state, updated, the columns)")
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
    where = parse_where(args.where)
    with Store(settings_from_args(args)) as store:
        print_runs(
            store, args.project, sort=args.sort, ascending=args.ascending, limit=args.limit, columns=columns,
            as_json=args.json, where=where, as_csv=args.csv,
        )
    return 0
