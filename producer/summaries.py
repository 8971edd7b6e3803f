"""``run.summary``: override events (RULES.md §4 rules 15-17) and the client's own view of the summary.

Each assignment ``summary[k] = v``, ``summary.update({...})`` and ``del summary[k]`` is one
``metricfold.SummaryUpdate`` event. Keys are top-level; a dict value is one opaque value; ``None``
removes the key's override (like ``del``). Reads show this client's own writes at once: its overrides
win, removed keys stay hidden until logged again, and otherwise the last value this client logged is
shown (tensors as their stats dict). The consumer's folded summary, which also has aggregates and other
ranks' values, is read with ``Api().run(path).summary``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

from schemas.errors import ValidationError
from schemas.events import TENSOR
from schemas.limits import Limits
from schemas.paths import PathKey, check_key
from schemas.values import Converter, to_python

__all__ = ["Publish", "Summary", "merge_leaf"]

#: publish(set, remove, estimated_bytes): sends one SummaryUpdate event.
Publish = Callable[[dict[str, Any], list[str], int], None]


def merge_leaf(tree: dict[str, Any], path: PathKey, wire: Any) -> None:
    """Set a logged leaf in a nested view; a scalar replaces a subtree and a subtree a scalar (rule 2)."""
    if isinstance(path, str):
        tree[path] = wire
        return
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if type(child) is not dict:
            child = node[part] = {}
        node = child
    node[path[-1]] = wire


def _view(value: Any, tensors: str = "stats") -> Any:
    if type(value) is dict:
        return {k: _view(v, tensors) for k, v in value.items()}
    return to_python(value, tensors)


class Summary(MutableMapping[str, Any]):
    """The summary of a run as this client sees it; writes become SummaryUpdate events."""

    def __init__(self, publish: Publish, limits: Limits) -> None:
        self._publish = publish
        self._limits = limits
        self._overrides: dict[str, Any] = {}  #: key -> wire value set by this client
        self._hidden: set[str] = set()  #: keys this client removed and has not logged since
        self._last: dict[str, Any] = {}  #: key -> last logged wire value (nested dicts for nested keys)

    def _lookup(self, key: str) -> Any:
        if key in self._overrides:
            return self._overrides[key]
        if key in self._hidden or key not in self._last:
            raise KeyError(key)
        return self._last[key]

    def __getitem__(self, key: str) -> Any:
        return _view(self._lookup(key))

    def get_tensor(self, key: str) -> np.ndarray:
        """The full array of a tensor value, exactly as logged or set."""
        wire = self._lookup(key)
        if type(wire) is not tuple or wire[0] != TENSOR:
            raise ValidationError(f"summary value {key!r} is not a tensor", key=key)
        result = to_python(wire, "array")
        assert isinstance(result, np.ndarray)
        return result

    def __iter__(self) -> Iterator[str]:
        keys = dict.fromkeys(k for k in self._last if k not in self._hidden)
        keys.update(dict.fromkeys(self._overrides))
        return iter(list(keys))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        """Remove *key*'s override (sent even if this client never set it: another one may have)."""
        check_key(key, self._limits)
        self._send({}, [key], 64 + 4 * len(key))

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set several top-level keys in one SummaryUpdate event; a None value removes that key."""
        items = dict(other.items() if isinstance(other, Mapping) else other)
        items.update(kwargs)
        if not items:
            return
        converter = Converter(self._limits)
        sets: dict[str, Any] = {}
        removes: list[str] = []
        for key, value in items.items():
            check_key(key, self._limits)
            converter.nbytes += 4 * len(key) + 8
            if value is None:
                removes.append(key)
            else:
                sets[key] = converter.value(value, key)
        self._send(sets, removes, converter.nbytes + 64)

    def _send(self, sets: dict[str, Any], removes: list[str], nbytes: int) -> None:
        self._publish(sets, removes, nbytes)
        self._overrides.update(sets)
        self._hidden.difference_update(sets)
        for key in removes:
            self._overrides.pop(key, None)
            self._hidden.add(key)

    def __repr__(self) -> str:
        return f"Summary({dict(self.items())!r})"
