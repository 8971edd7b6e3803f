"""The consumer's writes: a batch's run writes (views, indexes, applied offsets, fold states) and partition
checkpoints, through the `apply_runs` and `checkpoint` scripts (consumer/store/lua/), one pipeline per batch;
and what a consumer reads to resume (checkpoints, lag sets, stored states)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import redis

from consumer.fold import Changes
from consumer.resume import held_by_state, resume_points
from consumer.store.client import _mapped, _script_error
from consumer.store.generations import Generations
from consumer.store.keys import Keys
from consumer.store.record import RunRecord
from schemas.errors import StoreUnavailable, WriteRefused

__all__ = ["APPLIED", "BYTES_PER_CALL", "CONFLICT", "MOVED", "RUNS_PER_CALL", "SKIPPED", "RunWrite", "StoredRun", "Writer"]

APPLIED, SKIPPED, CONFLICT, MOVED = 1, 0, -1, -2


class StoredRun(NamedTuple):
    """What Redis holds of one run for the consumer (`Store.load_runs`)."""

    state: bytes | None  #: the stored fold state (None: none yet)
    applied: dict[int, int]  #: partition -> offset of the last record applied to the views
    state_at: dict[int, int]  #: partition -> offset of the last record the stored state holds


@dataclasses.dataclass
class RunWrite:
    """Everything one consumer batch changed for one run, applied atomically by `apply_runs`."""

    run_path: str
    partition: int
    offset: int  # offset of the last record of the batch for this run
    expected_prev: int | None  # the applied offset the views were built on (None: a new run)
    state: bytes  # the fold state to store, b"" to store none this time
    updated_ms: int
    changes: Changes = dataclasses.field(default_factory=Changes)  # the views' changes (consumer.fold)
    events: int = 0
    dead_letters: int = 0
    #: without a state: the first offset of the run's records that the stored state lacks (None: Redis knows it
    #: already, from an earlier write since the state was last stored)
    lacks_from: int | None = None
    state_at: dict[int, int] = dataclasses.field(default_factory=dict)  # with a state: partition -> last offset in it



#: run writes per APPLY_RUNS call, and roughly the bytes (one call is one atomic step: readers wait for it)
RUNS_PER_CALL = 200
BYTES_PER_CALL = 4 * 1024 * 1024


def _chunks(writes: Sequence[RunWrite]) -> Iterator[Sequence[RunWrite]]:
    start, size = 0, 0
    for i, write in enumerate(writes):
        size += len(write.state) + sum(map(len, write.changes.blobs.values()))
        if i + 1 - start >= RUNS_PER_CALL or size >= BYTES_PER_CALL:
            yield writes[start : i + 1]
            start, size = i + 1, 0
    if start < len(writes):
        yield writes[start:]


def _apply_args(keys: Keys, topic: str, writes: Sequence[RunWrite], live: bool, checkpoints: str = "") -> list[str | bytes]:
    """APPLY_RUNS's arguments for *writes* (lua/apply_runs.lua): each run a RunRecord (record.py), all of them as one
    JSON document (json's C encoder, and one Redis argument instead of ~60 per run: packing those cost more than
    the Lua call itself),
    then the states and the tensor blobs as binary arguments. The numeric paths go by name only: their sort score
    is their text in flat_set (the JSON of a finite int or float, which Redis reads as the same double)."""
    runs: list[RunRecord] = []
    blobs: list[bytes] = []
    first_blob = 6 + len(writes)  # ARGV index of the first blob in Lua (1-based, after the states)
    for w in writes:
        c = w.changes
        project_path, _, run_id = w.run_path.rpartition("/")
        named = {}
        for sha, data in c.blobs.items():
            named[sha] = str(first_blob + len(blobs))
            blobs.append(data)
        runs.append(RunRecord(
            run_path=w.run_path, project=project_path, run_id=run_id, partition=str(w.partition), offset=str(w.offset),
            expected_prev="" if w.expected_prev is None else str(w.expected_prev), updated_ms=str(w.updated_ms),
            events=str(w.events), dead_letters=str(w.dead_letters),
            summary_set=c.summary_set, summary_del=c.summary_del, flat_set=c.flat_set, flat_del=c.flat_del,
            meta_set=c.meta, meta_del=c.meta_del, tensors_set=c.tensors_set, tensors_del=c.tensors_del,
            numeric_set=list(c.numeric_set), numeric_del=c.numeric_del, blobs=named,
            lacks_from="" if w.lacks_from is None else str(w.lacks_from),
            state_at={str(p): str(o) for p, o in (w.state_at or {w.partition: w.offset}).items()} if w.state else {},
        ))
    return [keys.generation if live else "", keys.prefix, _encode_runs(runs, writes), keys.lag(topic), checkpoints,
            *(w.state for w in writes), *blobs]


def _encode_runs(runs: Sequence[RunRecord], writes: Sequence[RunWrite]) -> bytes:
    """The runs' changes as one UTF-8 JSON document. Text that UTF-8 cannot carry (a lone surrogate) or a value
    JSON cannot write is the fault of the runs holding it: WriteRefused names them (the consumer dead-letters
    their records), where hiredis would raise deep inside the pipeline for the whole batch."""
    try:
        return json.dumps(runs, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        bad: list[str] = []
        for run, write in zip(runs, writes, strict=True):
            try:
                json.dumps(run, ensure_ascii=False).encode("utf-8")
            except (TypeError, ValueError):
                bad.append(write.run_path)
        what = f"{exc.reason} at position {exc.start}" if isinstance(exc, UnicodeEncodeError) else str(exc)[:300]
        raise WriteRefused(f"the changes cannot be encoded for Redis: {what}", bad or [w.run_path for w in writes]) from exc



class Writer(Generations):
    """The consumer's side of the store (a part of `Store`)."""

    _apply: Any  # the registered scripts (redis-py Script objects)
    _checkpoint: Any

    def checkpoints(self, topic: str) -> dict[int, int]:
        with _mapped(self.settings):
            raw = self.client.hgetall(self.keys.checkpoint(topic))
        return {int(p): int(o) for p, o in raw.items()}

    def resume_points(self, topic: str, checkpoints: dict[int, int] | None = None) -> dict[int, int]:
        """Where a consumer starts reading each partition: its checkpoint, or the first offset a run's stored
        state lacks if that is lower (the lag set), so that every state can be folded up to its views again.
        *checkpoints*: the ones the caller just read (`checkpoints()`), not read again."""
        keys = self.keys
        if checkpoints is None:
            checkpoints = self.checkpoints(topic)
        with _mapped(self.settings):
            pipe = self.client.pipeline(transaction=False)
            for partition in checkpoints:
                pipe.zrange(keys.lag(topic, partition), 0, 0, withscores=True)
            lowest = pipe.execute()
        lacking = {p: int(first[0][1]) if first else None for p, first in zip(checkpoints, lowest, strict=True)}
        return resume_points(checkpoints, lacking)

    def load_runs(self, run_paths: Sequence[str]) -> dict[str, StoredRun]:
        """The stored fold state of each run with the offsets it holds and the views' applied offsets (one round
        trip). A state stored before `stateat` existed holds exactly what the views do."""
        keys = self.keys
        with _mapped(self.settings):
            pipe = self.client.pipeline(transaction=False)
            for path in run_paths:
                pipe.get(keys.run(path, "state"))
                pipe.hgetall(keys.run(path, "applied"))
                pipe.hgetall(keys.run(path, "stateat"))
            replies = pipe.execute()
        result: dict[str, StoredRun] = {}
        for i, path in enumerate(run_paths):
            state, applied, state_at = replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]
            views = {int(p): int(o) for p, o in applied.items()}
            held = held_by_state(views, {int(p): int(o) for p, o in state_at.items()}, bool(state))
            result[path] = StoredRun(state, views, held)
        return result

    def apply(
        self,
        writes: Sequence[RunWrite],
        checkpoints: dict[int, int],
        undecodable: dict[int, int] | None = None,
        *,
        live: bool = True,
        known: dict[int, int] | None = None,
    ) -> list[int]:
        """Apply every run's write, then advance the checkpoints. Returns APPLIED/SKIPPED/CONFLICT/MOVED per write.

        Checkpoints are advanced only when every write applied or skipped (a conflicting run is refolded by the
        caller; MOVED means a replay made another generation active). With *live*, a write lands only while
        this store's generation is the active one; a replay writes with live=False into its new generation.
        *known* (partition -> checkpoint) is what the caller knows Redis held; a checkpoint below it means Redis
        lost acknowledged writes, and raises StoreUnavailable instead of moving the checkpoint over the gap.
        """
        keys = self.keys
        topic = self.settings.topic
        rows = [
            [str(p), str(o), str((undecodable or {}).get(p, 0)), "" if known is None or p not in known else str(known[p])]
            for p, o in checkpoints.items()
        ]
        with _mapped(self.settings):
            results: list[int] = []
            advanced: list[int] | None = None
            calls: list[tuple[Any, list[str], list[Any]]]
            if writes:
                chunks = list(_chunks(writes))
                # one call (most batches): it advances the checkpoints too, so the batch takes one round trip
                merged = json.dumps([keys.checkpoint(topic), keys.stats, rows]) if rows and len(chunks) == 1 else ""
                calls = [(self._apply, [keys.active], _apply_args(keys, topic, chunk, live, merged)) for chunk in chunks]
                replied = self._evalsha_all(calls)
                refused = [(chunk, reply) for chunk, reply in zip(chunks, replied, strict=True) if isinstance(reply, Exception)]
                if refused:  # a script error on a call's data: those runs' records are at fault, not Redis
                    raise WriteRefused(f"Redis refused a write: {refused[0][1]}",
                                       [w.run_path for chunk, _ in refused for w in chunk])
                for chunk, replies in zip(chunks, replied, strict=True):
                    if replies == MOVED:
                        results += [MOVED] * len(chunk)
                        continue
                    if merged:
                        replies, advanced = replies
                    results += [int(r) for r in replies]
            if advanced is None and CONFLICT not in results and MOVED not in results and rows:
                calls = [(self._checkpoint, [keys.checkpoint(topic), keys.stats], row) for row in rows]
                advanced = self._evalsha_all(calls)
                failed = [r for r in advanced if isinstance(r, Exception)]
                if failed:  # no run's data is in these calls: nothing to dead-letter, and nothing to advance
                    raise StoreUnavailable(f"Redis refused to advance the checkpoints: {failed[0]}")
            if advanced is not None and -1 in (int(r) for r in advanced):
                raise StoreUnavailable(f"Redis at {self.settings.redis_display} holds older checkpoints than it acknowledged: "
                                       "it lost writes (restarted without its last fsync?)")
        return results

    def _evalsha_all(self, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """EVALSHA each (script, keys, args) in one pipeline: one round trip. redis-py's own script calls in a
        pipeline first ask SCRIPT EXISTS, a second round trip per batch; here a script Redis does not hold (it
        restarted, or SCRIPT FLUSH) is loaded when Redis says NOSCRIPT, and the calls are sent again (a call that
        got NOSCRIPT did not run; a write that ran is skipped the second time, as already applied).

        A call that failed inside its script (an error about its data) is returned as its exception, for the
        caller to name the runs; any other error reply (out of memory, read-only replica, no permission, busy,
        loading) is Redis being unable to take writes now: StoreUnavailable, and the consumer retries."""
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies = list(pipe.execute(raise_on_error=False))
            errors = [r for r in replies if isinstance(r, redis.exceptions.ResponseError)]
            if not errors:
                return replies
            if any(isinstance(e, redis.exceptions.NoScriptError) for e in errors) and attempt == 1:
                for script in {script for script, _, _ in calls}:
                    script.sha = self.client.script_load(script.script)
                continue
            for error in errors:
                if not _script_error(error):
                    raise StoreUnavailable(f"Redis cannot take the writes now: {error}") from error
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

