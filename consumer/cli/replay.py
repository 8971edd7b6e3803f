"""`metricfold replay` and `metricfold digest`: rebuild every summary from the topic into a new generation, and
the canonical digest that compares two generations."""

from __future__ import annotations

import argparse

from consumer.cli.gc_tuning import tune_gc_for_a_long_fold
from consumer.cli.options import Subcommands, add_connection_options, settings_from_args
from schemas.errors import ConfigError


def add_parsers(subparsers: Subcommands) -> None:
    replay = subparsers.add_parser(
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
    add_connection_options(replay)
    replay.set_defaults(func=_cmd_replay)

    digest = subparsers.add_parser(
        "digest",
        help="a canonical SHA-256 of a generation's Redis state (equal however the state was produced)",
        description="Print a canonical SHA-256 over every key and value of a generation (default: the active one). "
        "Keys are sorted; hashes, sets and sorted sets by field/member; the per-partition checkpoints are left out. "
        "See consumer/digest.py for the exact encoding.",
    )
    digest.add_argument("--generation", metavar="NAME", help="the generation to digest (default: the active one)")
    add_connection_options(digest)
    digest.set_defaults(func=_cmd_digest)


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

    tune_gc_for_a_long_fold()
    report = replay(
        settings_from_args(args),
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

    with Store(settings_from_args(args)) as store:
        generation = args.generation or store.active_generation()
        if generation is None:
            raise ConfigError(f"namespace {store.settings.namespace!r} has no active generation: nothing was folded yet")
        print(f"{digest_generation(store, generation)}  {store.settings.namespace}:{generation}")
    return 0
