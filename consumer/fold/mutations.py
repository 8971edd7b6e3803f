"""The changes to a run's state that the event handlers and the LogBlock path share.

Each tells the state's change tracker before it changes a top-level key (consumer.fold.tracking). Logging a
value at a path creates its leaf if needed (rule 2: a scalar replaces a subtree, a subtree replaces a
scalar) and shows its top-level key again (rule 16); ``applied`` records events as applied (rule 18).
``log_value_at_best`` is ``log_value`` for a run whose definitions use ``at_best`` (rule 20,
consumer.fold.at_best): it also keeps the producer's values at its step and the snapshot of a new best.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consumer.fold.aggregates import BlockStats, Leaf, TensorRefs
from consumer.fold.state import RunState, Seen
from consumer.fold.values import TensorBlob
from schemas.paths import display_path

__all__ = ["add_block_stats", "applied", "keep_blobs", "log_value", "log_value_at_best", "refs_of"]


def refs_of(blobs: Sequence[TensorBlob]) -> TensorRefs:
    """The tensor refs of a value (what the state keeps of its tensors)."""
    return tuple((b.rel, b.sha) for b in blobs)


def keep_blobs(state: RunState, blobs: Sequence[TensorBlob]) -> None:
    """Hand the .npy bytes of tensors that enter the state to the next ``take_changes``."""
    pending = state.tracker.pending_blobs
    for blob in blobs:
        pending[blob.sha] = blob.npy


def _drop_leaf(state: RunState, leaves: dict[tuple[str, ...], Leaf], path: tuple[str, ...]) -> None:
    del leaves[path]
    if state.at_best.snapshots:
        state.at_best.drop(path)
    for i in range(1, len(path)):
        prefix = path[:i]
        left = state.interior[prefix] - 1
        if left:
            state.interior[prefix] = left
        else:
            del state.interior[prefix]


def _new_leaf(state: RunState, path: tuple[str, ...], first: Any, refs: TensorRefs) -> Leaf:
    """Create the leaf at *path* (rule 2: the replaced leaves' aggregates are dropped). The caller has marked
    ``path[0]`` dirty."""
    leaves = state.leaves_by_key.setdefault(path[0], {})
    for i in range(1, len(path)):
        if path[:i] in leaves:
            _drop_leaf(state, leaves, path[:i])
    if path in state.interior:
        depth = len(path)
        for other in [p for p in leaves if len(p) > depth and p[:depth] == path]:
            _drop_leaf(state, leaves, other)
    leaf = leaves[path] = Leaf(path, display_path(path), first, refs)
    for i in range(1, len(path)):
        state.interior[path[:i]] = state.interior.get(path[:i], 0) + 1
    return leaf


def log_value(state: RunState, path: tuple[str, ...], value: Any, blobs: Sequence[TensorBlob], step: int) -> None:
    """Fold one logged (non-None) plain value at *path* and *step*."""
    top = path[0]
    state.tracker.mark_dirty(top)
    state.hidden.discard(top)  # rule 16: logged again -> shown again
    refs = refs_of(blobs) if blobs else ()
    if blobs:
        keep_blobs(state, blobs)
    leaves = state.leaves_by_key.get(top)
    leaf = None if leaves is None else leaves.get(path)
    if leaf is None:
        leaf = _new_leaf(state, path, value, refs)
    leaf.add(value, refs, step)


def log_value_at_best(
    state: RunState, producer_id: str, path: tuple[str, ...], value: Any, blobs: Sequence[TensorBlob], step: int
) -> None:
    """``log_value`` by *producer_id*, in a run whose definitions use ``at_best`` (rule 20)."""
    memory = state.at_best
    stretch = memory.stretch(producer_id, step)
    leaves = state.leaves_by_key.get(path[0])
    leaf = None if leaves is None else leaves.get(path)
    display = display_path(path) if leaf is None else leaf.display
    definition = state.resolver.resolve(display)
    objective = None  # set when the value may be the leaf's new best and its snapshot is kept
    if definition is not None and definition.at_best and definition.options is not None and "best" in definition.options:
        kind = type(value)
        if kind is int or (kind is float and value == value):  # rules 6, 11: numbers other than NaN
            objective = definition.objective
    before = None
    if objective is not None and leaf is not None:
        before = leaf.max if objective == "maximize" else leaf.min
    log_value(state, path, value, blobs, step)
    if memory.matches(display):
        for holder in stretch.holders:  # their at_best views show it (told before the change)
            state.tracker.mark_dirty(holder[0])
        stretch.values[display] = value
    if objective is not None and (before is None or (value > before if objective == "maximize" else value < before)):
        memory.take(path, producer_id, stretch, value, step)


def add_block_stats(
    state: RunState, paths: list[tuple[str, ...]], stats: dict[int, BlockStats], used: list[int], steps: list[int]
) -> None:
    """Fold the stats of one block per path id in *used* (no two of those paths clash under rule 2)."""
    tracker = state.tracker
    dirty = tracker.dirty
    for pid in used:
        block = stats[pid]
        path = paths[pid]
        top = path[0]
        if top not in dirty:  # the usual case needs no call
            tracker.mark_dirty(top)
        state.hidden.discard(top)
        leaves = state.leaves_by_key.get(top)
        leaf = None if leaves is None else leaves.get(path)
        if leaf is None:
            leaf = _new_leaf(state, path, block.first, block.first_refs)
        leaf.add_block(block, steps)


def applied(state: RunState, producer_id: str, first_seq: int, end_seq: int, count: int, ts_lo: int, ts_hi: int) -> None:
    """Record *count* applied events with seqs in [first_seq, end_seq) and timestamps in [ts_lo, ts_hi]."""
    seen = state.producers.get(producer_id)
    if seen is None:
        seen = state.producers[producer_id] = Seen()
    seen.add(first_seq, end_seq)
    state.events += count
    if state.created is None or ts_lo < state.created:
        state.created = ts_lo
    if state.updated is None or ts_hi > state.updated:
        state.updated = ts_hi
    if state.status is None:
        state.status = "running"
    state.tracker.meta_dirty = True
