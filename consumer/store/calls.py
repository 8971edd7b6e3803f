"""A consumer batch as `apply_runs` calls: the runs' writes grouped by project (one hash slot each, keys.py), each
group cut into calls of at most RUNS_PER_CALL runs or ~BYTES_PER_CALL, every key a call touches declared in its
KEYS (lua/apply_runs.lua)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence

from consumer.fold import Changes
from consumer.store.indexes import index_moves
from consumer.store.keys import Keys, split_run_path
from consumer.store.record import RunRecord
from schemas.errors import WriteRefused

__all__ = ["BYTES_PER_CALL", "RUNS_PER_CALL", "ApplyCall", "RunWrite", "apply_calls", "checkpoint_rows"]

#: run writes per APPLY_RUNS call, and roughly the bytes (one call is one atomic step: readers wait for it)
RUNS_PER_CALL = 200
BYTES_PER_CALL = 4 * 1024 * 1024


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


@dataclasses.dataclass
class ApplyCall:
    """One `apply_runs` call: one project's runs (`indexes` are theirs in the batch's list of writes)."""

    project: str
    indexes: list[int]
    keys: list[str]
    args: list[str | bytes]


def checkpoint_rows(checkpoints: dict[int, int], undecodable: dict[int, int] | None,
                    known: dict[int, int] | None) -> list[list[str]]:
    """[partition, next offset, undecodable records, the checkpoint the caller knows Redis held or ''] per partition:
    the `advance` function's arguments (lua/advance.lua)."""
    return [[str(p), str(o), str((undecodable or {}).get(p, 0)), "" if known is None or p not in known else str(known[p])]
            for p, o in checkpoints.items()]


def apply_calls(keys: Keys, topic: str, writes: Sequence[RunWrite], live: bool) -> list[ApplyCall]:
    """The calls of a batch, project after project in the order they first appear among *writes*."""
    by_project: dict[str, list[int]] = {}
    for i, write in enumerate(writes):
        by_project.setdefault(split_run_path(write.run_path)[0], []).append(i)
    calls = []
    for project, indexes in by_project.items():
        for chunk in _chunks(writes, indexes):
            calls.append(_call(keys, topic, project, [writes[i] for i in chunk], chunk, live))
    return calls


def merge_checkpoints(call: ApplyCall, keys: Keys, topic: str, rows: list[list[str]]) -> None:
    """Let *call* advance the checkpoints too (when it is the batch's only call, on a standalone Redis, which takes
    keys of many slots in one script): one round trip for the batch."""
    first = len(call.keys) + 1
    call.keys += [keys.checkpoint(topic), keys.topic_stats(topic)]
    call.args[4] = json.dumps([first, first + 1, rows])


def _chunks(writes: Sequence[RunWrite], indexes: list[int]) -> Iterator[list[int]]:
    start, size = 0, 0
    for n, i in enumerate(indexes):
        write = writes[i]
        size += len(write.state) + sum(map(len, write.changes.blobs.values()))
        if n + 1 - start >= RUNS_PER_CALL or size >= BYTES_PER_CALL:
            yield indexes[start : n + 1]
            start, size = n + 1, 0
    if start < len(indexes):
        yield indexes[start:]


def _call(keys: Keys, topic: str, project: str, writes: list[RunWrite], indexes: list[int], live: bool) -> ApplyCall:
    """APPLY_RUNS's KEYS and ARGV for one project's *writes* (lua/apply_runs.lua): each run a RunRecord (record.py),
    all of them as one JSON document (json's C encoder, and one Redis argument instead of ~60 per run: packing
    those cost more than the Lua call itself), then the states and the tensor blobs as binary arguments. The
    numeric paths go by name only: their sort score is their text in flat_set (the JSON of a finite int or float,
    which Redis reads as the same double)."""
    key_list = [keys.retired(project), keys.project(project, "runs"), keys.project(project, "paths"),
                keys.project_stats(project), keys.seen(project, topic)]
    lag: dict[str, int] = {}
    by: dict[str, int] = {}

    def declare(name: str) -> int:
        key_list.append(name)
        return len(key_list)  # Lua's KEYS are 1-based

    for w in writes:
        for partition in {w.partition, *w.state_at}:
            if str(partition) not in lag:
                lag[str(partition)] = declare(keys.lag(project, topic, partition))
        for path in (*w.changes.numeric_set, *w.changes.numeric_del):
            if path not in by:
                by[path] = declare(keys.by_path(project, path))
    runs: list[RunRecord] = []
    blobs: list[bytes] = []
    first_blob = 6 + len(writes)  # ARGV index of the first blob in Lua (1-based, after the states)
    for w in writes:
        c = w.changes
        first = len(key_list) + 1
        key_list += keys.run_keys(w.run_path)
        index_out, index_in = index_moves(keys, project, c)
        named = {}
        for sha, data in c.blobs.items():
            named[sha] = [str(declare(keys.blob(w.run_path, sha))), str(first_blob + len(blobs))]
            blobs.append(data)
        runs.append(RunRecord(
            first_key=str(first), run_id=split_run_path(w.run_path)[1], partition=str(w.partition), offset=str(w.offset),
            expected_prev="" if w.expected_prev is None else str(w.expected_prev), updated_ms=str(w.updated_ms),
            events=str(w.events), dead_letters=str(w.dead_letters),
            summary_set=c.summary_set, summary_del=c.summary_del, flat_set=c.flat_set, flat_del=c.flat_del,
            meta_set=c.meta, meta_del=c.meta_del, tensors_set=c.tensors_set, tensors_del=c.tensors_del,
            numeric_set=list(c.numeric_set), numeric_del=c.numeric_del, blobs=named,
            lacks_from="" if w.lacks_from is None else str(w.lacks_from),
            state_at={str(p): str(o) for p, o in (w.state_at or {w.partition: w.offset}).items()} if w.state else {},
            index_out=[str(declare(k)) for k in index_out], index_in=[str(declare(k)) for k in index_in],
        ))
    args: list[str | bytes] = ["1" if live else "", _encode_runs(runs, writes), json.dumps([lag, by]),
                               keys.channel(project), "", *(w.state for w in writes), *blobs]
    return ApplyCall(project, indexes, key_list, args)


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
