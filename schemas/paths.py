"""Key paths: how a logged key is checked, and how a key path is spelled (RULES.md §4 rule 1).

A log's nested dicts split into leaf *key paths*, tuples of key segments: ``{"grad": {"norm": 1}}`` logs the
path ``("grad", "norm")``. Its *display path* joins the segments with ``.``, a literal ``.`` inside a segment
written ``\\.`` and a literal backslash ``\\\\``: ``("grad", "norm") -> "grad.norm"``, ``("a.b",) -> "a\\.b"``.
``define_metric`` names, the flat view, the sorted sets and every reader use that one spelling.

``check_key`` and ``check_path`` are the one definition of a valid key, for the SDK (before sending) and the
fold (again, on what arrives). The SDK also refuses keys that are not printable (``schemas.text.check_label``);
the fold does not (``printable=False``), so that keys sent before that rule still fold.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.errors import LimitExceeded, ValidationError
from schemas.limits import Limits
from schemas.text import check_label

__all__ = ["PathKey", "check_key", "check_path", "display_path", "escape_segment"]

#: A leaf key path of a log: the key itself at the top level, a tuple of keys below it.
PathKey = str | tuple[str, ...]


def escape_segment(segment: str) -> str:
    """One key segment as it appears in a display path: ``\\`` -> ``\\\\``, ``.`` -> ``\\.``."""
    if "\\" in segment:
        segment = segment.replace("\\", "\\\\")
    if "." in segment:
        segment = segment.replace(".", "\\.")
    return segment


def display_path(path: str | Iterable[str]) -> str:
    """The display path of a key path (a str is one top-level key): escaped segments joined by ``.``."""
    if isinstance(path, str):
        return escape_segment(path)
    return ".".join([escape_segment(segment) for segment in path])


def check_key(
    key: object, limits: Limits, *, parent: PathKey | None = None, what: str = "key", printable: bool = True
) -> str:
    """Return *key* if it is a non-empty str of at most ``max_key_length`` characters (and printable text,
    unless *printable* is false); else raise ValidationError (LimitExceeded for the length) naming it."""
    where = f" under {display_path(parent)!r}" if parent else ""
    if not isinstance(key, str) or not key:
        raise ValidationError(
            f"{what}s must be non-empty strings, got {type(key).__name__} {key!r}{where}", key=str(key), value=key
        )
    if len(key) > limits.max_key_length:
        raise LimitExceeded(
            f"{what} {key[:40]!r}...{where} has {len(key)} characters; max_key_length is {limits.max_key_length}",
            key=key,
            limit="max_key_length",
            maximum=limits.max_key_length,
        )
    if printable:
        check_label(key, f"{what} {key[:40]!r}{where}")
    return key


def check_path(path: tuple[str, ...], limits: Limits, *, printable: bool = True) -> None:
    """A leaf key path: 1 to ``max_key_depth`` segments, each a valid key."""
    if not path:
        raise ValidationError("a logged key path is empty")
    if len(path) > limits.max_key_depth:
        raise LimitExceeded(
            f"key path {'.'.join(map(str, path))[:80]!r} is {len(path)} levels deep, "
            f"more than max_key_depth={limits.max_key_depth}",
            limit="max_key_depth",
            maximum=limits.max_key_depth,
        )
    for segment in path:
        check_key(segment, limits, printable=printable)
