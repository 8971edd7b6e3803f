"""schemas.tensors.tensor_stats: finite inputs give finite stats where the true value is a float, and the
stats of ordinary tensors are bit for bit numpy's (the fold's digests depend on them)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from schemas.tensors import tensor_stats

BIG = 1.7e308  # finite; the sum or the difference of two of them is not


def _exact_mean(values: np.ndarray) -> float:
    return float(sum(map(Fraction, values.tolist()), Fraction(0)) / values.size)


@pytest.mark.parametrize(
    "values",
    [
        np.array([-BIG, BIG]),
        np.array([-BIG] * 50 + [BIG] * 50),
        np.array([-BIG] * 20 + [BIG] * 21),
        np.random.default_rng(7).choice([BIG, -BIG, 1.0, -3.5e307], size=1000),
    ],
    ids=["pair", "halves", "unbalanced", "random"],
)
def test_mean_and_percentiles_of_huge_finite_values_stay_finite_and_right(values: np.ndarray) -> None:
    stats = tensor_stats(values)
    assert stats["mean"] == pytest.approx(_exact_mean(values), rel=1e-12, abs=1e-12 * BIG)
    ordered = np.sort(values)
    for p in (10, 25, 50, 75, 90):
        q = stats[f"{p}%"]
        assert q is not None and math.isfinite(q), (p, q)
        rank = p / 100 * (values.size - 1)  # numpy's default (linear) method, in exact arithmetic
        lo, hi = math.floor(rank), math.ceil(rank)
        t = Fraction(rank) - lo
        exact = float(Fraction(ordered[lo]) * (1 - t) + Fraction(ordered[hi]) * t)
        assert q == pytest.approx(exact, rel=1e-12, abs=1e-12 * BIG), (p, q, exact)
    # the variance of these is beyond the float range: infinite is the right answer there
    assert stats["var"] == math.inf


def test_variance_is_finite_when_it_fits_even_if_the_plain_sum_overflows() -> None:
    # (numbers this large differ by at least ~3e292, whose square overflows: only equal ones have a finite variance)
    stats = tensor_stats(np.full(40, BIG))
    assert (stats["mean"], stats["var"], stats["50%"]) == (BIG, 0.0, BIG)


def test_infinite_inputs_keep_their_infinite_or_undefined_stats() -> None:
    stats = tensor_stats(np.array([math.inf, 1.0, 2.0]))
    assert stats["max"] == math.inf and stats["mean"] == math.inf
    assert tensor_stats(np.array([math.inf, -math.inf] * 20))["mean"] is None  # inf - inf: undefined


@pytest.mark.parametrize("seed", range(5))
def test_ordinary_tensors_get_exactly_numpys_stats(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(scale=10.0 ** rng.integers(-30, 30), size=int(rng.integers(33, 5000)))
    stats = tensor_stats(values)
    assert stats["mean"] == float(values.mean()) and stats["var"] == float(values.var())
    quantiles = np.percentile(values, [10, 25, 50, 75, 90])
    assert [stats[f"{p}%"] for p in (10, 25, 50, 75, 90)] == [float(q) for q in quantiles]
