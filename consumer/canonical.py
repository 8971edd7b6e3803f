"""Canonical JSON text and display paths: the two spellings the fold's output is compared by.

- ``canonical_json``: sorted keys, compact separators, ``NaN``/``Infinity``/``-Infinity`` tokens (Python's
  ``allow_nan``), floats by ``repr`` (shortest text that round-trips), UTF-8 kept as is. Equal values give
  equal text; ``json.loads`` gives the same value back (ints stay ints, floats stay floats, ``-0.0`` too).
- Display paths (SPEC §4 rule 1): the segments of a key path joined by ``.``, with a literal ``.`` inside a
  segment written ``\\.`` and a literal backslash written ``\\\\``. ``("grad", "norm") -> "grad.norm"``,
  ``("a.b",) -> "a\\.b"``. ``define_metric`` names use the same syntax.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["canonical_json", "display_path", "escape_segment", "load_json"]

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


def escape_segment(segment: str) -> str:
    """One key segment as it appears in a display path: ``\\`` -> ``\\\\``, ``.`` -> ``\\.``."""
    if "\\" in segment:
        segment = segment.replace("\\", "\\\\")
    if "." in segment:
        segment = segment.replace(".", "\\.")
    return segment


def display_path(path: Iterable[str]) -> str:
    """The display path of a key path: escaped segments joined by ``.``."""
    return ".".join([escape_segment(segment) for segment in path])
