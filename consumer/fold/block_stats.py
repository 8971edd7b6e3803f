"""Per-path stats of a small LogBlock, in Python: list builtins and small loops cost less than numpy's
per-call overhead on a few values (consumer.fold.column_stats does the large blocks)."""

from __future__ import annotations

import math

from consumer.fold.aggregates import BlockStats
from consumer.fold.block_checks import Extra, clash
from consumer.fold.column_stats import FloatArray, IntArray
from consumer.fold.exact_sums import SCALE_BITS
from consumer.fold.mutations import refs_of

__all__ = ["events_of", "extra_stats", "small_block_stats", "small_regular_stats"]


def events_of(counts: list[int], e: IntArray | None) -> list[int]:
    """The event index of every float value (*e* if already made, else from the per-event counts)."""
    return e.tolist() if e is not None else [i for i, c in enumerate(counts) for _ in range(c)]


def small_regular_stats(counts: list[int], pids: list[int], vl: list[float]) -> dict[int, BlockStats] | None:
    """The stats of a few finite float values logged at the same k paths by every event, with list
    builtins (min, index, slicing run in C); None when the block is not like that."""
    n, k = len(counts), counts[0] if counts else 0
    if not k or counts.count(k) != n:
        return None
    row = pids[:k]
    if len(set(row)) != k or pids != row * n or not math.isfinite(sum(vl)):  # a finite sum: no NaN, no inf
        return None
    stats: dict[int, BlockStats] = {}
    for c, pid in enumerate(row):
        column = vl[c::k]
        lo, hi = min(column), max(column)  # the first of equal extremes, as index() finds it too
        # first, its event, last, its event, finite count, min, its event, max, its event, unsummed (positional:
        # this runs per path of every small live block); the leaf sums the unsummed floats later, many blocks' at once
        stats[pid] = BlockStats(column[0], 0, column[-1], n - 1, n, lo, column.index(lo), hi, column.index(hi), column)
    return stats


def small_block_stats(
    paths: list[tuple[str, ...]],
    counts: list[int],
    g: IntArray,
    e: IntArray | None,
    v: FloatArray,
    reasons: dict[int, str],
) -> dict[int, BlockStats]:
    """Per-path stats of a few float values; events that log a path twice, or a path and one under it, are
    refused (added to *reasons*)."""
    by_event: dict[int, list[tuple[int, float]]] = {}
    for i, pid, value in zip(events_of(counts, e), g.tolist(), v.tolist(), strict=True):
        by_event.setdefault(i, []).append((pid, value))
    stats: dict[int, BlockStats] = {}
    clashes: dict[tuple[int, ...], str] = {}
    for i, items in by_event.items():
        pids = tuple(pid for pid, _ in items)
        found = clashes.get(pids)
        if found is None:
            found = clashes[pids] = clash([paths[pid] for pid in pids])
        if found:
            reasons[i] = found
            continue
        for pid, value in items:
            block = stats.get(pid)
            if block is None:
                block = stats[pid] = BlockStats()
            block.add(value, (), i)
    return stats


def extra_stats(xs: list[Extra]) -> dict[int, BlockStats]:
    """Per-path stats of the extras (event order); runs of plain ints or of non-numbers use list builtins."""
    by_path: dict[int, list[Extra]] = {}
    for x in xs:
        found = by_path.get(x[1])
        if found is None:
            by_path[x[1]] = [x]
        else:
            found.append(x)
    out: dict[int, BlockStats] = {}
    for pid, items in by_path.items():
        values = [x[2] for x in items]
        kinds = set(map(type, values))
        first, last = items[0], items[-1]
        if kinds == {int}:
            events = [x[0] for x in items]
            lo, hi = min(values), max(values)
            out[pid] = BlockStats(
                first=first[2],
                first_event=first[0],
                last=last[2],
                last_event=last[0],
                min=lo,
                min_event=events[values.index(lo)],
                max=hi,
                max_event=events[values.index(hi)],
                finite_count=len(values),
                exact_sum=sum(values) << SCALE_BITS,
            )
        elif not kinds & {int, float}:  # rule 11: non-numeric values update only first and last
            out[pid] = BlockStats(
                first=first[2],
                first_refs=refs_of(first[3]),
                first_event=first[0],
                last=last[2],
                last_refs=refs_of(last[3]),
                last_event=last[0],
            )
        else:
            block = out[pid] = BlockStats()
            for i, _, value, blobs in items:
                block.add(value, refs_of(blobs), i)
    return out
