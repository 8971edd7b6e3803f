"""The views of a run, pure functions of its state: summary document, flat view, tensors, meta.

Summary of a top-level key ``k`` (RULES.md §4 rules 7, 9, 15-17):

- an override stands -> exactly the override value (a dict is one opaque value; a tensor its stats dict);
- else ``k`` hidden (removed and not logged since), or no leaf -> absent;
- else the leaves under ``k`` compose into nested dicts; each leaf shows, by the definition that resolves
  for its display path: no definition or no options -> its last value; ``none`` -> absent; otherwise a dict
  of exactly the requested options (``OPTION_VIEWS`` in consumer.fold.aggregates; ``best`` adds
  ``best_step``, and ``at_best`` when the definition names at_best keys: rule 20, consumer.fold.at_best). An
  aggregate with no non-NaN numeric value yet (min/max/mean/best) is omitted from that dict, so a string leaf
  defined ``min`` shows ``{}``.

Flat view: every scalar of the summary at its display path (``loss.min``, ``grad.norm``,
``weights.50%``); keys inside dicts are escaped like key segments; a list becomes the JSON text of the
list (a str); an empty dict contributes nothing. A tensor shown anywhere in the summary is listed at the
display path of its stats dict (``weights``, ``weights.last`` under a ``last`` option).

Meta: the run's fields as strings (RULES.md §5); absent fields are left out.
"""

from __future__ import annotations

import math
from typing import Any

from consumer.fold.aggregates import OPTION_VIEWS, Leaf
from consumer.fold.canonical import canonical_json
from consumer.fold.state import RunState
from schemas.paths import escape_segment

__all__ = [
    "ABSENT",
    "flat_view",
    "flatten",
    "meta_strings",
    "numeric",
    "referenced_tensors",
    "summary",
    "summary_keys",
    "tensors_view",
    "top_view",
]

#: the summary value of a key that is not shown
ABSENT: Any = object()


def _leaf_view(state: RunState, leaf: Leaf, tensors: dict[str, str]) -> Any:
    definition = state.resolver.resolve(leaf.display)
    options = None if definition is None else definition.options
    if options is None:
        for rel, sha in leaf.last_refs:
            tensors[leaf.display + rel] = sha
        return leaf.last
    if options == ("none",):
        return ABSENT
    assert definition is not None
    out: dict[str, Any] = {}
    for option in options:
        OPTION_VIEWS[option](leaf, definition, out, tensors)
    if definition.at_best and "best_step" in out:  # rule 20
        out["at_best"] = state.at_best.view(leaf.path, definition.at_best, out["best"], out["best_step"])
    return out


def top_view(state: RunState, key: str) -> tuple[Any, dict[str, str]]:
    """(summary value of top-level *key*, or ``ABSENT``; shown tensors: display path -> sha256)."""
    tensors: dict[str, str] = {}
    override = state.overrides.get(key)
    if override is not None:
        value, refs = override
        prefix = escape_segment(key)
        for rel, sha in refs:
            tensors[prefix + rel] = sha
        return value, tensors
    if key in state.hidden:
        return ABSENT, tensors
    leaves = state.leaves_by_key.get(key)
    if not leaves:
        return ABSENT, tensors
    single = leaves.get((key,))
    if single is not None:
        return _leaf_view(state, single, tensors), tensors
    root: dict[str, Any] = {}
    for path, leaf in leaves.items():
        value = _leaf_view(state, leaf, tensors)
        if value is ABSENT:
            continue
        node = root
        for segment in path[1:-1]:
            node = node.setdefault(segment, {})
        node[path[-1]] = value
    return (root if root else ABSENT), tensors


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Add *value*'s flat view, at display path *prefix*, to *out*."""
    if type(value) is dict:
        for k, v in value.items():
            flatten(f"{prefix}.{escape_segment(k)}", v, out)
    elif type(value) is list:
        out[prefix] = canonical_json(value)
    else:
        out[prefix] = value


def numeric(value: Any) -> float | None:
    """A flat value that is a finite int or float, as a float; else None."""
    kind = type(value)
    if (kind is float or kind is int) and math.isfinite(value):
        return float(value)
    return None


def summary_keys(state: RunState) -> set[str]:
    """Every top-level key the summary may show."""
    return set(state.leaves_by_key) | set(state.overrides)


def summary(state: RunState) -> dict[str, Any]:
    """The whole summary document: top-level key -> value (nested as in RULES.md §4)."""
    out: dict[str, Any] = {}
    for key in sorted(summary_keys(state)):
        value, _ = top_view(state, key)
        if value is not ABSENT:
            out[key] = value
    return out


def flat_view(state: RunState) -> dict[str, Any]:
    """The whole flat view: display path -> JSON scalar (lists as their JSON text)."""
    out: dict[str, Any] = {}
    for key, value in summary(state).items():
        flatten(escape_segment(key), value, out)
    return out


def tensors_view(state: RunState) -> dict[str, str]:
    """Every tensor the summary shows: display path of its stats dict -> sha256 hex."""
    out: dict[str, str] = {}
    for key in summary_keys(state):
        out.update(top_view(state, key)[1])
    return out


def referenced_tensors(state: RunState, key: str) -> set[str]:
    """SHA-256 of every tensor the state keeps under top-level *key* (shown or not)."""
    found = {sha for _, sha in state.overrides.get(key, (None, ()))[1]}
    for leaf in state.leaves_by_key.get(key, {}).values():
        found.update(sha for _, sha in leaf.first_refs)
        found.update(sha for _, sha in leaf.last_refs)
    return found


def meta_strings(state: RunState) -> dict[str, str]:
    """The run's meta as strings (RULES.md §5); absent fields are left out."""
    meta: dict[str, str] = {"events": str(state.events)} if state.events else {}
    if state.status is not None:
        meta["state"] = state.status
    if state.exit_code is not None:
        meta["exit_code"] = str(state.exit_code)
    if state.created is not None:
        meta["created"] = str(state.created)
    if state.updated is not None:
        meta["updated"] = str(state.updated)
    if state.name is not None:
        meta["name"] = state.name
    if state.config is not None:
        meta["config"] = state.config
    if state.tags:
        meta["tags"] = canonical_json(state.tags)
    if state.notes is not None:
        meta["notes"] = state.notes
    if state.group is not None:  # "group" and "job_type": the runs table filters on these names
        meta["group"] = state.group
    if state.job_type is not None:
        meta["job_type"] = state.job_type
    if state.definitions:
        if state.definitions_json is None:
            state.definitions_json = canonical_json([d.to_json() for d in state.definitions])
        meta["definitions"] = state.definitions_json
    return meta
