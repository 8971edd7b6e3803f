"""Aggregates of one leaf (SPEC §4 rules 6, 8, 10, 11) and of one block of values, exact however batched.

Every leaf keeps, from its first value on and whether or not a definition asks for them:
first/last (any value, NaN included), and over its numeric non-NaN values: min and max with the step at
their first occurrence, the count of finite values, their exact sum, and the counts of +inf and -inf.

The sum is exact: every finite double is an integer multiple of 2**-1074, so the sum is kept as the Python
int ``s`` meaning ``s * 2**-1074``. ``mean = s / (nf << 1074)`` is Python's correctly rounded int
division, so the mean is bit-identical whatever the batching (``+inf``/``-inf``/``nan`` when infinities are
present). ``BlockStats`` summarises the values one block logs at one path; consumer.columnstats computes
them with numpy.

Small live blocks hand their finite floats over as ``unsummed`` instead of an exact sum: a leaf keeps them
and adds them to its sum when it is read (``Leaf.s``: the mean, the state bytes, stored every few seconds)
or when it holds ``UNSUMMED_MAX`` of them, so a run logging 10 values a tick pays for one exact sum per ~32
values instead of one per tick. The sum is exact either way: the result does not depend on when it happens.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SCALE_BITS", "UNSUMMED_MAX", "BlockStats", "Leaf", "TensorRefs", "exact_sum_units", "exact_units", "mean_of"]

SCALE_BITS = 1074  #: the exact sum counts units of 2**-SCALE_BITS
#: a leaf adds the finite floats it was handed unsummed to its exact sum once it holds this many (see above)
UNSUMMED_MAX = 32
INF = float("inf")
NINF = float("-inf")

#: tensors inside a value: (display suffix relative to the value, sha256 hex)
TensorRefs = tuple[tuple[str, str], ...]


def exact_units(x: float) -> int:
    """A finite float as an integer number of 2**-1074 units."""
    numerator, denominator = x.as_integer_ratio()
    return numerator << (SCALE_BITS + 1 - denominator.bit_length())


def exact_sum_units(values: list[float]) -> int:
    """``sum(map(exact_units, values))`` of finite floats, with a few C-level ``math.fsum`` calls instead of a
    Python call per value: fsum is the exact sum correctly rounded, so the exact sum is fsum + the exact sum
    of the rest, and the rest (values and the parts taken so far, negated) is summed the same way until it is
    0 (a nonzero multiple of 2**-1074 never rounds to 0). Usually one or two parts. A sum past the float range
    (fsum raises) goes value by value."""
    rest = list(values)
    total = 0
    try:
        while True:
            part = math.fsum(rest)
            if part == 0.0:
                return total
            total += exact_units(part)
            rest.append(-part)
    except OverflowError:
        return sum(map(exact_units, values))


def mean_of(nf: int, s: int, pinf: int, ninf: int) -> float | None:
    """The mean of the non-NaN numeric values: exact sum / count, correctly rounded; None if there are none."""
    if pinf and ninf:
        return float("nan")
    if pinf:
        return INF
    if ninf:
        return NINF
    if nf == 0:
        return None
    return s / (nf << SCALE_BITS)


class Leaf:
    """Everything about one leaf key path of a run (mutable; owned by a RunState)."""

    __slots__ = (
        "_s",
        "_unsummed",
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
    )

    def __init__(self, path: tuple[str, ...], display: str, first: Any, first_t: TensorRefs) -> None:
        self.path = path
        self.display = display
        self.first: Any = first
        self.first_t = first_t
        self.last: Any = first
        self.last_t = first_t
        self.nf = 0
        self._s = 0
        self._unsummed: list[float] | None = None  # finite floats counted in nf but not yet in _s
        self.pinf = 0
        self.ninf = 0
        self.min: int | float | None = None
        self.min_step = 0
        self.max: int | float | None = None
        self.max_step = 0

    @property
    def s(self) -> int:
        """The exact sum of the finite values, in units of 2**-SCALE_BITS."""
        if self._unsummed:
            self._s += exact_sum_units(self._unsummed)
            self._unsummed = None
        return self._s

    @s.setter
    def s(self, value: int) -> None:
        self._s = value
        self._unsummed = None

    def add(self, value: Any, tensors: TensorRefs, step: int) -> None:
        """Fold one value logged at *step* (after every value already folded)."""
        self.last = value
        self.last_t = tensors
        if not _count(self, value):
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
        self._s += block.s
        if block.unsummed:
            unsummed = self._unsummed
            if unsummed is None:
                self._unsummed = list(block.unsummed)
            else:
                unsummed += block.unsummed
                if len(unsummed) >= UNSUMMED_MAX:
                    self._s += exact_sum_units(unsummed)
                    self._unsummed = None
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
        "unsummed",
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
        self.unsummed: list[float] | None = None  # finite floats counted in nf whose units are not in s
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
        if not _count(self, value):
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
        if other.unsummed:
            self.unsummed = (self.unsummed or []) + other.unsummed
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


def _count(agg: Leaf | BlockStats, value: Any) -> bool:
    """Count one value into *agg*'s finite count, exact sum and infinity counts; True when it also takes part in
    min and max (numeric and not NaN). NaN (rule 6) and non-numeric values (rule 11) are first/last only."""
    kind = type(value)
    if kind is float:
        if value != value:
            return False
        if value == INF:
            agg.pinf += 1
        elif value == NINF:
            agg.ninf += 1
        else:
            agg.nf += 1
            agg.s += exact_units(value)
        return True
    if kind is int:
        agg.nf += 1
        agg.s += value << SCALE_BITS
        return True
    return False
