"""Per-path stats of a block's float column with numpy (no per-value Python work).

Two layouts: *regular* (every event logs the same k float paths in the same order: the values reshape to
an (events, k) table and every statistic is one call per column set) and *general* (values grouped by a
stable argsort on the path id, then ``reduceat``). min/max ignore NaN (``fmin``/``fmax``) and keep the
first occurrence of the extreme, as folding the values one by one does. Sums are exact
(consumer.fold.exact_sums).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from consumer.fold.aggregates import INF, NINF, BlockStats
from consumer.fold.exact_sums import FloatArray, column_sums

__all__ = ["FloatArray", "IntArray", "float_block_stats", "regular_block_stats"]

IntArray = npt.NDArray[np.int64]


def _stats(
    path_ids: list[int],
    first: list[float],
    first_event: list[int],
    last: list[float],
    last_event: list[int],
    lo: list[float | None],
    lo_event: list[int],
    hi: list[float | None],
    hi_event: list[int],
    finite_count: list[int],
    inf_count: list[int],
    neg_inf_count: list[int],
    sums: list[int],
) -> dict[int, BlockStats]:
    """Per path id, the BlockStats of the columns' group *g* (a group without a non-NaN number has no min/max)."""
    out: dict[int, BlockStats] = {}
    for g, path_id in enumerate(path_ids):
        has = lo[g] is not None
        # first, its event, last, its event, finite count, min, its event, max, its event, unsummed (none)
        out[path_id] = BlockStats(
            first[g],
            first_event[g],
            last[g],
            last_event[g],
            finite_count[g],
            lo[g],
            lo_event[g] if has else -1,
            hi[g] if has else None,
            hi_event[g] if has else -1,
            None,
            exact_sum=sums[g],
            inf_count=inf_count[g],
            neg_inf_count=neg_inf_count[g],
        )
    return out


def regular_block_stats(row: list[int], table: FloatArray) -> dict[int, BlockStats]:
    """Stats of a block where every event logs the float paths *row* in that order: *table* is (events, k)."""
    n, k = table.shape
    gmin = np.fmin.reduce(table, axis=0)
    gmax = np.fmax.reduce(table, axis=0)
    columns = np.arange(k)
    imin = (table == gmin).argmax(axis=0)
    imax = (table == gmax).argmax(axis=0)
    has = (~np.isnan(gmin)).tolist()
    lo = [v if h else None for v, h in zip(table[imin, columns].tolist(), has, strict=True)]
    hi: list[float | None] = table[imax, columns].tolist()
    finite = np.isfinite(table)
    if finite.all():
        finite_count, inf_count, neg_inf_count = [n] * k, [0] * k, [0] * k
        sums = column_sums(table, n, k, lambda a: a.sum(axis=0))
    else:
        finite_count = finite.sum(axis=0).tolist()
        inf_count = (table == INF).sum(axis=0).tolist()
        neg_inf_count = (table == NINF).sum(axis=0).tolist()
        sums = column_sums(np.where(finite, table, 0.0), n, k, lambda a: a.sum(axis=0))
    first_event, last_event = [0] * k, [n - 1] * k
    return _stats(
        row,
        table[0].tolist(),
        first_event,
        table[-1].tolist(),
        last_event,
        lo,
        imin.tolist(),
        hi,
        imax.tolist(),
        finite_count,
        inf_count,
        neg_inf_count,
        sums,
    )


def float_block_stats(gid: IntArray, ev: IntArray, values: FloatArray) -> tuple[dict[int, BlockStats], list[int]]:
    """Group float values by path id (numpy, no per-value Python work).

    *gid*, *ev*, *values*: per value, its path id, its event index (non-decreasing) and the value.
    Returns the stats per path id, and the events that log one path twice (empty when the block is valid;
    the caller rejects those events and calls again without them).
    """
    m = len(values)
    order = np.argsort(gid, kind="stable")
    gs = gid[order]
    vs = values[order]
    es = ev[order]
    same = gs[1:] == gs[:-1]
    dup = same & (es[1:] == es[:-1])
    if dup.any():
        return {}, sorted(set(es[1:][dup].tolist()))
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    ends = np.append(starts[1:], m) - 1
    sizes = ends - starts + 1
    ngroups = len(starts)
    gmin = np.fmin.reduceat(vs, starts)
    gmax = np.fmax.reduceat(vs, starts)
    position = np.arange(m)
    imin = np.minimum.reduceat(np.where(vs == np.repeat(gmin, sizes), position, m), starts)
    imax = np.minimum.reduceat(np.where(vs == np.repeat(gmax, sizes), position, m), starts)
    has = (imin < m).tolist()
    imin[imin == m] = 0
    imax[imax == m] = 0
    group = np.repeat(np.arange(ngroups), sizes)
    finite = np.isfinite(vs)
    inf_count = np.add.reduceat(vs == INF, starts, dtype=np.int64).tolist()
    neg_inf_count = np.add.reduceat(vs == NINF, starts, dtype=np.int64).tolist()
    finite_count = np.add.reduceat(finite, starts, dtype=np.int64).tolist()
    largest = int(sizes.max())
    sums = column_sums(np.where(finite, vs, 0.0), largest, ngroups, lambda a: np.bincount(group, weights=a, minlength=ngroups))
    lo = [v if h else None for v, h in zip(vs[imin].tolist(), has, strict=True)]
    stats = _stats(
        gs[starts].tolist(),
        vs[starts].tolist(),
        es[starts].tolist(),
        vs[ends].tolist(),
        es[ends].tolist(),
        lo,
        es[imin].tolist(),
        vs[imax].tolist(),
        es[imax].tolist(),
        finite_count,
        inf_count,
        neg_inf_count,
        sums,
    )
    return stats, []
