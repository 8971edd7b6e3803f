"""Per-path stats of a block's float column with numpy (no per-value Python work), and exact sums.

Two layouts: *regular* (every event logs the same k float paths in the same order: the values reshape to
an (events, k) table and every statistic is one call per column set) and *general* (values grouped by a
stable argsort on the path id, then ``reduceat``). min/max ignore NaN (``fmin``/``fmax``) and keep the
first occurrence of the extreme, as folding the values one by one does.

Exact sums: all finite values of the block are scaled by one power of two into integers (a float64 holds
them exactly), split into chunks narrow enough that float64 column sums of them stay below 2**53 (hence
exact), and recombined as Python ints in units of 2**-1074 (see consumer.aggregates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from consumer.aggregates import INF, NINF, SCALE_BITS, BlockStats

__all__ = ["FloatArray", "IntArray", "exact_sums", "float_block_stats", "regular_block_stats"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Reducer = Callable[[FloatArray], npt.NDArray[Any]]


def _stats(
    path_ids: list[int],
    first: list[float],
    first_ev: list[int],
    last: list[float],
    last_ev: list[int],
    lo: list[float | None],
    lo_ev: list[int],
    hi: list[float | None],
    hi_ev: list[int],
    nf: list[int],
    pinf: list[int],
    ninf: list[int],
    sums: list[int],
) -> dict[int, BlockStats]:
    out: dict[int, BlockStats] = {}
    for g, path_id in enumerate(path_ids):
        stats = BlockStats()
        stats.first, stats.first_ev, stats.last, stats.last_ev = first[g], first_ev[g], last[g], last_ev[g]
        stats.nf, stats.s, stats.pinf, stats.ninf = nf[g], sums[g], pinf[g], ninf[g]
        if lo[g] is not None:
            stats.min, stats.min_ev, stats.max, stats.max_ev = lo[g], lo_ev[g], hi[g], hi_ev[g]
        out[path_id] = stats
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
        nf, pinf, ninf = [n] * k, [0] * k, [0] * k
        sums = exact_sums(table, n, k, lambda a: a.sum(axis=0))
    else:
        nf = finite.sum(axis=0).tolist()
        pinf = (table == INF).sum(axis=0).tolist()
        ninf = (table == NINF).sum(axis=0).tolist()
        sums = exact_sums(np.where(finite, table, 0.0), n, k, lambda a: a.sum(axis=0))
    first_ev, last_ev = [0] * k, [n - 1] * k
    return _stats(
        row,
        table[0].tolist(),
        first_ev,
        table[-1].tolist(),
        last_ev,
        lo,
        imin.tolist(),
        hi,
        imax.tolist(),
        nf,
        pinf,
        ninf,
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
    pinf = np.add.reduceat(vs == INF, starts, dtype=np.int64).tolist()
    ninf = np.add.reduceat(vs == NINF, starts, dtype=np.int64).tolist()
    nf = np.add.reduceat(finite, starts, dtype=np.int64).tolist()
    largest = int(sizes.max())
    sums = exact_sums(np.where(finite, vs, 0.0), largest, ngroups, lambda a: np.bincount(group, weights=a, minlength=ngroups))
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
        nf,
        pinf,
        ninf,
        sums,
    )
    return stats, []


def exact_sums(finite: FloatArray, per_group: int, ngroups: int, reduce: Reducer) -> list[int]:
    """Exact sums, in 2**-1074 units, of finite values (NaN/inf replaced by 0) grouped by *reduce*.

    All values are scaled by one power of two so that each is an integer of at most 53 + span bits (span:
    the spread of their binary exponents), then split (truncating toward zero, so every chunk is exact)
    into chunks narrow enough that a float64 sum of *per_group* of them stays below 2**53, hence exact.
    A spread too wide for three chunks falls back to bucketing by exponent.
    """
    mantissa, exponent = np.frexp(finite)
    emin, emax = int(exponent.min()), int(exponent.max())
    width = 53 - per_group.bit_length()  # a sum of per_group values below 2**width stays below 2**53
    bits = 54 + emax - emin
    chunks = -(-bits // width)
    if width < 16 or chunks > 3:
        return _bucket_sums(mantissa, exponent, finite.shape, ngroups, reduce)
    x = np.ldexp(finite, 53 - emin)  # exact integers: every value is a multiple of 2**(emin - 53)
    parts: list[tuple[int, list[float]]] = []
    for j in range(chunks - 1, 0, -1):
        scale = 2.0 ** (width * j)
        high = np.trunc(x * (1.0 / scale))  # toward zero: the rest keeps x's sign and a subset of its bits
        x = x - high * scale
        parts.append((width * j, reduce(high).tolist()))
    parts.append((0, reduce(x).tolist()))
    sums = [0] * ngroups
    for shift, column in parts:
        for g, total in enumerate(column):
            if total:
                sums[g] += int(total) << shift
    to_units = emin - 53 + SCALE_BITS
    return [t << to_units if to_units >= 0 else t >> -to_units for t in sums]


def _bucket_sums(
    mantissa: FloatArray, exponent: npt.NDArray[np.int32], shape: tuple[int, ...], ngroups: int, reduce: Reducer
) -> list[int]:
    """Exact sums when exponents spread widely: one pass per distinct exponent (rare data)."""
    m53 = np.ldexp(mantissa, 53)  # integers below 2**53 in magnitude: value == m53 * 2**(exponent - 53)
    high = np.floor(m53 * 2.0**-26)
    low = m53 - high * 2.0**26
    sums = [0] * ngroups
    for e in np.unique(exponent).tolist():
        here = exponent == e
        h = reduce(np.where(here, high, 0.0)).tolist()
        lw = reduce(np.where(here, low, 0.0)).tolist()
        shift = e - 53 + SCALE_BITS
        for g in range(ngroups):
            total = (int(h[g]) << 26) + int(lw[g])
            if total:
                sums[g] += total << shift if shift >= 0 else total >> -shift
    return sums
