"""Python, numpy, torch and TensorFlow values -> wire values, with the documented limits (ARCHITECTURE.md
"Client value rules"). Shared by the client (checked before sending) and the consumer (checked again).

A wire value ``V`` is ``None | bool | int | float | str`` or one of the tuples fastavro reads and writes for
unions of records (``schemas.events`` names them): ``(SUBTREE, {"values": {str: V}})``, ``(LIST, {"items": [V]})``,
``(TENSOR, {"kind": str, "npy": bytes})``. Keys are checked by ``schemas.paths``, run fields by
``schemas.run_fields``.

torch and TensorFlow are recognised by duck typing (the module a value's class comes from); neither is
ever imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from schemas.errors import LimitExceeded, ValidationError
from schemas.events import LIST, SUBTREE, TENSOR
from schemas.limits import Limits
from schemas.paths import PathKey, check_key, display_path
from schemas.tensors import TENSOR_KINDS, from_npy, tensor_stats, to_npy
from schemas.text import check_text

__all__ = ["INT64_MAX", "INT64_MIN", "MAX_INLINE_ELEMENTS", "Converter", "tensor_array", "to_python"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: Arrays with at most this many elements travel as nested lists; larger ones as a Tensor.
MAX_INLINE_ELEMENTS = 32


def tensor_array(value: object) -> tuple[np.ndarray, str] | None:
    """``(array, kind)`` for a numpy array, torch tensor or TF tensor; None for anything else."""
    if isinstance(value, np.ndarray):
        return value, TENSOR_KINDS[0]
    root = type(value).__module__.partition(".")[0]
    if root == "torch" and hasattr(value, "detach"):
        tensor = value.detach().cpu()
        try:
            array = tensor.numpy()
        except TypeError:  # bfloat16 and friends have no numpy dtype
            array = tensor.float().numpy()
        return np.asarray(array), TENSOR_KINDS[1]
    if root in ("tensorflow", "keras") and hasattr(value, "numpy"):
        return np.asarray(value.numpy()), TENSOR_KINDS[2]
    return None


class Converter:
    """Converts the values of one event, counting leaves and estimating the encoded size as it goes."""

    __slots__ = ("count", "limits", "nbytes")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.count = 0  #: leaves so far (list items count too)
        self.nbytes = 0  #: upper estimate of the Avro bytes of the values so far

    def _leaf(self, path: PathKey, nbytes: int) -> None:
        self.count += 1
        self.nbytes += nbytes
        if self.count > self.limits.max_values_per_event:
            raise LimitExceeded(
                f"more than max_values_per_event={self.limits.max_values_per_event} values in one event "
                f"(at {display_path(path)!r}); log them in several calls or raise the limit",
                key=display_path(path),
                limit="max_values_per_event",
                maximum=self.limits.max_values_per_event,
            )

    def _depth(self, path: PathKey, depth: int) -> None:
        if depth > self.limits.max_key_depth:
            raise LimitExceeded(
                f"value at {display_path(path)!r} is nested {depth} levels deep; "
                f"max_key_depth is {self.limits.max_key_depth}",
                key=display_path(path),
                limit="max_key_depth",
                maximum=self.limits.max_key_depth,
            )

    def value(self, value: Any, path: PathKey, depth: int = 1) -> Any:
        """The wire value of one value; a dict becomes one Subtree (as in summary updates)."""
        kind = type(value)
        if kind is float:
            self._leaf(path, 9)
            return value
        if kind is bool or value is None:
            self._leaf(path, 2)
            return value
        if kind is int:
            return self._int(value, path)
        if kind is str:
            return self._str(value, path)
        if isinstance(value, np.generic):
            return self._numpy_scalar(value, path, depth)
        if isinstance(value, float):
            self._leaf(path, 9)
            return float(value)
        if isinstance(value, int):
            return self._int(int(value), path)
        if isinstance(value, str):
            return self._str(str(value), path)
        if isinstance(value, Mapping):
            return self._subtree(value, path, depth)
        if isinstance(value, (list, tuple)):
            self._depth(path, depth)
            self.nbytes += 4
            return (LIST, {"items": [self.value(item, path, depth + 1) for item in value]})
        found = tensor_array(value)
        if found is not None:
            return self._array(found[0], found[1], path, depth)
        raise ValidationError(
            f"value of {display_path(path)!r} has unsupported type {kind.__module__}.{kind.__qualname__}: use "
            "int, float, bool, str, None, list, dict, numpy arrays/scalars, torch or TensorFlow tensors",
            key=display_path(path),
            value=value,
        )

    def _int(self, value: int, path: PathKey) -> int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValidationError(
                f"int value of {display_path(path)!r} does not fit in 64 bits: {value}; log it as a float or str",
                key=display_path(path),
                value=value,
            )
        self._leaf(path, 11)
        return value

    def _str(self, value: str, path: PathKey) -> str:
        if len(value) > self.limits.max_string_length:
            raise LimitExceeded(
                f"string value of {display_path(path)!r} has {len(value)} characters; "
                f"max_string_length is {self.limits.max_string_length}",
                key=display_path(path),
                limit="max_string_length",
                maximum=self.limits.max_string_length,
            )
        check_text(value, f"string value of {display_path(path)!r}")
        self._leaf(path, 4 * len(value) + 6)
        return value

    def _numpy_scalar(self, value: np.generic, path: PathKey, depth: int) -> Any:
        if isinstance(value, (np.timedelta64, np.datetime64)):  # timedelta64 is an np.integer, but int() fails
            raise ValidationError(
                f"value of {display_path(path)!r} is a numpy {value.dtype}: log it as a number (e.g. seconds as a "
                "float) or a str",
                key=display_path(path),
                value=value,
            )
        if isinstance(value, np.bool_):
            self._leaf(path, 2)
            return bool(value)
        if isinstance(value, np.integer):
            return self._int(int(value), path)
        if isinstance(value, np.floating):
            self._leaf(path, 9)
            return float(value)
        if isinstance(value, np.str_):
            return self._str(str(value), path)
        raise ValidationError(
            f"value of {display_path(path)!r} has unsupported numpy type {value.dtype}",
            key=display_path(path),
            value=value,
        )

    def _subtree(self, value: Mapping[Any, Any], path: PathKey, depth: int) -> Any:
        self._depth(path, depth)
        parent = (path,) if isinstance(path, str) else path
        out: dict[str, Any] = {}
        for key, item in value.items():
            check_key(key, self.limits, parent=path)
            self.nbytes += len(key) * 4 + 6
            out[key] = self.value(item, (*parent, key), depth + 1)
        return (SUBTREE, {"values": out})

    def _array(self, array: np.ndarray, kind: str, path: PathKey, depth: int) -> Any:
        if array.size == 1:
            return self.value(array.reshape(-1)[0], path, depth)
        if array.size <= MAX_INLINE_ELEMENTS:
            return self.value(array.tolist(), path, depth)
        if array.dtype.kind not in "biuf":
            raise ValidationError(
                f"array value of {display_path(path)!r} has dtype {array.dtype}; arrays of more than "
                f"{MAX_INLINE_ELEMENTS} elements must be bool, int or float",
                key=display_path(path),
                value=array,
            )
        limit = self.limits.max_tensor_bytes
        if array.nbytes > limit or len(npy := to_npy(array)) > limit:
            raise LimitExceeded(
                f"{kind} value of {display_path(path)!r} (shape {list(array.shape)}, dtype {array.dtype}) takes "
                f"{array.nbytes} bytes; max_tensor_bytes is {limit}",
                key=display_path(path),
                limit="max_tensor_bytes",
                maximum=limit,
            )
        self._leaf(path, len(npy) + len(kind) + 16)
        return (TENSOR, {"kind": kind, "npy": npy})

    def log_leaves(
        self, data: Mapping[Any, Any], floats: list[tuple[PathKey, float]], extras: list[tuple[PathKey, Any]]
    ) -> None:
        """Split a logged dict into leaf paths (RULES.md §4 rule 1): float leaves to *floats*, others to *extras*."""
        if not isinstance(data, Mapping):
            raise ValidationError(f"log() takes a dict of values, got {type(data).__name__}", value=data)
        self._walk(data, None, 1, floats, extras)

    def _walk(
        self,
        data: Mapping[Any, Any],
        parent: tuple[str, ...] | None,
        depth: int,
        floats: list[tuple[PathKey, float]],
        extras: list[tuple[PathKey, Any]],
    ) -> None:
        for key, value in data.items():
            check_key(key, self.limits, parent=parent)
            self.nbytes += 4 * len(key) + 6
            path: PathKey = key if parent is None else (*parent, key)
            if isinstance(value, Mapping):
                self._depth(path, depth + 1)
                self._walk(value, (key,) if parent is None else (*parent, key), depth + 1, floats, extras)
                continue
            wire = self.value(value, path, depth)
            if type(wire) is float:
                floats.append((path, wire))
            else:
                extras.append((path, wire))


def to_python(wire: Any, tensors: str = "stats") -> Any:
    """The Python value of a wire value: dicts, lists, and for tensors their stats dict (``tensors="stats"``)
    or the numpy array itself (``tensors="array"``)."""
    if type(wire) is not tuple:
        return wire
    name, datum = wire
    if name == SUBTREE:
        return {k: to_python(v, tensors) for k, v in datum["values"].items()}
    if name == LIST:
        return [to_python(v, tensors) for v in datum["items"]]
    if name == TENSOR:
        array = from_npy(datum["npy"])
        return array if tensors == "array" else tensor_stats(array, datum["kind"])
    raise ValidationError(f"unknown wire value type {name!r}")
