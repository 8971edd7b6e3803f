"""Filters on a project's runs table: one model (`Filter`), two spellings (README "Filtering and exporting runs").

The text syntax (``metricfold runs --where``, the JSON API's ``?where=``), one condition or several joined by
``or`` per text, several texts ANDed::

    acc.best > 0.9            state = finished          tags = baseline        config.optimizer = adam
    val/acc.at_best.loss <= 0.3   state in ["finished","crashed"]   group != sweep-1   lr\\.base >= 1e-4 or state = running

A path is a numeric summary display path (``acc.best``, ``lr\\.base``; ``summary.`` may precede it, and must
when the key is one of the names below), or ``state``, ``tags`` (``tags = foo``: the run has the tag), ``group``,
``job_type``, ``config.<top-level key>`` (equality only). Operators ``> >= < <= = != in nin``; a value is a JSON
number, string or list (for ``in``/``nin``), or a bare word taken as text. A path holding spaces or operator
characters is written as a JSON string. The dict syntax of ``Api().runs(filters=...)`` is W&B's (MongoDB's):
``{"summary.acc.best": {"$gt": 0.9}, "state": {"$in": ["finished"]}, "$or": [...]}``, operators
``$gt $gte $lt $lte $eq $ne $in $nin $and $or``.

A numeric condition holds for the runs that HAVE a number at the path (``!=``/``nin`` included): a run without
one, or an unknown path, never matches. ``!=``/``nin`` on the other fields match the runs without the value too.
Pure: no consumer import (``producer.Api`` uses it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from schemas.errors import ValidationError

__all__ = [
    "BY_UPDATE", "FIELDS", "OPS", "Condition", "Filter", "config_value_text", "parse_filters", "parse_where", "where_texts"
]

#: the sort that means "last updated first" (the project's runs set), not a summary path: every table read takes it
BY_UPDATE = "updated"
#: the comparison operators, as the text spells them
OPS = (">", ">=", "<", "<=", "=", "!=", "in", "nin")
#: the run fields a filter may name besides numeric summary paths ("config" with a key: config.<key>)
FIELDS = ("state", "tags", "group", "job_type", "config")
_MONGO_OPS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<=", "$eq": "=", "$ne": "!=", "$in": "in", "$nin": "nin"}
_MAX_CONFIG_TEXT = 200  # a config value whose JSON is longer is not indexed (consumer/store/indexes.py)
_MAX_CONDITIONS = 64
_PATH = re.compile(r'(?:\\.|[^\s<>=!"])+')
_OP = re.compile(r"(>=|<=|!=|>|<|=|nin(?=[\s\[\"])|in(?=[\s\[\"]))")
_BARE = re.compile(r"[^\s\[\]\"{}]+")
_OR = re.compile(r"\s+or\s+")
_PLAIN_WORD = re.compile(r"[A-Za-z_][\w\-./:@+]*")


@dataclasses.dataclass(frozen=True)
class Condition:
    """One test: *field* "summary" (a numeric display path in *path*), "config" (a top-level key in *path*), or
    state / tags / group / job_type (*path* ""); *op* one of OPS; *values* one value (a list's for in/nin):
    numbers for "summary", canonical JSON texts for "config", strings otherwise."""

    field: str
    path: str
    op: str
    values: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Filter:
    """An AND (any_of False) or OR (any_of True) of conditions and sub-filters."""

    any_of: bool
    parts: tuple[Condition | Filter, ...]


def config_value_text(value: Any) -> str:
    """The canonical JSON of a config value, as its index set is named and a filter finds it (an integral float
    is written as an int: ``1.0`` finds ``1``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _fail(message: str, where: str) -> ValidationError:
    return ValidationError(f"filter {where[:200]!r}: {message}", key="where", value=where)


def _target(path: str, where: str) -> tuple[str, str]:
    """(field, path) of a written path."""
    if path.startswith("summary."):
        path = path[len("summary."):]
    elif path.startswith("summary_metrics."):
        path = path[len("summary_metrics."):]
    elif path in ("state", "tags", "group", "job_type"):
        return path, ""
    elif path == "jobType":
        return "job_type", ""
    elif path.startswith("config."):
        if path == "config.":
            raise _fail("config. needs a top-level config key, e.g. config.lr", where)
        return "config", path[len("config."):]
    if not path or (path.endswith("\\") and not path.endswith("\\\\")):
        raise _fail("the path is empty or ends with a lone backslash", where)
    return "summary", path


def _value(field: str, value: Any, bare: str | None, where: str) -> Any:
    if field == "summary":
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise _fail(f"a summary path compares with numbers, got {json.dumps(value)[:60] if bare is None else bare!r}",
                        where)
        return value
    if field == "config":
        text = config_value_text(value)
        if len(text) > _MAX_CONFIG_TEXT:
            raise _fail(f"config values longer than {_MAX_CONFIG_TEXT} characters of JSON cannot be filtered", where)
        return text
    if bare is not None:
        return bare
    if not isinstance(value, str):
        raise _fail(f"{field} values are text, got {json.dumps(value)[:60]}", where)
    return value


def _condition(field: str, path: str, op: str, value: Any, bare: str | None, where: str) -> Condition:
    if field != "summary" and op not in ("=", "!=", "in", "nin"):
        raise _fail(f"{field} takes =, !=, in or nin (the numeric comparisons are for summary paths)", where)
    if op in ("in", "nin"):
        if not isinstance(value, list | tuple):
            raise _fail(f"{op} takes a list, e.g. [\"a\", \"b\"]", where)
        return Condition(field, path, op, tuple(_value(field, v, None, where) for v in value))
    return Condition(field, path, op, (_value(field, value, bare, where),))


def _json_at(text: str, i: int, where: str) -> tuple[Any, int]:
    try:
        return json.JSONDecoder().raw_decode(text, i)
    except json.JSONDecodeError as exc:
        raise _fail(f"bad JSON at character {i + 1}: {exc.msg}", where) from None


def _parse_condition(text: str, where: str) -> Condition:
    i = len(text) - len(text.lstrip())
    if text[i:i + 1] == '"':
        path, i = _json_at(text, i, where)
        if not isinstance(path, str):
            raise _fail("a quoted path must be a string", where)
    else:
        match = _PATH.match(text, i)
        if not match:
            raise _fail("expected 'path op value', e.g. 'acc.best > 0.9'", where)
        path, i = match.group(), match.end()
    field, path = _target(path, where)
    while text[i:i + 1].isspace():
        i += 1
    op_match = _OP.match(text, i)
    if not op_match:
        raise _fail(f"expected an operator ({' '.join(OPS)}) after the path", where)
    op, i = op_match.group(), op_match.end()
    rest = text[i:].strip()
    if not rest:
        raise _fail("the value is missing", where)
    bare = None
    if rest[0] in '["{':
        value, end = _json_at(rest, 0, where)
        if rest[end:].strip():
            raise _fail(f"unexpected text after the value: {rest[end:].strip()[:40]!r}", where)
    else:
        if not _BARE.fullmatch(rest):
            raise _fail(f"a value with spaces or brackets is written as JSON: {rest[:40]!r}", where)
        try:
            value = json.loads(rest)
        except ValueError:
            value = rest
        bare = rest
    return _condition(field, path, op, value, bare, where)


def _checked(f: Filter) -> Filter:
    count = sum(1 for _ in _conditions(f))
    if count > _MAX_CONDITIONS:
        raise ValidationError(f"a filter may hold at most {_MAX_CONDITIONS} conditions, got {count}", key="where")
    return f


def _conditions(f: Filter | Condition) -> Any:
    if isinstance(f, Condition):
        yield f
    else:
        for part in f.parts:
            yield from _conditions(part)


def parse_where(texts: Sequence[str]) -> Filter | None:
    """The text syntax: each text ``path op value`` (or several joined by ``or``), the texts ANDed; None for none."""
    if isinstance(texts, str):
        texts = [texts]
    parts: list[Condition | Filter] = []
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"a filter must be non-empty text such as 'acc.best > 0.9', got {text!r:.60}", key="where")
        pieces = [_parse_condition(piece, text) for piece in _split_or(text)]
        parts.append(pieces[0] if len(pieces) == 1 else Filter(True, tuple(pieces)))
    return _checked(Filter(False, tuple(parts))) if parts else None


def _split_or(text: str) -> list[str]:
    """*text* cut at each `` or `` outside JSON strings."""
    pieces, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(text):
        if quoted:
            quoted = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            quoted = True
        elif char.isspace() and (m := _OR.match(text, i)) and i >= start:
            pieces.append(text[start:i])
            start = m.end()
    return [*pieces, text[start:]]


def parse_filters(filters: Mapping[str, Any] | None) -> Filter | None:
    """W&B's (MongoDB's) dict syntax; None for no filter (None or {})."""
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise ValidationError(f"filters must be a dict such as {{'acc.best': {{'$gt': 0.9}}}}, got {type(filters).__name__}",
                              key="filters")
    f = _mongo(filters)
    return _checked(f) if f.parts else None


def _mongo(filters: Mapping[str, Any]) -> Filter:
    parts: list[Condition | Filter] = []
    for key, spec in filters.items():
        where = json.dumps({key: spec}, default=str)[:200]
        if key in ("$and", "$or"):
            if not isinstance(spec, list | tuple) or not all(isinstance(s, Mapping) for s in spec):
                raise _fail(f"{key} takes a list of filter dicts", where)
            parts.append(Filter(key == "$or", tuple(_mongo(s) for s in spec)))
            continue
        if not isinstance(key, str) or key.startswith("$"):
            raise _fail(f"unknown operator {key!r}: use {', '.join([*_MONGO_OPS, '$and', '$or'])}", where)
        field, path = _target(key, where)
        if isinstance(spec, Mapping) and spec and all(isinstance(k, str) and k.startswith("$") for k in spec):
            for op, value in spec.items():
                if op not in _MONGO_OPS:
                    raise _fail(f"unknown operator {op!r}: use {', '.join(_MONGO_OPS)}", where)
                parts.append(_condition(field, path, _MONGO_OPS[op], value, None, where))
        else:
            parts.append(_condition(field, path, "=", spec, None, where))
    return Filter(False, tuple(parts))


def where_texts(f: Filter) -> list[str]:
    """The canonical text form of *f* (texts to AND; ``parse_where`` gives an equal filter back)."""
    clauses = _cnf(f)
    if len(clauses) > _MAX_CONDITIONS:
        raise ValidationError("this filter has no short text form (too many combinations of $or and $and)", key="where")
    return [" or ".join(_text(c) for c in clause) for clause in clauses]


def _cnf(f: Filter | Condition) -> list[list[Condition]]:
    if isinstance(f, Condition):
        return [[f]]
    if not f.any_of:
        return [clause for part in f.parts for clause in _cnf(part)]
    result: list[list[Condition]] = [[]]
    for part in f.parts:
        result = [a + b for a in result for b in _cnf(part)]
        if len(result) > _MAX_CONDITIONS:
            raise ValidationError("this filter has no short text form (too many combinations of $or and $and)", key="where")
    return result


def _text(c: Condition) -> str:
    if c.field == "summary":
        reserved = c.path in FIELDS or c.path in ("jobType",) or c.path.startswith(("summary.", "summary_metrics.", "config."))
        path = "summary." + c.path if reserved else c.path
    else:
        path = c.field + ("." + c.path if c.field == "config" else "")
    if not _PATH.fullmatch(path):
        path = json.dumps(path, ensure_ascii=False)

    def one(v: Any) -> str:
        if c.field == "config":
            return str(v)
        if c.field == "summary" or not _PLAIN_WORD.fullmatch(v) or v in ("or", "in", "nin", "true", "false", "null"):
            return json.dumps(v, ensure_ascii=False)
        return str(v)

    if c.op in ("in", "nin"):
        value = "[" + ",".join(str(v) if c.field == "config" else json.dumps(v, ensure_ascii=False) for v in c.values) + "]"
    else:
        value = one(c.values[0])
    return f"{path} {c.op} {value}"
