"""Folding a ``metricfold.LogBlock``: consecutive log events of one producer, in columns (the fast path).

The result is byte-identical to folding the same events one by one as standalone ``metricfold.Log``
records. The block is summarised per path (``BlockStats``) and each leaf folds its summary once: with numpy
(consumer.fold.column_stats) for blocks of at least ``VECTOR_MIN_VALUES`` float values, with list builtins
or a Python loop for smaller ones (consumer.fold.block_stats). Blocks whose paths clash under rule 2 (``a``
and ``a.b`` in one block) go value by value, and so do all blocks of a run whose definitions use ``at_best``
(rule 20 needs each value in its order; consumer.fold.at_best). Refused events (consumer.fold.block_checks) and
already-applied seqs are left out; the other events are applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from consumer.fold.aggregates import BlockStats
from consumer.fold.block_checks import Extra, ExtraColumns, bad_paths, check_events, clash, prefix_free, structure_problem
from consumer.fold.block_stats import events_of, extra_stats, small_block_stats, small_regular_stats
from consumer.fold.column_stats import FloatArray, IntArray, float_block_stats, regular_block_stats
from consumer.fold.mutations import add_block_stats, applied, keep_blobs, log_value, log_value_at_best
from consumer.fold.state import Rejected, RunState
from consumer.fold.values import TensorBlob
from schemas.events import LOG_BLOCK
from schemas.limits import Limits

__all__ = ["VECTOR_MIN_VALUES", "fold_log_block"]

#: blocks with fewer float values than this are folded value by value (numpy's per-call cost dominates)
VECTOR_MIN_VALUES = 128


def fold_log_block(
    state: RunState, producer_id: str, block: Mapping[str, Any], index: int, limits: Limits, rejected: list[Rejected]
) -> None:
    """Fold one LogBlock item (run path and producer come from the batch header, already checked)."""
    first_seq = block.get("first_seq") if isinstance(block, Mapping) else None
    first_seq = first_seq if type(first_seq) is int else 0

    def refuse(events: Any, reason: str) -> None:
        rejected.extend(Rejected(index, producer_id, first_seq + i, reason, LOG_BLOCK) for i in events)

    n = 1
    try:
        steps, counts, ts = block["steps"], block["counts"], block["ts_ms"]
        raw_paths, path_idx, raw_values = block["paths"], block["path_idx"], block["values"]
        extras = ExtraColumns(block.get("extras") or ())
        n, m = len(steps), len(path_idx)
        problem = structure_problem(block, steps, counts, ts, raw_paths, path_idx, raw_values, extras)
        small = m < max(VECTOR_MIN_VALUES, 1)
        if small:
            if not problem and m and (min(path_idx) < 0 or max(path_idx) >= len(raw_paths)):
                problem = "malformed LogBlock: a path_idx is out of range"
            gid = np.empty(0, dtype=np.int64)  # converted below unless the tiny fast path takes the block
        else:
            gid = np.asarray(path_idx, dtype=np.int64)
            if not problem and (int(gid.min()) < 0 or int(gid.max()) >= len(raw_paths)):
                problem = "malformed LogBlock: a path_idx is out of range"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problem = f"malformed LogBlock: {exc!r}"
    if problem:
        refuse(range(max(n, 1)), problem)
        return
    if n == 0:
        return

    reasons: dict[int, str] = {}  # refused events -> why ("" = already applied: skipped silently)
    seen = state.producers.get(producer_id)
    if seen is not None and seen.any_seen(first_seq, first_seq + n):
        reasons.update((i, "") for i in range(n) if seen.seen(first_seq + i))
    ids: dict[tuple[str, ...], int] = {}  # one id per distinct path
    remap = [ids.setdefault(tuple(p), len(ids)) for p in raw_paths]
    paths = list(ids)
    bad = extras.events or max(counts) > limits.max_values_per_event or bad_paths(state, paths, limits)
    at_best = state.at_best.active
    if small and not bad and not reasons and len(paths) == len(raw_paths) and not at_best:  # the tiny fast path
        stats = small_regular_stats(counts, list(path_idx), list(map(float, raw_values)))
        if stats is not None and _apply_stats(state, paths, steps, stats, []):
            applied(state, producer_id, first_seq, first_seq + n, n, min(ts), max(ts))
            return
    if small:
        gid = np.asarray(path_idx, dtype=np.int64)
    if len(paths) != len(raw_paths) and m:
        gid = np.asarray(remap, dtype=np.int64)[gid]
    values = np.asarray(raw_values, dtype=np.float64)
    ev: IntArray | None = None
    if bad:
        ev = np.repeat(np.arange(n, dtype=np.int64), counts)
        kept = check_events(state, paths, remap, counts, gid, ev, extras, limits, reasons)
    else:
        kept = []

    while True:
        if reasons:
            if ev is None:
                ev = np.repeat(np.arange(n, dtype=np.int64), counts)
            take = np.ones(n, dtype=bool)
            take[list(reasons)] = False
            sel = take[ev]
            g, v = gid[sel], values[sel]
            e: IntArray | None = ev[sel]
        else:
            g, v, e = gid, values, ev
        if at_best:  # rule 20: value by value, in order
            _fold_sequential(state, paths, steps, counts, g, e, v, [x for x in kept if x[0] not in reasons], reasons, producer_id)
            break
        if len(v) < max(VECTOR_MIN_VALUES, 1):
            stats = small_regular_stats(counts, gid.tolist(), values.tolist()) if not reasons else None
            if stats is None:
                stats = small_block_stats(paths, counts, g, e, v, reasons)
        else:
            k = counts[0]
            row = gid[:k].tolist()
            if (
                not reasons and k and counts.count(k) == n and len(set(row)) == k and bool((gid.reshape(n, k) == gid[:k]).all())
            ):  # every event logs the same k float paths in the same order
                stats = regular_block_stats(row, values.reshape(n, k))
            else:
                if e is None:
                    e = ev = np.repeat(np.arange(n, dtype=np.int64), counts)
                stats, twice = float_block_stats(g, e, v)
                if twice:
                    assert ev is not None
                    for i in twice:
                        reasons[i] = clash([paths[p] for p in gid[ev == i].tolist()])
                    continue
        xs = [x for x in kept if x[0] not in reasons]
        if not _apply_stats(state, paths, steps, stats, xs):
            _fold_sequential(state, paths, steps, counts, g, e, v, xs, reasons, producer_id)
        break

    if not reasons:
        applied(state, producer_id, first_seq, first_seq + n, n, min(ts), max(ts))
        return
    for i, reason in sorted(reasons.items()):
        if reason:
            refuse((i,), reason)
    for i in range(n):
        if i not in reasons:
            applied(state, producer_id, first_seq + i, first_seq + i + 1, 1, ts[i], ts[i])


def _apply_stats(
    state: RunState, paths: list[tuple[str, ...]], steps: list[int], stats: dict[int, BlockStats], xs: list[Extra]
) -> bool:
    """Fold per-path block stats; False (and nothing changed) if the block's paths clash under rule 2."""
    if xs:
        for pid, more in extra_stats(xs).items():
            if pid in stats:
                stats[pid].combine(more)
            else:
                stats[pid] = more
    used = sorted(stats)
    if len(used) > 1 and not prefix_free([paths[p] for p in used]):
        return False  # "a" and "a.b" in one block: order matters, fold value by value
    for _, _, _, blobs in xs:
        keep_blobs(state, blobs)
    add_block_stats(state, paths, stats, used, steps)
    return True


def _fold_sequential(
    state: RunState,
    paths: list[tuple[str, ...]],
    steps: list[int],
    counts: list[int],
    g: IntArray,
    e: IntArray | None,
    v: FloatArray,
    xs: list[Extra],
    reasons: dict[int, str],
    producer_id: str,
) -> None:
    """Value by value, event by event: exactly what standalone Log records would do (rule 2 clashes, rule 20)."""
    at_best = state.at_best.active
    events = events_of(counts, e)
    by_event: dict[int, list[tuple[int, Any, list[TensorBlob]]]] = {}
    no_blobs: list[TensorBlob] = []
    for i, pid, value in zip(events, g.tolist(), v.tolist(), strict=True):
        by_event.setdefault(i, []).append((pid, value, no_blobs))
    for i, pid, value, blobs in xs:
        by_event.setdefault(i, []).append((pid, value, blobs))
    clashes: dict[tuple[int, ...], str] = {}
    for i in sorted(by_event):
        items = by_event[i]
        pids = tuple(pid for pid, _, _ in items)
        found = clashes.get(pids)
        if found is None:
            found = clashes[pids] = clash([paths[pid] for pid in pids])
        if found:
            reasons[i] = found
            continue
        step = steps[i]
        for pid, value, blobs in items:
            if at_best:
                log_value_at_best(state, producer_id, paths[pid], value, blobs, step)
            else:
                log_value(state, paths[pid], value, blobs, step)
