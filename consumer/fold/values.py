"""Decoded wire values -> the plain values the fold keeps, checked against the limits (RULES.md §3, §4 rules 3-5).

A wire value (docs/ARCHITECTURE.md, "Decoded shapes") is ``None | bool | int | float | str`` or a tuple
``("metricfold.Subtree", {"values": ...})`` / ``("metricfold.List", {"items": ...})`` /
``("metricfold.Tensor", {"kind", "npy"})`` (``schemas.events`` names them). Plain values are JSON values:
Subtree -> dict, List -> list, Tensor -> a scalar (size 1), a nested list (size <= 32) or the stats dict of
``schemas.tensors`` (larger), whose ``.npy`` bytes are collected as a ``TensorBlob`` (content-addressed by
SHA-256).

Every check raises ``ValidationError`` (or ``LimitExceeded``) naming the key and the limit; the fold turns
it into a rejected event. Keys are checked by ``schemas.paths`` without its printable rule (keys sent before
that rule still fold). Nothing here touches a run's state.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from schemas.errors import LimitExceeded, ValidationError
from schemas.events import LIST, SUBTREE, TENSOR
from schemas.limits import Limits
from schemas.paths import check_key, check_path, escape_segment
from schemas.tensors import TENSOR_KINDS, from_npy, tensor_stats

__all__ = ["TensorBlob", "materialize", "split_log_values"]


class TensorBlob(NamedTuple):
    """A tensor inside a value: where (display suffix relative to the value, "" for the value itself)."""

    rel: str
    sha: str
    npy: bytes


def _too_many(count: int, limits: Limits) -> LimitExceeded:
    return LimitExceeded(
        f"the event has {count} values, more than max_values_per_event={limits.max_values_per_event}",
        limit="max_values_per_event",
        maximum=limits.max_values_per_event,
    )


def split_log_values(values: Mapping[str, Any], limits: Limits) -> list[tuple[tuple[str, ...], Any]]:
    """Rule 1: a Log's values map -> (leaf path, wire value) pairs; Subtrees split into their leaves."""
    out: list[tuple[tuple[str, ...], Any]] = []
    stack: list[tuple[tuple[str, ...], Mapping[str, Any]]] = [((), values)]
    while stack:
        prefix, mapping = stack.pop()
        for key, value in mapping.items():
            path = (*prefix, check_key(key, limits, printable=False))
            if len(path) > limits.max_key_depth:
                check_path(path, limits, printable=False)  # raises LimitExceeded naming max_key_depth
            if type(value) is tuple and value[0] == SUBTREE:
                stack.append((path, value[1]["values"]))
            else:
                out.append((path, value))
                if len(out) > limits.max_values_per_event:
                    raise _too_many(len(out), limits)
    return out


def materialize(value: Any, limits: Limits, blobs: list[TensorBlob], rel: str = "", depth: int = 0) -> Any:
    """The plain value of a wire value (see the module doc); tensors' bytes are appended to *blobs*."""
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is float:
        return value
    if kind is str:
        if len(value) > limits.max_string_length:
            raise LimitExceeded(
                f"a string value at {rel or 'the key'!r} has {len(value)} characters, "
                f"more than max_string_length={limits.max_string_length}",
                limit="max_string_length",
                maximum=limits.max_string_length,
            )
        return value
    if kind is not tuple or len(value) != 2:
        raise ValidationError(f"unsupported value of type {kind.__name__} at {rel!r}")
    name, datum = value
    if name == TENSOR:
        return _tensor(datum, limits, blobs, rel)
    if depth >= limits.max_key_depth:
        raise LimitExceeded(
            f"a value nests lists/dicts more than max_key_depth={limits.max_key_depth} levels",
            limit="max_key_depth",
            maximum=limits.max_key_depth,
        )
    if name == LIST:
        return [materialize(item, limits, blobs, f"{rel}.{i}", depth + 1) for i, item in enumerate(datum["items"])]
    if name == SUBTREE:
        return {
            check_key(k, limits, printable=False): materialize(v, limits, blobs, f"{rel}.{escape_segment(k)}", depth + 1)
            for k, v in datum["values"].items()
        }
    raise ValidationError(f"unknown value type {name!r} at {rel!r}")


def _check_npy_header(npy: bytes) -> None:
    """Refuse a header whose shape does not match the bytes (np.load would allocate what it claims)."""
    stream = io.BytesIO(npy)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValidationError(f"tensor bytes use .npy format version {version}; only 1.0 and 2.0 are accepted")
    except ValueError as exc:  # includes ValidationError; numpy raises ValueError for bad headers
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(f"tensor bytes are not a valid .npy array: {exc}") from exc
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise ValidationError(f"tensors of dtype {dtype} are not supported: only bool, int and float up to 64 bits")
    expected = math.prod(shape) * dtype.itemsize
    if len(npy) - stream.tell() != expected:
        raise ValidationError(
            f"tensor bytes are not a valid .npy array: the header promises {expected} data bytes, "
            f"{len(npy) - stream.tell()} follow"
        )


def _tensor(datum: Mapping[str, Any], limits: Limits, blobs: list[TensorBlob], rel: str) -> Any:
    kind, npy = datum["kind"], datum["npy"]
    if kind not in TENSOR_KINDS:
        raise ValidationError(f"tensor kind {kind!r} at {rel!r} is not one of {', '.join(TENSOR_KINDS)}")
    if len(npy) > limits.max_tensor_bytes:
        raise LimitExceeded(
            f"a tensor at {rel or 'the key'!r} has {len(npy)} .npy bytes, more than max_tensor_bytes={limits.max_tensor_bytes}",
            limit="max_tensor_bytes",
            maximum=limits.max_tensor_bytes,
        )
    npy = bytes(npy)
    _check_npy_header(npy)
    array = from_npy(npy)
    if array.size == 1:  # rule 4: size 1 -> scalar (bool stays bool: not numeric)
        return array.reshape(()).item()
    if array.size <= 32:
        return array.tolist()
    with np.errstate(all="ignore"):
        stats = tensor_stats(array, kind)
    blobs.append(TensorBlob(rel, hashlib.sha256(npy).hexdigest(), npy))
    return stats
