"""Exact sums of floats, in integer units of 2**-1074: of a Python list, and of numpy columns.

Every finite double is an integer multiple of 2**-1074, so a sum of finite doubles is exactly an integer
count of those units (Python ints have no size limit). The fold keeps sums that way (consumer.fold.aggregates)
so that a mean is bit-identical however the values were batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SCALE_BITS", "FloatArray", "Reducer", "column_sums", "exact_sum_units", "exact_units"]

SCALE_BITS = 1074  #: an exact sum counts units of 2**-SCALE_BITS

FloatArray = npt.NDArray[np.float64]
#: a numpy reduction of values to one total per group
Reducer = Callable[[FloatArray], npt.NDArray[Any]]


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


def column_sums(finite: FloatArray, per_group: int, ngroups: int, reduce: Reducer) -> list[int]:
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
