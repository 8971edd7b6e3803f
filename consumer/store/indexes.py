"""The project's index sets behind filters (schemas/filters.py), both sides.

Write side (`index_moves`): when a run's state, tags, group, job_type or config changes, apply_runs.lua moves
its id from the old value's sets to the new value's (`is:state:<v>`, `is:tag:<t>`, `is:group:<v>`,
`is:job_type:<v>`, `is:config:"<key>"=<JSON>` per top-level config key; keys.py). The fold's `Changes` says
the old text (`meta_before`), so every key is known before the call (Redis Cluster: all declared in KEYS).
Runs folded before the indexes existed are put in them once per generation (`backfill_call`, index_runs.lua;
Writer.ensure_indexes, when a consumer starts and the generation's `indexes` key does not hold INDEX_VERSION).

Read side (`compile_filter`): a `Filter` as the KEYS and the JSON tree read_where.lua evaluates: a numeric
condition is score ranges of the path's `by:` index (ZRANGEBYSCORE syntax, "(" = exclusive), the others a list
of index sets, `x` when negated (the project's runs outside them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from consumer.fold import Changes
from consumer.store.keys import Keys
from schemas.filters import Condition, Filter, config_value_text

__all__ = ["INDEXED_FIELDS", "INDEX_VERSION", "backfill_call", "compile_filter", "index_moves"]

#: the run meta fields that have index sets
INDEXED_FIELDS = ("state", "tags", "group", "job_type", "config")
#: the index sets' version: a generation's `indexes` key holds it once every run is in its sets
INDEX_VERSION = "1"
_MAX_CONFIG_TEXT = 200


class _Declared:
    """The KEYS of one script call being made: each name once; `slot(name)` is its KEYS index."""

    def __init__(self, first_key: int = 1) -> None:
        self.first_key = first_key
        self.names: list[str] = []
        self._slots: dict[str, int] = {}

    def slot(self, name: str) -> int:
        if name not in self._slots:
            self._slots[name] = self.first_key + len(self.names)
            self.names.append(name)
        return self._slots[name]


def _sets(keys: Keys, project: str, field: str, text: str | None) -> list[str]:
    """The index sets a run is in for its meta *field* of *text* (None: the field is not set)."""
    if text is None:
        return []
    if field in ("state", "group", "job_type"):
        return [keys.index(project, field, text)]
    try:
        value = json.loads(text)
    except ValueError:
        return []
    if field == "tags":
        return [keys.index(project, "tag", t) for t in value if isinstance(t, str)] if isinstance(value, list) else []
    out = []
    for key, item in value.items() if isinstance(value, dict) else ():
        try:
            item_text = config_value_text(item)
        except ValueError:  # NaN or Infinity: no config has them (schemas.run_fields), and no filter finds them
            continue
        if len(item_text) <= _MAX_CONFIG_TEXT:
            out.append(keys.config_index(project, key, item_text))
    return out


def index_moves(keys: Keys, project: str, changes: Changes) -> tuple[list[str], list[str]]:
    """(sets to take the run out of, sets to put it in) for its meta *changes*; ([], []) when no indexed field
    changed (nearly every write: one membership test per field)."""
    meta, gone = changes.meta, changes.meta_del
    out: list[str] = []
    into: list[str] = []
    for field in INDEXED_FIELDS:
        if field not in meta and field not in gone:
            continue
        old = _sets(keys, project, field, changes.meta_before.get(field))
        new = _sets(keys, project, field, meta.get(field))
        old_set, new_set = set(old), set(new)
        out += [k for k in old if k not in new_set]
        into += [k for k in new if k not in old_set]
    return out, into


def backfill_call(keys: Keys, project: str, runs: Sequence[tuple[str, Sequence[str | None]]]) -> tuple[list[str], str]:
    """KEYS and ARGV[1] of one index_runs.lua call that puts *runs* of *project* (run_id, its meta's
    INDEXED_FIELDS as read, None where not set) into their index sets, if their meta still reads the same (the
    script compares the fields this call names)."""
    declared = _Declared()
    rows = []
    for run_id, texts in runs:
        meta = declared.slot(keys.run(f"{project}/{run_id}", "meta"))
        sets = [name for field, text in zip(INDEXED_FIELDS, texts, strict=True) for name in _sets(keys, project, field, text)]
        rows.append([run_id, meta, [text or "" for text in texts], [declared.slot(name) for name in dict.fromkeys(sets)]])
    return declared.names, json.dumps({"f": INDEXED_FIELDS, "r": rows}, separators=(",", ":"), ensure_ascii=False)


def compile_filter(keys: Keys, project: str, f: Filter, first_key: int) -> tuple[list[str], str]:
    """(the keys the filter reads, declared from KEYS index *first_key* on; the tree as JSON for read_where.lua)."""
    declared = _Declared(first_key)
    slot = declared.slot

    def node(part: Condition | Filter) -> dict[str, Any]:
        if isinstance(part, Filter):
            return {"o" if part.any_of else "a": [node(p) for p in part.parts]}
        if part.field == "summary":
            return {"z": slot(keys.by_path(project, part.path)), "r": _ranges(part.op, [float(v) for v in part.values])}
        if part.field == "config":
            names = [keys.config_index(project, part.path, v) for v in part.values]
        else:
            names = [keys.index(project, "tag" if part.field == "tags" else part.field, v) for v in part.values]
        return {"s": [slot(n) for n in names], "x": part.op in ("!=", "nin")}

    tree = node(f)
    return declared.names, json.dumps(tree, separators=(",", ":"), ensure_ascii=False)


def _ranges(op: str, values: list[float]) -> list[list[str]]:
    """Score ranges, as ZRANGEBYSCORE's min and max, of the numbers that pass `op` *values* (disjoint, ordered)."""
    v = repr(values[0]) if values else ""
    if op == ">":
        return [[f"({v}", "+inf"]]
    if op == ">=":
        return [[v, "+inf"]]
    if op == "<":
        return [["-inf", f"({v}"]]
    if op == "<=":
        return [["-inf", v]]
    points = [repr(p) for p in sorted(set(values))]
    if op in ("=", "in"):
        return [[p, p] for p in points]
    bounds = ["-inf", *(f"({p}" for p in points)]  # != and nin: between the points
    ends = [*(f"({p}" for p in points), "+inf"]
    return [[lo, hi] for lo, hi in zip(bounds, ends, strict=True)]
