"""Python, numpy, torch and TensorFlow values -> wire values, with the documented limits (ARCHITECTURE.md
"Client value rules"). Shared by the client (checked before sending) and the consumer (checked again).

A wire value ``V`` is ``None | bool | int | float | str`` or one of the tuples fastavro reads and writes for
unions of records: ``("metricfold.Subtree", {"values": {str: V}})``, ``("metricfold.List", {"items": [V]})``,
``("metricfold.Tensor", {"kind": str, "npy": bytes})``.

torch and TensorFlow are recognised by duck typing (the module a value's class comes from); neither is
ever imported here.
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from schemas.errors import LimitExceeded, ValidationError
from schemas.limits import Limits
from schemas.tensors import TENSOR_KINDS, from_npy, tensor_stats, to_npy

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "LIST",
    "MAX_INLINE_ELEMENTS",
    "SUBTREE",
    "TENSOR",
    "Converter",
    "PathKey",
    "check_config_json",
    "check_key",
    "check_label",
    "check_run_name",
    "check_tags",
    "check_text",
    "config_json",
    "display_path",
    "tensor_array",
    "to_python",
]

SUBTREE = "metricfold.Subtree"
LIST = "metricfold.List"
TENSOR = "metricfold.Tensor"
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: Arrays with at most this many elements travel as nested lists; larger ones as a Tensor.
MAX_INLINE_ELEMENTS = 32

#: A leaf key path of a log: the key itself at the top level, a tuple of keys below it.
PathKey = str | tuple[str, ...]


def display_path(path: PathKey | list[str]) -> str:
    """``"grad.norm"`` for ``("grad", "norm")``; a literal '.' in a key is shown as '\\.' (SPEC §4 rule 1)."""
    parts = [path] if isinstance(path, str) else path
    return ".".join(p.replace(".", "\\.") for p in parts)


def check_key(key: object, parent: PathKey | None, limits: Limits) -> str:
    """Return *key* if it is a non-empty str within ``max_key_length``; else raise naming it."""
    where = f" under {display_path(parent)!r}" if parent else ""
    if not isinstance(key, str) or not key:
        raise ValidationError(
            f"keys must be non-empty strings, got {type(key).__name__} {key!r}{where}", key=str(key), value=key
        )
    if len(key) > limits.max_key_length:
        raise LimitExceeded(
            f"key {key[:40]!r}...{where} has {len(key)} characters; max_key_length is {limits.max_key_length}",
            key=key,
            limit="max_key_length",
            maximum=limits.max_key_length,
        )
    check_label(key, f"key {key[:40]!r}{where}")
    return str(key)


def check_text(text: str, what: str) -> str:
    """Return *text* if it can travel as UTF-8 (Avro strings are UTF-8); a lone surrogate such as '\\ud800'
    cannot, and would make the whole batch unencodable in the background sender."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                f"{what} is not valid Unicode: {exc.reason} at position {exc.start} (it cannot be encoded as UTF-8)",
                value=text,
            ) from None
    return text


#: Characters that reorder the text around them when displayed (bidi embeddings, overrides, isolates and
#: marks): "\u202eevil" displays as "live". Refused in keys, tags and run names, as are C0/C1 controls.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_label(text: str, what: str) -> str:
    """Return *text* if it is valid UTF-8 text (``check_text``) without C0/C1 control characters (ESC, NUL,
    CR, LF, ...) or bidi formatting characters: the rule for keys, tags and run names, which every reader
    shows (a terminal table, the page, Grafana). String *values* may hold any valid text."""
    if text.isprintable():  # every character printable (the usual case): no controls, no bidi formatting
        return text
    check_text(text, what)
    for i, char in enumerate(text):
        if char in _BIDI or unicodedata.category(char) == "Cc":
            raise ValidationError(
                f"{what} has the control or text-direction character U+{ord(char):04X} at position {i}: keys, "
                "tags and run names must be printable text",
                value=text,
            )
    return text


def check_tags(tags: object, limits: Limits, *, printable: bool = True) -> list[str]:
    """The run's tags as a list, each a non-empty text of at most ``max_key_length`` characters, at most
    ``max_values_per_event`` of them: the SDK's check at ``init`` and the consumer's of a RunStarted event.
    The SDK also refuses unprintable tags (*printable*, ``check_label``); the consumer folds any valid text,
    so that tags sent before that rule still fold (readers escape what they show)."""
    if tags is None:
        return []
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise ValidationError(f"tags must be a list of strings, got {type(tags).__name__} {tags!r:.60}")
    out = list(tags)
    if len(out) > limits.max_values_per_event:
        raise LimitExceeded(
            f"{len(out)} tags, more than max_values_per_event={limits.max_values_per_event}",
            limit="max_values_per_event",
            maximum=limits.max_values_per_event,
        )
    for tag in out:
        if not isinstance(tag, str) or not tag or len(tag) > limits.max_key_length:
            raise ValidationError(
                f"each tag must be a non-empty str of at most max_key_length={limits.max_key_length} characters, "
                f"got {type(tag).__name__} {tag!r:.60}",
                value=tag,
            )
        (check_label if printable else check_text)(tag, f"tag {tag[:40]!r}")
    return out


def check_run_name(name: object, limits: Limits, *, printable: bool = True) -> str | None:
    """A run name: None, or a str of at most ``max_string_length`` characters (printable for the SDK, as
    ``check_tags``)."""
    if name is None:
        return None
    if not isinstance(name, str) or len(name) > limits.max_string_length:
        raise ValidationError(
            f"the run name must be a str of at most max_string_length={limits.max_string_length} characters, "
            f"got {type(name).__name__} of length {len(name) if isinstance(name, str) else '-'}",
            value=name,
        )
    return (check_label if printable else check_text)(name, "the run name")


def _config_default(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself in a config: numpy values, sets and tuples, paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} {value!r:.60} is not JSON serialisable")


def config_json(config: object) -> tuple[dict[str, Any], str]:
    """The SDK's run config (a dict or an argparse.Namespace) as a dict and the JSON text that travels in
    RunStarted, checked with ``check_config_json`` as the consumer checks it."""
    if config is None:
        return {}, "{}"
    if isinstance(config, argparse.Namespace):
        config = vars(config)
    if not isinstance(config, Mapping):
        raise ValidationError(f"config must be a dict (or argparse.Namespace), got {type(config).__name__}")
    as_dict = dict(config)
    for key in as_dict:
        if not isinstance(key, str):
            raise ValidationError(f"config keys must be strings, got {key!r:.60}", key=str(key))
    try:
        text = json.dumps(as_dict, default=_config_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"config must be JSON serialisable (no NaN/Inf): {exc}") from exc
    check_config_json(text)
    return as_dict, text


def check_config_json(text: object) -> dict[str, Any]:
    """The config of a RunStarted event: JSON text of an object whose every key and string is valid Unicode
    (a lone surrogate, e.g. from a file name that is not UTF-8, can be written as a JSON escape but cannot
    be stored as UTF-8 anywhere after)."""
    if not isinstance(text, str):
        raise ValidationError(f"config_json must be a str, got {type(text).__name__}")
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"config_json is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ValidationError(f"config_json must be a JSON object, got {type(config).__name__}")
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            check_text(value, f"config value {where!r}")
        elif isinstance(value, dict):
            for key, item in value.items():
                inner = f"{where}.{key}" if where else key
                check_text(key, f"config key {inner[:80]!r}")
                stack.append((inner, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return config


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
            check_key(key, path, self.limits)
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
        """Split a logged dict into leaf paths (SPEC §4 rule 1): float leaves to *floats*, others to *extras*."""
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
            check_key(key, parent, self.limits)
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
