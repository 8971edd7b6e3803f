"""The fold states of the runs a consumer folds, cached in memory, and when each goes to Redis.

The fold state itself (a run's exact sums, extremes, seen seqs) is stored less often than its views: a run's state
goes to Redis once it has differed from the stored one for STATE_EVERY_S (and when the consumer is idle or stops),
not with every batch; writing it every time was the largest single cost per run and batch. Until then the run is
in its partition's lag set in Redis, scored by the first offset its stored state lacks. A consumer that starts
over (partition assignment, any Redis failure) seeks to the lowest of those, or to the partition's checkpoint, and
folds the records its runs' views already hold into their states again, without writing views, dead letters or
counts for them a second time.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict

from consumer.consume.dead_letters import BadRecords, describe
from consumer.fold import RunState, events_applied, new_run_state, state_from_bytes, state_to_bytes
from consumer.kafka_io import Record
from consumer.resume import lagging_partitions
from consumer.store import APPLIED, CONFLICT, RunWrite, Store

__all__ = ["STATES_PER_BATCH", "STATE_EVERY_S", "CachedRun", "Pending", "RunCache"]

#: a run's fold state is stored once it has differed from the stored one this long (seconds): a consumer that
#: starts over reads back about this far
STATE_EVERY_S = 5.0
#: states stored with one batch, at most (the oldest first), unless they are overdue by 4 x STATE_EVERY_S
STATES_PER_BATCH = 64

#: the records behind each write of a batch, in the same order: ((run path, partition), records); none for a
#: write of a state alone
Pending = list[tuple[tuple[str, int], list[Record]]]


@dataclasses.dataclass
class CachedRun:
    state: RunState
    applied: dict[int, int]  # partition -> offset of the last record in the views, as Redis has it
    folded: dict[int, int]  # partition -> offset of the last record folded into `state`
    stored: dict[int, int]  # partition -> offset of the last record in the state Redis holds
    events: int  # events the views count (the stats counter has them)
    updated_ms: int
    #: partition -> the first record folded since the state was stored, where the stored state has none of it
    first_unstored: dict[int, int] = dataclasses.field(default_factory=dict)
    dirty_since: float | None = None  # monotonic time the state first differed from the stored one
    lagging: set[int] = dataclasses.field(default_factory=set)  # partitions where Redis has the run in the lag set


class RunCache:
    """At most *max_runs* runs' CachedRun, the least recently used first; the state is trusted only while Redis
    agrees (every write names the applied offset it was built on)."""

    def __init__(self, store: Store, max_runs: int) -> None:
        self.store = store
        self.max_runs = max_runs
        self.runs: OrderedDict[str, CachedRun] = OrderedDict()
        self.partition_of: dict[str, int] = {}
        self.dirty: OrderedDict[str, None] = OrderedDict()  # runs whose state differs from the stored one, oldest first

    def load(self, paths: list[str]) -> None:
        """Cache the runs of *paths* not cached yet, as Redis holds them (a new state for a run it does not know)."""
        missing = [p for p in paths if p not in self.runs]
        if not missing:
            return
        for path, stored in self.store.load_runs(missing).items():
            if stored.state is None:
                entity, project, run_id = path.split("/")
                state = new_run_state(entity, project, run_id)
            else:
                state = state_from_bytes(stored.state)
            lagging = lagging_partitions(stored.applied, stored.state_at)
            self.runs[path] = CachedRun(state, stored.applied, dict(stored.state_at), dict(stored.state_at),
                                        events_applied(state), int(state.updated or 0), lagging=lagging)

    def forget(self, path: str) -> None:
        self.runs.pop(path, None)
        self.partition_of.pop(path, None)
        self.dirty.pop(path, None)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Forget the runs of *partitions* (another member takes them over)."""
        for path in [p for p, part in self.partition_of.items() if part in partitions]:
            self.forget(path)

    def clear(self) -> None:
        self.runs.clear()
        self.partition_of.clear()
        self.dirty.clear()

    def evict(self) -> None:
        """Keep at most max_runs states cached, dropping the least recently used ones whose state Redis holds
        (one that differs from the stored state stays until it is stored: dropping it would lose records)."""
        excess = len(self.runs) - self.max_runs
        if excess <= 0:
            return
        for path in list(self.runs):
            if excess <= 0:
                break
            if path not in self.dirty:
                self.forget(path)
                excess -= 1

    def mark_dirty(self, path: str, cached: CachedRun, now: float) -> None:
        if cached.dirty_since is None:
            cached.dirty_since = now
            self.dirty[path] = None

    def add_due_states(self, writes: list[RunWrite], pending: Pending, *, everything: bool) -> None:
        """Give the runs whose state is due for storing (the oldest first) their state: in their write of this
        batch, or in a write of their own that changes no view (it names the applied offset, so the script skips
        the views and stores the state). *everything*: every state that can be stored, due or not."""
        if not self.dirty:
            return
        now = time.monotonic()
        index = {w.run_path: i for i, w in enumerate(writes)}
        taken = 0
        for path in list(self.dirty):
            cached = self.runs.get(path)
            if cached is None or cached.dirty_since is None:
                self.dirty.pop(path, None)
                continue
            age = now - cached.dirty_since
            if not everything and (age < STATE_EVERY_S or (taken >= STATES_PER_BATCH and age < 4 * STATE_EVERY_S)):
                break
            if cached.folded != cached.applied:  # still folding again what its views hold: not storable yet
                continue
            taken += 1
            state = self.state_bytes(path, cached)
            i = index.get(path)
            if i is not None:
                writes[i].state = state
                writes[i].state_at = dict(cached.folded)
                continue
            partition = self.partition_of[path]
            offset = cached.applied[partition]
            writes.append(RunWrite(run_path=path, partition=partition, offset=offset, expected_prev=offset, state=state,
                                   updated_ms=cached.updated_ms, state_at=dict(cached.folded)))
            pending.append(((path, partition), []))

    def state_bytes(self, path: str, cached: CachedRun, records: list[Record] | None = None) -> bytes:
        """The run's state as stored; one that cannot be encoded is the fault of the records folded into it
        since it was last stored (or of *records*)."""
        try:
            return state_to_bytes(cached.state)
        except Exception as exc:  # any failure here is of this run's data
            partition = self.partition_of[path]
            raise BadRecords(f"the fold state of run {path} cannot be stored: {describe(exc)}",
                             [self.span_of(path, partition, records or [])]) from exc

    def span_of(self, path: str, partition: int, records: list[Record]) -> tuple[int, int, int]:
        """The records behind a run's write: this batch's, or (a write of its state alone) every record folded
        into the state since it was last stored."""
        if records:
            return partition, records[0].offset, records[-1].offset
        cached = self.runs[path]
        first = cached.first_unstored.get(partition, cached.stored.get(partition, -1) + 1)
        return partition, first, cached.folded.get(partition, first)

    def note_stored(self, writes: list[RunWrite], results: list[int]) -> int:
        """Note what Redis now holds: the states of the writes that were not conflicts (stored, or Redis kept a
        newer one), and the lag set entries of the views written without a state. Returns the states' bytes."""
        written = 0
        for write, result in zip(writes, results, strict=True):
            if result != CONFLICT:
                written += len(write.state)
            cached = self.runs.get(write.run_path)
            if cached is None or result == CONFLICT:
                continue
            if not write.state:
                if result == APPLIED:
                    cached.lagging.add(write.partition)
                continue
            cached.stored = dict(write.state_at)
            cached.first_unstored = {}
            cached.lagging = set()
            if cached.folded == write.state_at:
                cached.dirty_since = None
                self.dirty.pop(write.run_path, None)
        return written
