"""One small prepare/apply pair per event type, and the state mutations they share.

``prepare(state, datum, limits)`` checks the event and converts its values; it raises ``ValidationError``
(-> the event is rejected) and never changes the state. ``apply(state, datum, payload)`` changes the state
and cannot fail. ``applied(...)`` then records the event: dedup memory, event count, created/updated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from consumer.aggregates import Leaf, TensorRefs
from consumer.canonical import canonical_json, display_path
from consumer.definitions import Resolver, merge_definition, parse_definition
from consumer.runstate import RunState, Seen
from consumer.views import mark_all_dirty, mark_dirty
from consumer.wirevalues import TensorBlob, check_key, materialize, split_log_values
from schemas.errors import LimitExceeded, ValidationError
from schemas.limits import Limits
from schemas.values import check_config_json, check_run_name, check_tags

__all__ = ["HANDLERS", "Handler", "applied", "log_value", "new_leaf"]

Handler = tuple[Callable[[RunState, Mapping[str, Any], Limits], Any], Callable[[RunState, Mapping[str, Any], Any], None]]


def refs_of(blobs: Sequence[TensorBlob]) -> TensorRefs:
    return tuple((b.rel, b.sha) for b in blobs)


def _drop_leaf(state: RunState, leaves: dict[tuple[str, ...], Leaf], path: tuple[str, ...]) -> None:
    del leaves[path]
    for i in range(1, len(path)):
        prefix = path[:i]
        left = state.interior[prefix] - 1
        if left:
            state.interior[prefix] = left
        else:
            del state.interior[prefix]


def new_leaf(state: RunState, path: tuple[str, ...], first: Any, refs: TensorRefs) -> Leaf:
    """Create the leaf at *path* (rule 2: a scalar replaces a subtree, a subtree replaces a scalar, and the
    replaced leaves' aggregates are dropped). The caller has marked ``path[0]`` dirty."""
    leaves = state.tops.setdefault(path[0], {})
    for i in range(1, len(path)):
        if path[:i] in leaves:
            _drop_leaf(state, leaves, path[:i])
    if path in state.interior:
        depth = len(path)
        for other in [p for p in leaves if len(p) > depth and p[:depth] == path]:
            _drop_leaf(state, leaves, other)
    leaf = leaves[path] = Leaf(path, display_path(path), first, refs)
    for i in range(1, len(path)):
        state.interior[path[:i]] = state.interior.get(path[:i], 0) + 1
    return leaf


def log_value(state: RunState, path: tuple[str, ...], value: Any, blobs: Sequence[TensorBlob], step: int) -> None:
    """Fold one logged (non-None) plain value at *path* and *step*."""
    top = path[0]
    mark_dirty(state, top)
    state.hidden.discard(top)  # rule 16: logged again -> shown again
    refs = refs_of(blobs) if blobs else ()
    for blob in blobs:
        state.pending_blobs[blob.sha] = blob.npy
    leaves = state.tops.get(top)
    leaf = None if leaves is None else leaves.get(path)
    if leaf is None:
        leaf = new_leaf(state, path, value, refs)
    leaf.add(value, refs, step)


def applied(state: RunState, producer_id: str, first_seq: int, end_seq: int, count: int, ts_lo: int, ts_hi: int) -> None:
    """Record *count* applied events with seqs in [first_seq, end_seq) and timestamps in [ts_lo, ts_hi]."""
    seen = state.producers.get(producer_id)
    if seen is None:
        seen = state.producers[producer_id] = Seen()
    seen.add(first_seq, end_seq)
    state.events += count
    if state.created is None or ts_lo < state.created:
        state.created = ts_lo
    if state.updated is None or ts_hi > state.updated:
        state.updated = ts_hi
    if state.status is None:
        state.status = "running"
    state.meta_dirty = True


# --- Log -------------------------------------------------------------------------------------------------


def _prepare_log(state: RunState, datum: Mapping[str, Any], limits: Limits) -> Any:
    step = datum["step"]
    if type(step) is not int:
        raise ValidationError(f"a log's step must be an int, got {step!r}")
    out = []
    for path, wire in split_log_values(datum["values"], limits):
        if wire is None:  # rule 5: None in a log changes nothing
            continue
        blobs: list[TensorBlob] = []
        out.append((path, materialize(wire, limits, blobs, ""), blobs))
    return step, out


def _apply_log(state: RunState, datum: Mapping[str, Any], payload: Any) -> None:
    step, values = payload
    for path, value, blobs in values:
        log_value(state, path, value, blobs, step)


# --- SummaryUpdate ---------------------------------------------------------------------------------------


def _prepare_summary_update(state: RunState, datum: Mapping[str, Any], limits: Limits) -> Any:
    sets, removes = datum.get("set") or {}, list(datum.get("remove") or ())
    if len(sets) + len(removes) > limits.max_values_per_event:
        raise LimitExceeded(
            f"the summary update has {len(sets) + len(removes)} keys, "
            f"more than max_values_per_event={limits.max_values_per_event}",
            limit="max_values_per_event",
            maximum=limits.max_values_per_event,
        )
    ops: list[tuple[str, Any, list[TensorBlob]] | tuple[str, None, None]] = []
    for key, wire in sets.items():
        check_key(key, limits, what="summary key")
        if wire is None:  # rule 5: None in a summary update removes the key
            ops.append((key, None, None))
        else:
            blobs: list[TensorBlob] = []
            ops.append((key, materialize(wire, limits, blobs, ""), blobs))
    for key in removes:
        ops.append((check_key(key, limits, what="summary key"), None, None))
    return ops


def _apply_summary_update(state: RunState, datum: Mapping[str, Any], payload: Any) -> None:
    for key, value, blobs in payload:
        mark_dirty(state, key)
        if blobs is None:  # rule 16: remove the override and hide the key until logged again
            state.overrides.pop(key, None)
            state.hidden.add(key)
        else:  # rules 15, 17: exactly this value, winning over automatic values
            state.overrides[key] = (value, refs_of(blobs))
            state.hidden.discard(key)
            for blob in blobs:
                state.pending_blobs[blob.sha] = blob.npy


# --- DefineMetric ----------------------------------------------------------------------------------------


def _prepare_define(state: RunState, datum: Mapping[str, Any], limits: Limits) -> Any:
    definition, overwrite = parse_definition(datum, limits)
    old = next((d for d in state.definitions if d.name == definition.name), None)
    return merge_definition(old, definition, overwrite=overwrite)


def _apply_define(state: RunState, datum: Mapping[str, Any], payload: Any) -> None:
    mark_all_dirty(state)  # rule 8: takes effect at once, also for keys already seen
    state.definitions = [d for d in state.definitions if d.name != payload.name]
    state.definitions.append(payload)
    state.resolver = Resolver(state.definitions)
    state.definitions_json = None


# --- RunStarted / RunFinished ----------------------------------------------------------------------------


def _prepare_started(state: RunState, datum: Mapping[str, Any], limits: Limits) -> Any:
    # the SDK's own checks (schemas.values), except that unprintable names and tags still fold (see check_tags)
    name = check_run_name(datum.get("name"), limits, printable=False)
    config = check_config_json(datum.get("config_json", "{}"))
    tags = check_tags(datum.get("tags") or (), limits, printable=False)
    return name, canonical_json(config), tags


def _apply_started(state: RunState, datum: Mapping[str, Any], payload: Any) -> None:
    name, config, tags = payload
    if name is not None:
        state.name = name
    if config != "{}" or state.config is None:  # the last non-empty config wins ("{}" is the wire default)
        state.config = config
    state.tags = state.tags + [t for t in dict.fromkeys(tags) if t not in state.tags]  # union, first-seen order
    state.status = "running"  # a fresh run, or a resumed one
    state.exit_code = None


def _prepare_finished(state: RunState, datum: Mapping[str, Any], limits: Limits) -> Any:
    exit_code = datum.get("exit_code", 0)
    if type(exit_code) is not int:
        raise ValidationError(f"exit_code must be an int, got {exit_code!r}")
    return exit_code


def _apply_finished(state: RunState, datum: Mapping[str, Any], payload: Any) -> None:
    state.exit_code = payload
    state.status = "finished" if payload == 0 else "crashed"


HANDLERS: dict[str, Handler] = {
    "metricfold.Log": (_prepare_log, _apply_log),
    "metricfold.SummaryUpdate": (_prepare_summary_update, _apply_summary_update),
    "metricfold.DefineMetric": (_prepare_define, _apply_define),
    "metricfold.RunStarted": (_prepare_started, _apply_started),
    "metricfold.RunFinished": (_prepare_finished, _apply_finished),
}
