"""The views of a run derived from its state: summary document, flat view, tensors, and their changes.

Summary of a top-level key ``k`` (SPEC §4 rules 7, 9, 15-17):

- an override stands -> exactly the override value (a dict is one opaque value; a tensor its stats dict);
- else ``k`` hidden (removed and not logged since), or no leaf -> absent;
- else the leaves under ``k`` compose into nested dicts; each leaf shows, by the definition that resolves
  for its display path: no definition or no options -> its last value; ``none`` -> absent; otherwise a dict
  of exactly the requested options (``best`` adds ``best_step``). An aggregate with no non-NaN numeric value
  yet (min/max/mean/best) is omitted from that dict, so a string leaf defined ``min`` shows ``{}``.

Flat view: every scalar of the summary at its display path (``loss.min``, ``grad.norm``,
``weights.50%``); keys inside dicts are escaped like key segments; a list becomes the JSON text of the
list (a str); an empty dict contributes nothing. A tensor shown anywhere in the summary is listed at the
display path of its stats dict (``weights``, ``weights.last`` under a ``last`` option).

Change tracking: the fold marks a top-level key dirty *before* it changes anything under it
(``mark_dirty``); ``take_changes`` recomputes only the dirty keys and diffs them against what it published
last time. After ``state_from_bytes`` what was published is the loaded state's views, captured lazily the
first time each key is marked dirty.
"""

from __future__ import annotations

import math
from typing import Any

from consumer.aggregates import Leaf
from consumer.canonical import canonical_json, escape_segment
from consumer.runstate import Changes, RunState, meta_strings

__all__ = ["flat_view", "mark_all_dirty", "mark_dirty", "summary", "take_changes", "tensors_view"]

_ABSENT: Any = object()


def _leaf_view(state: RunState, leaf: Leaf, tensors: dict[str, str]) -> Any:
    definition = state.resolver.resolve(leaf.display)
    options = None if definition is None else definition.options
    if options is None:
        for rel, sha in leaf.last_t:
            tensors[leaf.display + rel] = sha
        return leaf.last
    if options == ("none",):
        return _ABSENT
    out: dict[str, Any] = {}
    for option in options:
        if option == "min":
            if leaf.min is not None:
                out["min"] = leaf.min
        elif option == "max":
            if leaf.max is not None:
                out["max"] = leaf.max
        elif option == "mean":
            mean = leaf.mean()
            if mean is not None:
                out["mean"] = mean
        elif option == "first":
            out["first"] = leaf.first
            for rel, sha in leaf.first_t:
                tensors[f"{leaf.display}.first{rel}"] = sha
        elif option == "last":
            out["last"] = leaf.last
            for rel, sha in leaf.last_t:
                tensors[f"{leaf.display}.last{rel}"] = sha
        elif option == "best":
            assert definition is not None
            if definition.objective == "maximize":
                if leaf.max is not None:
                    out["best"], out["best_step"] = leaf.max, leaf.max_step
            elif leaf.min is not None:
                out["best"], out["best_step"] = leaf.min, leaf.min_step
    return out


def top_view(state: RunState, key: str) -> tuple[Any, dict[str, str]]:
    """(summary value of top-level *key*, or ``_ABSENT``; shown tensors: display path -> sha256)."""
    tensors: dict[str, str] = {}
    override = state.overrides.get(key)
    if override is not None:
        value, refs = override
        prefix = escape_segment(key)
        for rel, sha in refs:
            tensors[prefix + rel] = sha
        return value, tensors
    if key in state.hidden:
        return _ABSENT, tensors
    leaves = state.tops.get(key)
    if not leaves:
        return _ABSENT, tensors
    single = leaves.get((key,))
    if single is not None:
        return _leaf_view(state, single, tensors), tensors
    root: dict[str, Any] = {}
    for path, leaf in leaves.items():
        value = _leaf_view(state, leaf, tensors)
        if value is _ABSENT:
            continue
        node = root
        for segment in path[1:-1]:
            node = node.setdefault(segment, {})
        node[path[-1]] = value
    return (root if root else _ABSENT), tensors


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if type(value) is dict:
        for k, v in value.items():
            _flatten(f"{prefix}.{escape_segment(k)}", v, out)
    elif type(value) is list:
        out[prefix] = canonical_json(value)
    else:
        out[prefix] = value


def _numeric(value: Any) -> float | None:
    kind = type(value)
    if (kind is float or kind is int) and math.isfinite(value):
        return float(value)
    return None


def _keys(state: RunState) -> set[str]:
    return set(state.tops) | set(state.overrides)


def summary(state: RunState) -> dict[str, Any]:
    """The whole summary document: top-level key -> value (nested as in SPEC §4)."""
    out: dict[str, Any] = {}
    for key in sorted(_keys(state)):
        value, _ = top_view(state, key)
        if value is not _ABSENT:
            out[key] = value
    return out


def flat_view(state: RunState) -> dict[str, Any]:
    """The whole flat view: display path -> JSON scalar (lists as their JSON text)."""
    out: dict[str, Any] = {}
    for key, value in summary(state).items():
        _flatten(escape_segment(key), value, out)
    return out


def tensors_view(state: RunState) -> dict[str, str]:
    """Every tensor the summary shows: display path of its stats dict -> sha256 hex."""
    out: dict[str, str] = {}
    for key in _keys(state):
        out.update(top_view(state, key)[1])
    return out


def referenced_tensors(state: RunState, key: str) -> set[str]:
    """SHA-256 of every tensor the state keeps under top-level *key* (shown or not)."""
    found = {sha for _, sha in state.overrides.get(key, (None, ()))[1]}
    for leaf in state.tops.get(key, {}).values():
        found.update(sha for _, sha in leaf.first_t)
        found.update(sha for _, sha in leaf.last_t)
    return found


def _capture(state: RunState, key: str) -> None:
    """Record the current views of *key* as published (lazy mode, after state_from_bytes)."""
    assert state.pub_captured is not None
    state.pub_captured.add(key)
    value, tensors = top_view(state, key)
    if value is _ABSENT:
        return
    state.pub_summary[key] = canonical_json(value)
    flat: dict[str, Any] = {}
    _flatten(escape_segment(key), value, flat)
    state.pub_flat[key] = {path: (canonical_json(v), _numeric(v)) for path, v in flat.items()}
    if tensors:
        state.pub_tensors[key] = tensors


def mark_dirty(state: RunState, key: str) -> None:
    """Call before changing anything that top-level *key*'s views depend on."""
    if key in state.dirty:
        return
    if state.pub_captured is not None and key not in state.pub_captured:
        _capture(state, key)
    state.dirty.add(key)


def mark_all_dirty(state: RunState) -> None:
    """Call before changing something every key may depend on (the definitions)."""
    if state.pub_captured is not None:
        for key in _keys(state):
            if key not in state.pub_captured and key not in state.dirty:
                _capture(state, key)
        state.pub_captured = None  # everything shown is captured now
    state.all_dirty = True


def take_changes(state: RunState) -> Changes:
    """What changed in the views since the previous call; resets the tracking.

    ``blobs`` holds the .npy bytes of every tensor that entered the state (as a leaf's first or last value,
    or an override) since the previous call and is still kept: a superset of the tensors that became
    visible, so a tensor that becomes visible later (say, a late ``first`` definition) is already stored.
    """
    changes = Changes()
    keys = (_keys(state) | set(state.pub_summary) | state.dirty) if state.all_dirty else state.dirty
    for key in sorted(keys):  # sorted: the same changes in the same order every time
        value, tensors = top_view(state, key)
        old_text = state.pub_summary.get(key)
        new_flat: dict[str, Any] | None = None
        if value is _ABSENT:
            if old_text is not None:
                changes.summary_del.append(key)
                del state.pub_summary[key]
                new_flat = {}
        else:
            text = canonical_json(value)
            if text != old_text:
                changes.summary_set[key] = text
                state.pub_summary[key] = text
                kind = type(value)
                if kind is dict or kind is list:
                    new_flat = {}
                    _flatten(escape_segment(key), value, new_flat)
                else:  # a scalar: its flat path is the key, its JSON the text just made
                    _diff_flat_scalar(state, key, text, value, changes)
        if new_flat is not None:
            _diff_flat(state, key, new_flat, changes)
        old_tensors = state.pub_tensors.get(key, {})
        if tensors != old_tensors:
            for path, sha in tensors.items():
                if old_tensors.get(path) != sha:
                    changes.tensors_set[path] = sha
            changes.tensors_del.extend(path for path in old_tensors if path not in tensors)
            if tensors:
                state.pub_tensors[key] = tensors
            else:
                state.pub_tensors.pop(key, None)
        if state.pending_blobs:
            for sha in referenced_tensors(state, key):
                blob = state.pending_blobs.get(sha)
                if blob is not None:
                    changes.blobs[sha] = blob
    if state.meta_dirty:
        meta = meta_strings(state)
        for field, text in meta.items():
            if state.pub_meta.get(field) != text:
                changes.meta[field] = text
        changes.meta_del.extend(field for field in state.pub_meta if field not in meta)
        state.pub_meta = meta
    state.dirty = set()
    state.all_dirty = False
    state.meta_dirty = False
    state.pending_blobs = {}
    return changes


def _diff_flat_scalar(state: RunState, key: str, text: str, value: Any, changes: Changes) -> None:
    path = escape_segment(key)
    entry = (text, _numeric(value))
    old = state.pub_flat.get(key)
    state.pub_flat[key] = {path: entry}
    if old is not None:
        for stale, (_, number) in old.items():
            if stale != path:
                changes.flat_del.append(stale)
                if number is not None:
                    changes.numeric_del.append(stale)
    previous = None if old is None else old.get(path)
    if previous != entry:
        changes.flat_set[path] = text
        if entry[1] is not None:
            changes.numeric_set[path] = entry[1]
        elif previous is not None and previous[1] is not None:
            changes.numeric_del.append(path)


def _diff_flat(state: RunState, key: str, new_flat: dict[str, Any], changes: Changes) -> None:
    old = state.pub_flat.pop(key, {})
    published: dict[str, tuple[str, float | None]] = {}
    for path, value in new_flat.items():
        entry = (canonical_json(value), _numeric(value))
        published[path] = entry
        previous = old.get(path)
        if previous != entry:
            changes.flat_set[path] = entry[0]
            if entry[1] is not None:
                changes.numeric_set[path] = entry[1]
            elif previous is not None and previous[1] is not None:
                changes.numeric_del.append(path)
    for path, (_, number) in old.items():
        if path not in new_flat:
            changes.flat_del.append(path)
            if number is not None:
                changes.numeric_del.append(path)
    if published:
        state.pub_flat[key] = published
