"""The runs' writes to Redis (Store.apply, each run in one atomic step with its applied offset) and what their
results mean: a write refused for its content names the records behind it (BadRecords), a moved generation
(GenerationMoved), and a conflict where Redis holds less than the write was built on (LostWrites). Also the writes
of the fold states alone, when the run cache says they are due (consumer/consume/run_cache.py)."""

from __future__ import annotations

from collections.abc import Callable

from consumer.consume.dead_letters import BadRecords
from consumer.consume.report import ConsumeReport
from consumer.consume.run_cache import Pending, RunCache
from consumer.resume import lost_writes
from consumer.store import APPLIED, CONFLICT, MOVED, RunWrite, Store
from schemas.errors import MetricfoldError, StoreUnavailable, WriteRefused

__all__ = ["GenerationMoved", "LostWrites", "RunWriter"]


class GenerationMoved(MetricfoldError):
    """Raised inside the loop when a replay switched `<ns>:active` to another generation."""

    def __init__(self, message: str, generation: str) -> None:
        super().__init__(message)
        self.generation = generation


class LostWrites(StoreUnavailable):
    """Redis lost writes of these runs after acknowledging them: start over from the resume points, read again
    from where those runs' masters lost them (on a cluster, the topic's checkpoint may be on another master)."""

    def __init__(self, message: str, run_paths: list[str]) -> None:
        super().__init__(message)
        self.run_paths = run_paths


class RunWriter:
    """Writes the runs of *cache* to the store's generation (*live*: the one `<ns>:active` names) and counts in
    *report* what Redis now counts; *on_state_written(size)* is called with the bytes of the states written."""

    def __init__(self, store: Store, cache: RunCache, report: ConsumeReport, *, live: bool,
                 on_state_written: Callable[[int], None]) -> None:
        self.store = store
        self.cache = cache
        self.report = report
        self.live = live
        self.on_state_written = on_state_written

    def apply(self, writes: list[RunWrite], pending: Pending, checkpoints: dict[int, int], generation: str,
              undecodable: dict[int, int] | None = None, known: dict[int, int] | None = None) -> list[int]:
        """Store.apply, with a refusal of some runs' writes for their content turned into BadRecords naming the
        records behind those writes, and GenerationMoved raised when *generation* is no longer the active one."""
        try:
            results = self.store.apply(writes, checkpoints, undecodable, live=self.live, known=known)
        except WriteRefused as exc:
            refused = set(exc.run_paths)
            spans = [self.cache.span_of(path, partition, records)
                     for (path, partition), records in pending if path in refused]
            raise BadRecords(str(exc), spans) from exc
        if MOVED in results:
            active = self.store.active_generation()
            raise GenerationMoved(f"generation {generation} is no longer active ({active} is)", active or generation)
        return results

    def count(self, writes: list[RunWrite], results: list[int]) -> None:
        """Count in the report what Redis now counts: the events and dead letters of the writes that applied
        (a batch that failed, or a write refolded after a conflict, is counted when it lands)."""
        for write, result in zip(writes, results, strict=True):
            if result == APPLIED:
                self.report.events_applied += write.events
                self.report.dead_letters += write.dead_letters

    def check_not_lost(self, conflicts: list[RunWrite]) -> None:
        """A conflict where Redis holds an older applied offset than the one our cached state was built on means
        Redis lost writes it had acknowledged: refolding only this batch would leave a gap, so start over from
        the Redis resume points (a newer offset means another writer, handled by refolding the batch)."""
        stored = self.store.load_runs([w.run_path for w in conflicts])
        lost = [w for w in conflicts if lost_writes(w.expected_prev, stored[w.run_path].applied.get(w.partition))]
        if lost:
            w = lost[0]
            raise LostWrites(
                f"Redis lost writes it had acknowledged: run {w.run_path} is at offset "
                f"{stored[w.run_path].applied.get(w.partition)} of partition {w.partition}, not {w.expected_prev}"
                + (f" (and {len(lost) - 1} more runs)" if len(lost) > 1 else ""),
                [w.run_path for w in lost],
            )

    def note_stored(self, writes: list[RunWrite], results: list[int]) -> None:
        """RunCache.note_stored, and the bytes of the states written to on_state_written."""
        written = self.cache.note_stored(writes, results)
        if written:
            self.on_state_written(written)

    def store_states(self, generation: str, *, everything: bool = True) -> None:
        """Store the fold states that differ from the stored ones (*everything*: all that can be; else the due
        ones), without records: used when the consumer is idle and when it stops."""
        writes: list[RunWrite] = []
        pending: Pending = []
        self.cache.add_due_states(writes, pending, everything=everything)
        if writes:
            results = self.apply(writes, pending, {}, generation)
            self.note_stored(writes, results)
            if CONFLICT in results:  # another writer, or Redis lost writes: start over from what Redis holds
                self.check_not_lost([w for w, r in zip(writes, results, strict=True) if r == CONFLICT])
                for w, r in zip(writes, results, strict=True):
                    if r == CONFLICT:
                        self.cache.forget(w.run_path)
