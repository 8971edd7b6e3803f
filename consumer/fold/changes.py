"""What changed in a run's views since the previous ``take_changes``: ``Changes``, a value in view terms (the
store decides where each part goes).

``take_changes`` recomputes the views of the keys the state's tracker (consumer.fold.tracking) marked dirty
and diffs them against what it handed out last time. A state made by ``state_from_bytes`` is taken to have
had its views handed out already; they are captured lazily, the first time each key is marked dirty.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from consumer.fold.canonical import canonical_json
from consumer.fold.state import RunState, read_state
from consumer.fold.tracking import ChangeTracker, FlatEntry
from consumer.fold.views import ABSENT, flatten, meta_strings, numeric, referenced_tensors, summary_keys, top_view
from schemas.paths import escape_segment

__all__ = ["Changes", "state_from_bytes", "take_changes"]


@dataclasses.dataclass
class Changes:
    """What changed in a run's views since the previous ``take_changes``; ``Changes()`` is no change."""

    #: top-level key -> its new summary value, as canonical JSON; and the keys no longer in the summary
    summary_set: dict[str, str] = dataclasses.field(default_factory=dict)
    summary_del: list[str] = dataclasses.field(default_factory=list)
    #: display path -> its new flat value, as canonical JSON; and the paths no longer in the flat view
    flat_set: dict[str, str] = dataclasses.field(default_factory=dict)
    flat_del: list[str] = dataclasses.field(default_factory=list)
    #: flat paths whose new value is a finite int or float -> that number (each is in flat_set too, as the
    #: number's JSON text, which reads back as the same double); and the paths whose value was such a number
    #: and no longer is (or is gone)
    numeric_set: dict[str, float] = dataclasses.field(default_factory=dict)
    numeric_del: list[str] = dataclasses.field(default_factory=list)
    #: run meta field -> its new text (``views.meta_strings``); and the fields no longer set
    meta: dict[str, str] = dataclasses.field(default_factory=dict)
    meta_del: list[str] = dataclasses.field(default_factory=list)
    #: run meta field -> its previous text, for every field in meta that had one and every field in meta_del (the
    #: store moves a run between its filter indexes by the old and new values)
    meta_before: dict[str, str] = dataclasses.field(default_factory=dict)
    #: sha256 -> .npy bytes of every tensor that entered the state since the previous call and is still kept
    blobs: dict[str, bytes] = dataclasses.field(default_factory=dict)
    #: display path of a shown tensor's stats dict -> its sha256; and the paths no longer showing a tensor
    tensors_set: dict[str, str] = dataclasses.field(default_factory=dict)
    tensors_del: list[str] = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in dataclasses.fields(self))


def _capture(state: RunState, key: str) -> None:
    """Record the current views of *key* as handed out (lazily, after state_from_bytes)."""
    tracker = state.tracker
    value, tensors = top_view(state, key)
    if value is ABSENT:
        return
    tracker.shown_summary[key] = canonical_json(value)
    flat: dict[str, Any] = {}
    flatten(escape_segment(key), value, flat)
    tracker.shown_flat[key] = {path: (canonical_json(v), numeric(v)) for path, v in flat.items()}
    if tensors:
        tracker.shown_tensors[key] = tensors


def state_from_bytes(data: bytes) -> RunState:
    """The state ``state_to_bytes`` wrote. Assumes it was written right after ``take_changes`` (as the store
    does): the views handed out so far are taken to be the views of this state."""
    state = read_state(data)
    tracker = state.tracker
    tracker.shown_meta = meta_strings(state)
    tracker.captured = set()
    tracker.capture = functools.partial(_capture, state)
    return state


def take_changes(state: RunState) -> Changes:
    """What changed in the views since the previous call; resets the tracking.

    ``blobs`` holds the .npy bytes of every tensor that entered the state (as a leaf's first or last value,
    or an override) since the previous call and is still kept: a superset of the tensors that became
    visible, so a tensor that becomes visible later (say, a late ``first`` definition) is already stored.
    """
    tracker = state.tracker
    changes = Changes()
    keys = (summary_keys(state) | set(tracker.shown_summary) | tracker.dirty) if tracker.all_dirty else tracker.dirty
    for key in sorted(keys):  # sorted: the same changes in the same order every time
        value, tensors = top_view(state, key)
        old_text = tracker.shown_summary.get(key)
        new_flat: dict[str, Any] | None = None
        if value is ABSENT:
            if old_text is not None:
                changes.summary_del.append(key)
                del tracker.shown_summary[key]
                new_flat = {}
        else:
            text = canonical_json(value)
            if text != old_text:
                changes.summary_set[key] = text
                tracker.shown_summary[key] = text
                kind = type(value)
                if kind is dict or kind is list:
                    new_flat = {}
                    flatten(escape_segment(key), value, new_flat)
                else:  # a scalar: its flat path is the key, its JSON the text just made
                    _diff_flat_scalar(tracker, key, text, value, changes)
        if new_flat is not None:
            _diff_flat(tracker, key, new_flat, changes)
        old_tensors = tracker.shown_tensors.get(key, {})
        if tensors != old_tensors:
            for path, sha in tensors.items():
                if old_tensors.get(path) != sha:
                    changes.tensors_set[path] = sha
            changes.tensors_del.extend(path for path in old_tensors if path not in tensors)
            if tensors:
                tracker.shown_tensors[key] = tensors
            else:
                tracker.shown_tensors.pop(key, None)
        if tracker.pending_blobs:
            for sha in referenced_tensors(state, key):
                blob = tracker.pending_blobs.get(sha)
                if blob is not None:
                    changes.blobs[sha] = blob
    if tracker.meta_dirty:
        meta = meta_strings(state)
        shown = tracker.shown_meta
        for field, text in meta.items():
            before = shown.get(field)
            if before != text:
                changes.meta[field] = text
                if before is not None:
                    changes.meta_before[field] = before
        for field, before in shown.items():
            if field not in meta:
                changes.meta_del.append(field)
                changes.meta_before[field] = before
        tracker.shown_meta = meta
    tracker.dirty = set()
    tracker.all_dirty = False
    tracker.meta_dirty = False
    tracker.pending_blobs = {}
    return changes


def _diff_flat_scalar(tracker: ChangeTracker, key: str, text: str, value: Any, changes: Changes) -> None:
    path = escape_segment(key)
    entry = (text, numeric(value))
    old = tracker.shown_flat.get(key)
    tracker.shown_flat[key] = {path: entry}
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


def _diff_flat(tracker: ChangeTracker, key: str, new_flat: dict[str, Any], changes: Changes) -> None:
    old = tracker.shown_flat.pop(key, {})
    shown: dict[str, FlatEntry] = {}
    for path, value in new_flat.items():
        entry = (canonical_json(value), numeric(value))
        shown[path] = entry
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
    if shown:
        tracker.shown_flat[key] = shown
