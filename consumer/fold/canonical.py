"""Canonical JSON text: the one spelling the fold's state bytes and views are compared by.

Sorted keys, compact separators, ``NaN``/``Infinity``/``-Infinity`` tokens (Python's ``allow_nan``), floats by
``repr`` (shortest text that round-trips), UTF-8 kept as is. Equal values give equal text; ``load_json`` gives
the same value back (ints stay ints, floats stay floats, ``-0.0`` too). Display paths come from
``schemas.paths``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["canonical_json", "load_json"]

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=True, ensure_ascii=False, check_circular=False)
_encode_str = json.encoder.encode_basestring
_INF = float("inf")


def canonical_json(value: Any) -> str:
    """The canonical JSON text of *value* (dicts with str keys, lists, str, int, float, bool, None)."""
    kind = type(value)
    if kind is float:  # the common case, without the encoder's call overhead; same text
        if value != value:
            return "NaN"
        if value == _INF:
            return "Infinity"
        if value == -_INF:
            return "-Infinity"
        return float.__repr__(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:  # as the encoder writes them (bool is not int here: it is the next case)
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    return _ENCODER.encode(value)


def load_json(text: str | bytes) -> Any:
    """Parse JSON text, accepting the NaN/Infinity tokens that ``canonical_json`` writes."""
    return json.loads(text)
