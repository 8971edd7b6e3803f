"""`metricfold replay`: fold the whole topic into a fresh generation, check it, and switch readers in one step.

The replay reads every partition from its first offset with its own consumer (no group, no commits) and
the same fold code as the live consumer, writing into a new generation `<ns>:<gen>:...` that no reader
uses. With --switch it catches up with the live topic, then sets `<ns>:active` to the new generation with
one SET: readers resolve the active generation in the same atomic step as their read, so each read sees
the whole old or the whole new generation. The live consumer notices the switch on its next write (the
write script refuses a generation that is no longer active), moves to the new generation and resumes from
the replay's checkpoint, so no event is lost or doubled. The old generation is deleted after the switch
unless --keep is given.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import sys
import time
from typing import TextIO

from consumer.digest import digest_generation
from consumer.kafka_io import first_offsets, offsets_for_time
from consumer.runner import Consumer, ConsumeReport
from consumer.store import Store
from schemas.errors import ConfigError, MetricfoldError
from schemas.settings import Settings

__all__ = ["ReplayRefused", "ReplayReport", "replay"]

_GENERATION = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ReplayRefused(MetricfoldError):
    """Raised when a replay would give a wrong answer: events lost to retention, or a generation in use."""


@dataclasses.dataclass
class ReplayReport:
    generation: str
    digest: str
    events: int
    records: int
    seconds: float
    switched: bool
    deleted: str | None


class _Progress:
    """One self-rewriting status line: events, events/s, records done of total, ETA, per-partition lag."""

    def __init__(self, total_records: int, ends: dict[int, int], out: TextIO, enabled: bool) -> None:
        self.total = max(total_records, 1)
        self.ends = ends
        self.out = out
        self.enabled = enabled
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, report: ConsumeReport, positions: dict[int, int] | None = None, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.5):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = report.events_applied / elapsed
        done = min(report.records, self.total)
        record_rate = done / elapsed
        eta = (self.total - done) / record_rate if record_rate > 0 else 0.0
        width = 24
        filled = int(width * done / self.total)
        lag = ""
        if positions:
            lag = " lag " + ",".join(f"p{p}={max(0, self.ends.get(p, 0) - o)}" for p, o in sorted(positions.items()))
        line = (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{self.total:,} records  "
            f"{report.events_applied:,} events  {rate:,.0f} ev/s  ETA {datetime.timedelta(seconds=int(eta))}{lag}"
        )
        self.out.write(line[:200] + ("\n" if final else ""))
        self.out.flush()


def _new_generation_name() -> str:
    return "r" + datetime.datetime.now(tz=datetime.UTC).strftime("%Y%m%dT%H%M%S")


def replay(
    settings: Settings,
    *,
    generation: str | None = None,
    switch: bool = False,
    keep: bool = False,
    until_offsets: dict[int, int] | None = None,
    until_time_ms: int | None = None,
    allow_gaps: bool = False,
    progress: bool = True,
    out: TextIO = sys.stderr,
) -> ReplayReport:
    if switch and (until_offsets is not None or until_time_ms is not None):
        raise ConfigError("--switch cannot be combined with --until-offset/--until-time: that generation is a past view")
    bounds = first_offsets(settings)
    if not bounds:
        raise ReplayRefused(f"topic {settings.topic!r} has no partitions")
    missing = {p: start for p, (start, _) in bounds.items() if start > 0}
    if missing and not allow_gaps:
        raise ReplayRefused(
            f"topic {settings.topic!r} has lost {sum(missing.values()):,} events to retention or deletion "
            f"(first available offsets: {missing}); a replay would not match the live summaries. "
            "Pass --allow-gaps to replay what is left."
        )
    stop_at: dict[int, int] | None = None
    if until_offsets is not None:
        stop_at = {p: until_offsets.get(p, 0) for p in bounds}
    elif until_time_ms is not None:
        stop_at = offsets_for_time(settings, until_time_ms)

    name = generation or _new_generation_name()
    if not _GENERATION.fullmatch(name):
        raise ConfigError(f"generation name {name!r} must be 1-64 letters, digits, '_' or '-'")
    store = Store(settings, generation=name)
    active = store.active_generation()
    if name == active:
        store.close()
        raise ReplayRefused(f"generation {name!r} is the active one; replay into a new generation")
    if store.generation_has_keys(name):
        store.close()
        raise ReplayRefused(f"generation {name!r} already has keys; choose another --generation or delete it")

    ends = {p: end for p, (_, end) in bounds.items()}
    total = sum((stop_at or ends)[p] - bounds[p][0] for p in bounds)
    bar = _Progress(total, ends, out, progress)
    consumer = Consumer(settings, store=store, group=False, stop_at=stop_at)
    started = time.monotonic()
    try:
        def on_batch(report: ConsumeReport) -> None:
            bar(report, consumer.positions())

        report = consumer.run(until_caught_up=stop_at is None, on_batch=on_batch)
        bar(report, consumer.positions(), final=True)
        switched = False
        deleted = None
        if switch:
            report = consumer.run(until_caught_up=True)  # catch up with what arrived meanwhile
            store.set_active(name)
            switched = True
            if active and not keep:
                deleted = active
                store.delete_generation(active)
        digest = digest_generation(store, name)
    finally:
        consumer.close()
    return ReplayReport(
        generation=name,
        digest=digest,
        events=report.events_applied,
        records=report.records,
        seconds=time.monotonic() - started,
        switched=switched,
        deleted=deleted,
    )
