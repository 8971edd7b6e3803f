"""Aggregates of one leaf and of one block of values (RULES.md §4 rules 6, 8, 10, 11), exact however batched,
and what each summary option shows of them.

Every leaf keeps, from its first value on and whether or not a definition asks for them: first/last (any
value, NaN included), and over its numeric non-NaN values: min and max with the step at their first
occurrence, the count of finite values, their exact sum, and the counts of +inf and -inf.

The sum is exact: every finite double is an integer multiple of 2**-1074, so the sum is kept as the Python
int ``exact_sum`` meaning ``exact_sum * 2**-1074`` (consumer.fold.exact_sums). The mean,
``exact_sum / (finite_count << 1074)``, is Python's correctly rounded int division, so it is bit-identical
whatever the batching (``+inf``/``-inf``/``nan`` when infinities are present). ``BlockStats`` summarises the
values one block logs at one path (consumer.fold.block_stats in Python, consumer.fold.column_stats with numpy).

Small live blocks hand their finite floats over as ``unsummed`` instead of an exact sum: a leaf keeps them
and adds them to its sum when it is read (``Leaf.exact_sum``: the mean, the state bytes) or when it holds
``UNSUMMED_MAX`` of them, so a run logging 10 values a tick pays for one exact sum per ~32 values instead of
one per tick. The sum is exact either way: the result does not depend on when it happens.

``OPTION_VIEWS``: what each summary option (``schemas.summary_options``) shows of a leaf; an aggregate is
added there, beside its figures here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumer.fold.definitions import Definition
from consumer.fold.exact_sums import SCALE_BITS, exact_sum_units, exact_units
from schemas.summary_options import SUMMARY_OPTIONS

__all__ = ["INF", "NINF", "OPTION_VIEWS", "UNSUMMED_MAX", "BlockStats", "Leaf", "OptionView", "TensorRefs"]

#: a leaf adds the finite floats it was handed unsummed to its exact sum once it holds this many (see above)
UNSUMMED_MAX = 32
INF = float("inf")
NINF = float("-inf")

#: tensors inside a value: (display suffix relative to the value, sha256 hex)
TensorRefs = tuple[tuple[str, str], ...]


class Leaf:
    """Everything about one leaf key path of a run (mutable; owned by a RunState)."""

    __slots__ = (
        "_exact_sum",
        "_unsummed",
        "display",
        "finite_count",
        "first",
        "first_refs",
        "inf_count",
        "last",
        "last_refs",
        "max",
        "max_step",
        "min",
        "min_step",
        "neg_inf_count",
        "path",
    )

    def __init__(self, path: tuple[str, ...], display: str, first: Any, first_refs: TensorRefs) -> None:
        self.path = path
        self.display = display
        self.first: Any = first
        self.first_refs = first_refs
        self.last: Any = first
        self.last_refs = first_refs
        self.finite_count = 0
        self._exact_sum = 0
        self._unsummed: list[float] | None = None  # finite floats counted in finite_count but not yet in _exact_sum
        self.inf_count = 0
        self.neg_inf_count = 0
        self.min: int | float | None = None
        self.min_step = 0
        self.max: int | float | None = None
        self.max_step = 0

    @property
    def exact_sum(self) -> int:
        """The exact sum of the finite values, in units of 2**-SCALE_BITS."""
        if self._unsummed:
            self._exact_sum += exact_sum_units(self._unsummed)
            self._unsummed = None
        return self._exact_sum

    @exact_sum.setter
    def exact_sum(self, value: int) -> None:
        self._exact_sum = value
        self._unsummed = None

    def add(self, value: Any, tensors: TensorRefs, step: int) -> None:
        """Fold one value logged at *step* (after every value already folded)."""
        self.last = value
        self.last_refs = tensors
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
        self.last_refs = block.last_refs
        self.finite_count += block.finite_count
        self._exact_sum += block.exact_sum
        if block.unsummed:
            unsummed = self._unsummed
            if unsummed is None:
                self._unsummed = list(block.unsummed)
            else:
                unsummed += block.unsummed
                if len(unsummed) >= UNSUMMED_MAX:
                    self._exact_sum += exact_sum_units(unsummed)
                    self._unsummed = None
        self.inf_count += block.inf_count
        self.neg_inf_count += block.neg_inf_count
        if block.min_event >= 0 and (self.min is None or block.min < self.min):
            self.min = block.min
            self.min_step = steps[block.min_event]
        if block.max_event >= 0 and (self.max is None or block.max > self.max):
            self.max = block.max
            self.max_step = steps[block.max_event]

    def mean(self) -> float | None:
        """The mean of the non-NaN numeric values: exact sum / count, correctly rounded; None if there are none."""
        if self.inf_count and self.neg_inf_count:
            return float("nan")
        if self.inf_count:
            return INF
        if self.neg_inf_count:
            return NINF
        if self.finite_count == 0:
            return None
        return self.exact_sum / (self.finite_count << SCALE_BITS)


class BlockStats:
    """The values one block logs at one path, summarised; events are indices into the block (-1: none)."""

    __slots__ = (
        "exact_sum",
        "finite_count",
        "first",
        "first_event",
        "first_refs",
        "inf_count",
        "last",
        "last_event",
        "last_refs",
        "max",
        "max_event",
        "min",
        "min_event",
        "neg_inf_count",
        "unsummed",
    )

    def __init__(
        self,
        first: Any = None,
        first_event: int = -1,
        last: Any = None,
        last_event: int = -1,
        finite_count: int = 0,
        min: Any = None,
        min_event: int = -1,
        max: Any = None,
        max_event: int = -1,
        unsummed: list[float] | None = None,
        *,
        exact_sum: int = 0,
        inf_count: int = 0,
        neg_inf_count: int = 0,
        first_refs: TensorRefs = (),
        last_refs: TensorRefs = (),
    ) -> None:
        """The one way a block's stats are made (positional up to ``unsummed``: the small-block path is hot)."""
        self.first, self.first_refs, self.first_event = first, first_refs, first_event
        self.last, self.last_refs, self.last_event = last, last_refs, last_event
        self.finite_count = finite_count
        self.exact_sum = exact_sum
        self.unsummed = unsummed  # finite floats counted in finite_count whose units are not in exact_sum
        self.inf_count, self.neg_inf_count = inf_count, neg_inf_count
        self.min, self.min_event, self.max, self.max_event = min, min_event, max, max_event

    def add(self, value: Any, tensors: TensorRefs, event: int) -> None:
        """Fold one value of *event* (events in increasing order)."""
        if self.first_event < 0:
            self.first, self.first_refs, self.first_event = value, tensors, event
        self.last, self.last_refs, self.last_event = value, tensors, event
        if not _count(self, value):
            return
        if self.min_event < 0 or value < self.min:
            self.min, self.min_event = value, event
        if self.max_event < 0 or value > self.max:
            self.max, self.max_event = value, event

    def combine(self, other: BlockStats) -> None:
        """Merge the stats of the same path from other events of the same block (ties: earlier event)."""
        if other.first_event >= 0 and (self.first_event < 0 or other.first_event < self.first_event):
            self.first, self.first_refs, self.first_event = other.first, other.first_refs, other.first_event
        if other.last_event > self.last_event:
            self.last, self.last_refs, self.last_event = other.last, other.last_refs, other.last_event
        self.finite_count += other.finite_count
        self.exact_sum += other.exact_sum
        if other.unsummed:
            self.unsummed = (self.unsummed or []) + other.unsummed
        self.inf_count += other.inf_count
        self.neg_inf_count += other.neg_inf_count
        if other.min_event >= 0 and (
            self.min_event < 0 or other.min < self.min or (other.min == self.min and other.min_event < self.min_event)
        ):
            self.min, self.min_event = other.min, other.min_event
        if other.max_event >= 0 and (
            self.max_event < 0 or other.max > self.max or (other.max == self.max and other.max_event < self.max_event)
        ):
            self.max, self.max_event = other.max, other.max_event


def _count(agg: Leaf | BlockStats, value: Any) -> bool:
    """Count one value into *agg*'s finite count, exact sum and infinity counts; True when it also takes part in
    min and max (numeric and not NaN). NaN (rule 6) and non-numeric values (rule 11) are first/last only."""
    kind = type(value)
    if kind is float:
        if value != value:
            return False
        if value == INF:
            agg.inf_count += 1
        elif value == NINF:
            agg.neg_inf_count += 1
        else:
            agg.finite_count += 1
            agg.exact_sum += exact_units(value)
        return True
    if kind is int:
        agg.finite_count += 1
        agg.exact_sum += value << SCALE_BITS
        return True
    return False


# --- what each summary option shows (rules 8, 9, 10) -----------------------------------------------------

#: (leaf, its definition, the leaf's summary dict to fill, shown tensors: display path -> sha256 to fill)
OptionView = Callable[[Leaf, Definition, dict[str, Any], dict[str, str]], None]


def _min(leaf: Leaf, definition: Definition, out: dict[str, Any], tensors: dict[str, str]) -> None:
    if leaf.min is not None:  # no non-NaN number yet: omitted
        out["min"] = leaf.min


def _max(leaf: Leaf, definition: Definition, out: dict[str, Any], tensors: dict[str, str]) -> None:
    if leaf.max is not None:
        out["max"] = leaf.max


def _mean(leaf: Leaf, definition: Definition, out: dict[str, Any], tensors: dict[str, str]) -> None:
    mean = leaf.mean()
    if mean is not None:
        out["mean"] = mean


def _first(leaf: Leaf, definition: Definition, out: dict[str, Any], tensors: dict[str, str]) -> None:
    out["first"] = leaf.first
    for rel, sha in leaf.first_refs:
        tensors[f"{leaf.display}.first{rel}"] = sha


def _last(leaf: Leaf, definition: Definition, out: dict[str, Any], tensors: dict[str, str]) -> None:
    out["last"] = leaf.last
    for rel, sha in leaf.last_refs:
        tensors[f"{leaf.display}.last{rel}"] = sha


def _best(leaf: Leaf, definition: Definition, out: dict[str, Any], tensors: dict[str, str]) -> None:
    if definition.objective == "maximize":
        if leaf.max is not None:
            out["best"], out["best_step"] = leaf.max, leaf.max_step
    elif leaf.min is not None:
        out["best"], out["best_step"] = leaf.min, leaf.min_step


#: every summary option but ``none`` (the key is absent), and what it shows
OPTION_VIEWS: dict[str, OptionView] = {"min": _min, "max": _max, "mean": _mean, "first": _first, "last": _last, "best": _best}
assert {*OPTION_VIEWS, "none"} == set(SUMMARY_OPTIONS), "every summary option needs its view here"
