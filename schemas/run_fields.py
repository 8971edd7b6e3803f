"""The run fields a trainer gives at ``init``: name, tags, config, notes, group and job_type, checked by the SDK
and again by the fold.

The SDK calls these before it sends a RunStarted event; the fold calls them on what arrives, with
``printable=False`` for names and tags (unprintable names and tags sent before that rule still fold; readers
escape what they show, ``schemas.text.printable``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from schemas.errors import LimitExceeded, ValidationError
from schemas.limits import Limits
from schemas.text import check_label, check_text

__all__ = ["check_config_json", "check_run_label", "check_run_name", "check_run_notes", "check_tags", "config_json"]


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


def _bounded_text(
    value: object, what: str, limit: str, maximum: int, *, key: str | None = None, show: bool = False
) -> str:
    """*value* if it is a str of at most *maximum* characters (the limit named *limit*), else the ValidationError
    that names *what*; it shows the value (*show*: short fields) or only its length (names and notes)."""
    if not isinstance(value, str) or len(value) > maximum:
        got = f"{value!r:.60}" if show else f"of length {len(value) if isinstance(value, str) else '-'}"
        raise ValidationError(
            f"{what} must be a str of at most {limit}={maximum} characters, got {type(value).__name__} {got}",
            key=key,
            value=value,
        )
    return value


def check_run_name(name: object, limits: Limits, *, printable: bool = True) -> str | None:
    """A run name: None, or a str of at most ``max_string_length`` characters (printable for the SDK, as
    ``check_tags``)."""
    if name is None:
        return None
    name = _bounded_text(name, "the run name", "max_string_length", limits.max_string_length)
    return (check_label if printable else check_text)(name, "the run name")


def check_run_label(value: object, field: str, limits: Limits, *, printable: bool = True) -> str | None:
    """A run's ``group`` or ``job_type`` (*field*): None, or a str of at most ``max_key_length`` characters,
    printable for the SDK (as a tag: the runs table filters and shows it). "" is the same as None (not set)."""
    if value is None or value == "":
        return None
    value = _bounded_text(value, field, "max_key_length", limits.max_key_length, key=field, show=True)
    return (check_label if printable else check_text)(value, f"the run's {field}")


def check_run_notes(notes: object, limits: Limits, *, printable: bool = True) -> str | None:
    """A run's notes: None, or a str of at most ``max_string_length`` characters; several lines and tabs are
    fine, other control and text-direction characters are refused by the SDK (as in a run name). "" is None."""
    if notes is None or notes == "":
        return None
    notes = _bounded_text(notes, "notes", "max_string_length", limits.max_string_length, key="notes")
    if not printable:
        return check_text(notes, "the run's notes")
    check_label(notes.replace("\n", " ").replace("\t", " "), "the run's notes")  # same length: same positions
    return notes


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
