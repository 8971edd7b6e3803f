"""Checks of a LogBlock before it is folded: its shape, and which of its events must be refused.

An event is refused (and only that event) when it passes ``max_values_per_event``, uses a key path that
breaks a limit, logs a path twice or a path and one under it, or carries an extra value that breaks a rule
(string length, tensor bytes or .npy, a Subtree where a leaf belongs). Whole-block checks run first; the
per-event work runs only for the events they flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import Any

import numpy as np

from consumer.fold.column_stats import IntArray
from consumer.fold.state import RunState
from consumer.fold.values import TensorBlob, materialize
from schemas.errors import ValidationError
from schemas.events import SUBTREE
from schemas.limits import Limits
from schemas.paths import check_path, display_path

__all__ = ["Extra", "ExtraColumns", "bad_paths", "check_events", "clash", "prefix_free", "structure_problem"]

Extra = tuple[int, int, Any, list[TensorBlob]]  # event, path id, plain value, tensors
_EVENT, _PATH, _VALUE = itemgetter("event"), itemgetter("path"), itemgetter("value")


class ExtraColumns:
    """A LogBlock's extras as three columns (event, path index, wire value), in the order given."""

    __slots__ = ("events", "paths", "values")

    def __init__(self, extras: Any) -> None:
        self.events: list[int] = list(map(_EVENT, extras))
        self.paths: list[int] = list(map(_PATH, extras))
        self.values: list[Any] = list(map(_VALUE, extras))


def structure_problem(
    block: Mapping[str, Any],
    steps: Any,
    counts: Any,
    ts: Any,
    raw_paths: Any,
    path_idx: Any,
    raw_values: Any,
    extras: Any,
) -> str:
    """Why the block as a whole is malformed ("" if it is not): its columns disagree in length, or an index or
    ``first_seq`` is out of range."""
    n, m = len(steps), len(path_idx)
    if type(block["first_seq"]) is not int:
        return "malformed LogBlock: first_seq must be an int"
    if len(ts) != n or len(counts) != n:
        return "malformed LogBlock: steps, ts_ms and counts must have one entry per event"
    if sum(counts) != m or len(raw_values) != m or (n and min(counts) < 0):
        return "malformed LogBlock: counts must add up to the number of path_idx and values"
    if extras.events and not (
        min(extras.events) >= 0 and max(extras.events) < n and min(extras.paths) >= 0 and max(extras.paths) < len(raw_paths)
    ):
        return "malformed LogBlock: an extra's event or path is out of range"
    if block["first_seq"] < 0:
        return f"seq {block['first_seq']} is negative: seqs count from 0 per producer"
    return ""


def bad_paths(state: RunState, paths: list[tuple[str, ...]], limits: Limits) -> bool:
    """Whether a path breaks a limit; paths found good are remembered per state (for these limits)."""
    if state.good_paths_limits is not limits:
        state.good_paths_limits = limits
        state.good_paths = set()
    good = state.good_paths
    try:
        for path in paths:
            if path not in good:
                check_path(path, limits, printable=False)
                good.add(path)
    except ValidationError:
        return True
    return False


def check_events(
    state: RunState,
    paths: list[tuple[str, ...]],
    remap: list[int],
    counts: list[int],
    gid: IntArray,
    ev: IntArray,
    extras: ExtraColumns,
    limits: Limits,
    reasons: dict[int, str],
) -> list[Extra]:
    """Find the refused events (values per event, bad paths, clashes, bad extras); convert the extras.

    Cheap whole-block checks first; the per-event work runs only for the events they flag."""
    n = len(counts)
    xe, xv = extras.events, extras.values
    xp = [remap[p] for p in extras.paths]
    if xe != sorted(xe):
        order = sorted(range(len(xe)), key=xe.__getitem__)
        xe, xp, xv = [xe[j] for j in order], [xp[j] for j in order], [xv[j] for j in order]
    limit = limits.max_values_per_event
    per_event = np.asarray(counts, dtype=np.int64)
    if xe:
        per_event = per_event + np.bincount(np.asarray(xe, dtype=np.int64), minlength=n)
    for i in np.flatnonzero(per_event > limit).tolist():
        reasons.setdefault(i, f"the event has {per_event[i]} values, more than max_values_per_event={limit}")
    if bad_paths(state, paths, limits):
        for pid, path in enumerate(paths):
            try:
                check_path(path, limits, printable=False)
            except ValidationError as exc:
                events = set(ev[gid == pid].tolist()) | {i for i, p in zip(xe, xp, strict=True) if p == pid}
                for i in sorted(events):
                    reasons.setdefault(i, str(exc))
    if xe:
        float_paths = set(np.flatnonzero(np.bincount(gid, minlength=len(paths))).tolist()) if len(gid) else set()
        maybe_clash = not float_paths.isdisjoint(xp) or len(set(zip(xe, xp, strict=True))) != len(xe) or not prefix_free(paths)
        if maybe_clash:  # look event by event
            offsets = [0]
            for c in counts:
                offsets.append(offsets[-1] + c)
            extra_paths: dict[int, list[int]] = {}
            for i, pid in zip(xe, xp, strict=True):
                extra_paths.setdefault(i, []).append(pid)
            for i, pids in extra_paths.items():
                if i not in reasons:
                    found = clash([paths[p] for p in gid[offsets[i] : offsets[i + 1]].tolist() + pids])
                    if found:
                        reasons[i] = found
    kept: list[Extra] = []
    no_blobs: list[TensorBlob] = []
    max_string = limits.max_string_length
    for i, pid, wire in zip(xe, xp, xv, strict=True):
        kind = type(wire)
        if wire is None or i in reasons:  # rule 5: None changes nothing
            continue
        if kind is int or kind is float or kind is bool or (kind is str and len(wire) <= max_string):
            kept.append((i, pid, wire, no_blobs))
            continue
        blobs: list[TensorBlob] = []
        try:
            if kind is tuple and wire[0] == SUBTREE:
                raise ValidationError("a LogBlock extra cannot be a Subtree: nested dicts travel as leaf paths")
            kept.append((i, pid, materialize(wire, limits, blobs, ""), blobs))
        except ValidationError as exc:
            reasons[i] = str(exc)
    return kept


def prefix_free(paths: list[tuple[str, ...]]) -> bool:
    """Whether no path is a proper prefix of another (no rule 2 clash between them)."""
    known = set(paths)
    return all(p[:i] not in known for p in paths for i in range(1, len(p)))


def clash(event_paths: list[tuple[str, ...]]) -> str:
    """Why one event's paths cannot be folded ("" if they can): a key twice, or a key and a key under it."""
    known: set[tuple[str, ...]] = set()
    for path in event_paths:
        if path in known:
            return f"the event logs key {display_path(path)!r} twice"
        known.add(path)
    for path in event_paths:
        for i in range(1, len(path)):
            if path[:i] in known:
                return f"the event logs both {display_path(path[:i])!r} and {display_path(path)!r} under it"
    return ""
