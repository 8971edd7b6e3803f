"""Arrays and tensors as values: .npy bytes (never pickle) and the summary stats of SPEC §4 rule 4.

Shared by the client (its own summary reads) and the consumer (the fold recomputes the stats from the
bytes it received, so the stats in Redis never depend on what a client claims).
"""

from __future__ import annotations

import io
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
        stats["mean"] = _number(finite_or_inf.mean())
        stats["var"] = _number(finite_or_inf.var())
        for p, q in zip(_PERCENTILES, np.percentile(finite_or_inf, _PERCENTILES), strict=True):
            stats[f"{p}%"] = _number(q)
    return stats
