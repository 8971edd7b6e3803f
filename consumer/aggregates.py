"""Aggregates of one leaf (SPEC §4 rules 6, 8, 10, 11) and of one block of values, exact however batched.

Every leaf keeps, from its first value on and whether or not a definition asks for them:
first/last (any value, NaN included), and over its numeric non-NaN values: min and max with the step at
their first occurrence, the count of finite values, their exact sum, and the counts of +inf and -inf.

The sum is exact: every finite double is an integer multiple of 2**-1074, so the sum is kept as the Python
int ``s`` meaning ``s * 2**-1074``. ``mean = s / (nf << 1074)`` is Python's correctly rounded int
division, so the mean is bit-identical whatever the batching (``+inf``/``-inf``/``nan`` when infinities are
present). A block of float values is summed vectorised: ``frexp`` gives 53-bit integer mantissas, which are
bucketed by (path, exponent) and summed in three 18-bit chunks with ``bincount`` (float64 sums of
integers below 2**53 are exact), then combined as Python ints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "SCALE_BITS",
    "BlockStats",
    "Leaf",
    "TensorRefs",
    "exact_sums",
    "exact_units",
    "float_block_stats",
    "mean_of",
    "regular_block_stats",
]

SCALE_BITS = 1074  #: the exact sum counts units of 2**-SCALE_BITS
_INF = float("inf")
_NINF = float("-inf")

#: tensors inside a value: (display suffix relative to the value, sha256 hex)
TensorRefs = tuple[tuple[str, str], ...]


def exact_units(x: float) -> int:
    """A finite float as an integer number of 2**-1074 units."""
    numerator, denominator = x.as_integer_ratio()
    return numerator << (SCALE_BITS + 1 - denominator.bit_length())


def mean_of(nf: int, s: int, pinf: int, ninf: int) -> float | None:
    """The mean of the non-NaN numeric values: exact sum / count, correctly rounded; None if there are none."""
    if pinf and ninf:
        return float("nan")
    if pinf:
        return _INF
    if ninf:
        return _NINF
    if nf == 0:
        return None
    return s / (nf << SCALE_BITS)


class Leaf:
    """Everything about one leaf key path of a run (mutable; owned by a RunState)."""

    __slots__ = (
        "display",
        "first",
        "first_t",
        "last",
        "last_t",
        "max",
        "max_step",
        "min",
        "min_step",
        "nf",
        "ninf",
        "path",
        "pinf",
        "s",
    )

    def __init__(self, path: tuple[str, ...], display: str, first: Any, first_t: TensorRefs) -> None:
        self.path = path
        self.display = display
        self.first: Any = first
        self.first_t = first_t
        self.last: Any = first
        self.last_t = first_t
        self.nf = 0
        self.s = 0
        self.pinf = 0
        self.ninf = 0
        self.min: int | float | None = None
        self.min_step = 0
        self.max: int | float | None = None
        self.max_step = 0

    def add(self, value: Any, tensors: TensorRefs, step: int) -> None:
        """Fold one value logged at *step* (after every value already folded)."""
        self.last = value
        self.last_t = tensors
        kind = type(value)
        if kind is float:
            if value != value:  # NaN: first/last only (rule 6)
                return
            if value == _INF:
                self.pinf += 1
            elif value == _NINF:
                self.ninf += 1
            else:
                self.nf += 1
                self.s += exact_units(value)
        elif kind is int:
            self.nf += 1
            self.s += value << SCALE_BITS
        else:  # rule 11: non-numeric values update first and last only
            return
        if self.min is None or value < self.min:
            self.min = value
            self.min_step = step
        if self.max is None or value > self.max:
            self.max = value
            self.max_step = step

    def add_block(self, block: BlockStats, steps: list[int]) -> None:
        """Fold a block's stats for this leaf (all its values come after every value already folded)."""
        self.last = block.last
        self.last_t = block.last_t
        self.nf += block.nf
        self.s += block.s
        self.pinf += block.pinf
        self.ninf += block.ninf
        if block.min_ev >= 0 and (self.min is None or block.min < self.min):
            self.min = block.min
            self.min_step = steps[block.min_ev]
        if block.max_ev >= 0 and (self.max is None or block.max > self.max):
            self.max = block.max
            self.max_step = steps[block.max_ev]

    def mean(self) -> float | None:
        return mean_of(self.nf, self.s, self.pinf, self.ninf)


class BlockStats:
    """The values one block logs at one path, summarised; events are indices into the block."""

    __slots__ = (
        "first",
        "first_ev",
        "first_t",
        "last",
        "last_ev",
        "last_t",
        "max",
        "max_ev",
        "min",
        "min_ev",
        "nf",
        "ninf",
        "pinf",
        "s",
    )

    def __init__(self) -> None:
        self.first: Any = None
        self.first_t: TensorRefs = ()
        self.first_ev = -1
        self.last: Any = None
        self.last_t: TensorRefs = ()
        self.last_ev = -1
        self.nf = 0
        self.s = 0
        self.pinf = 0
        self.ninf = 0
        self.min: Any = None
        self.min_ev = -1
        self.max: Any = None
        self.max_ev = -1

    def add(self, value: Any, tensors: TensorRefs, ev: int) -> None:
        """Fold one value of event *ev* (events in increasing order)."""
        if self.first_ev < 0:
            self.first, self.first_t, self.first_ev = value, tensors, ev
        self.last, self.last_t, self.last_ev = value, tensors, ev
        kind = type(value)
        if kind is float:
            if value != value:
                return
            if value == _INF:
                self.pinf += 1
            elif value == _NINF:
                self.ninf += 1
            else:
                self.nf += 1
                self.s += exact_units(value)
        elif kind is int:
            self.nf += 1
            self.s += value << SCALE_BITS
        else:
            return
        if self.min_ev < 0 or value < self.min:
            self.min, self.min_ev = value, ev
        if self.max_ev < 0 or value > self.max:
            self.max, self.max_ev = value, ev

    def combine(self, other: BlockStats) -> None:
        """Merge the stats of the same path from other events of the same block (ties: earlier event)."""
        if other.first_ev >= 0 and (self.first_ev < 0 or other.first_ev < self.first_ev):
            self.first, self.first_t, self.first_ev = other.first, other.first_t, other.first_ev
        if other.last_ev > self.last_ev:
            self.last, self.last_t, self.last_ev = other.last, other.last_t, other.last_ev
        self.nf += other.nf
        self.s += other.s
        self.pinf += other.pinf
        self.ninf += other.ninf
        if other.min_ev >= 0 and (
            self.min_ev < 0 or other.min < self.min or (other.min == self.min and other.min_ev < self.min_ev)
        ):
            self.min, self.min_ev = other.min, other.min_ev
        if other.max_ev >= 0 and (
            self.max_ev < 0 or other.max > self.max or (other.max == self.max and other.max_ev < self.max_ev)
        ):
            self.max, self.max_ev = other.max, other.max_ev


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
        pinf = (table == _INF).sum(axis=0).tolist()
        ninf = (table == _NINF).sum(axis=0).tolist()
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
    pinf = np.add.reduceat(vs == _INF, starts, dtype=np.int64).tolist()
    ninf = np.add.reduceat(vs == _NINF, starts, dtype=np.int64).tolist()
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
