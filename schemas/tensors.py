"""Arrays and tensors as values: .npy bytes (never pickle) and the summary stats of RULES.md §4 rule 4.

Shared by the client (its own summary reads) and the consumer (the fold recomputes the stats from the
bytes it received, so the stats in Redis never depend on what a client claims).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from schemas.errors import ValidationError

__all__ = ["STATS_KEYS", "TENSOR_KINDS", "from_npy", "tensor_stats", "to_npy"]

TENSOR_KINDS = ("numpy.ndarray", "torch.Tensor", "tensorflow.Tensor")
STATS_KEYS = ("_type", "size", "shape", "dtype", "min", "max", "mean", "var", "10%", "25%", "50%", "75%", "90%")
_PERCENTILES = (10, 25, 50, 75, 90)


def to_npy(array: np.ndarray) -> bytes:
    """The array in numpy's .npy format; object arrays are refused (they would need pickle)."""
    if array.dtype.hasobject:
        raise ValidationError(f"arrays of dtype {array.dtype} cannot be logged: only numeric arrays are supported")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    """Load .npy bytes with allow_pickle=False; raise ValidationError for anything that is not a plain array."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValidationError(f"tensor bytes are not a valid .npy array: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise ValidationError("tensor bytes are not a single .npy array")
    return array


def _number(x: Any) -> float | None:
    value = float(x)
    return None if value != value else value


def tensor_stats(array: np.ndarray, kind: str = "numpy.ndarray") -> dict[str, Any]:
    """W&B's summary keys plus shape, dtype and 50%. NaN is left out of every statistic (None if all NaN)."""
    if array.dtype.kind not in "biuf":
        raise ValidationError(f"arrays of dtype {array.dtype} cannot be summarised: only bool, int and float are")
    values = array.astype(np.float64, copy=False).ravel()
    finite_or_inf = values[~np.isnan(values)]
    stats: dict[str, Any] = {
        "_type": kind,
        "size": int(array.size),
        "shape": [int(n) for n in array.shape],
        "dtype": str(array.dtype),
    }
    if finite_or_inf.size == 0:
        for key in STATS_KEYS[4:]:
            stats[key] = None
        return stats
    with np.errstate(invalid="ignore", over="ignore"):
        stats["min"] = _number(finite_or_inf.min())
        stats["max"] = _number(finite_or_inf.max())
        mean, var = float(finite_or_inf.mean()), float(finite_or_inf.var())
        quantiles = [float(q) for q in np.percentile(finite_or_inf, _PERCENTILES)]
        if not all(map(math.isfinite, (mean, var, *quantiles))) and bool(np.isfinite(finite_or_inf).all()):
            mean, var, quantiles = _rescaled(finite_or_inf, mean, var, quantiles)
        stats["mean"] = _number(mean)
        stats["var"] = _number(var)
        for p, q in zip(_PERCENTILES, quantiles, strict=True):
            stats[f"{p}%"] = _number(q)
    return stats


def _rescaled(values: np.ndarray, mean: float, var: float, quantiles: list[float]) -> tuple[float, float, list[float]]:
    """The stats that overflowed although every value is finite (a sum or a difference of values near
    ±1.8e308), computed again on the values scaled by a power of two so that the largest is below 1 (exact,
    but for subnormal results), then scaled back: the mean and the percentiles lie between the min and the
    max, so they come out finite; the variance is infinite only when it really exceeds the float range.
    Only the non-finite ones are replaced: the stats of every other tensor stay bit for bit what they were
    (the fold's digests depend on them)."""
    exponent = int(np.frexp(np.abs(values).max())[1])
    scaled = np.ldexp(values, -exponent)
    if not math.isfinite(mean):
        mean = float(np.ldexp(math.fsum(scaled.tolist()) / scaled.size, exponent))  # an exact sum, rounded once
    if not math.isfinite(var):
        var = float(np.ldexp(scaled.var(), 2 * exponent))  # inf when the variance is beyond the float range
    if not all(map(math.isfinite, quantiles)):
        again = np.ldexp(np.percentile(scaled, _PERCENTILES), exponent)
        quantiles = [q if math.isfinite(q) else float(r) for q, r in zip(quantiles, again, strict=True)]
    return mean, var, quantiles
