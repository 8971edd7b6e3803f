"""One prepare/apply pair per event type (RULES.md §4): ``HANDLERS`` maps an event type to its pair.

``prepare(state, datum, limits)`` checks the event and converts its values; it raises ``ValidationError``
(-> the event is rejected) and never changes the state. ``apply(state, datum, payload)`` changes the state
(telling its change tracker first) and cannot fail. The caller then records the event as applied.
LogBlocks, many Log events in columns, take their own path (consumer.fold.log_block).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from consumer.fold.canonical import canonical_json
from consumer.fold.definitions import Resolver, merge_definition, parse_definition
from consumer.fold.mutations import keep_blobs, log_value, log_value_at_best, refs_of
from consumer.fold.state import RunState
from consumer.fold.values import TensorBlob, materialize, split_log_values
from consumer.fold.views import summary_keys
from schemas.errors import LimitExceeded, ValidationError
from schemas.events import DEFINE_METRIC, LOG, RUN_FINISHED, RUN_STARTED, SUMMARY_UPDATE
from schemas.limits import Limits
from schemas.paths import check_key
from schemas.run_fields import check_config_json, check_run_label, check_run_name, check_run_notes, check_tags

__all__ = ["HANDLERS", "Handler"]

Handler = tuple[Callable[[RunState, Mapping[str, Any], Limits], Any], Callable[[RunState, Mapping[str, Any], Any], None]]


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
    if state.at_best.active:  # rule 20
        producer_id = datum["producer_id"]
        for path, value, blobs in values:
            log_value_at_best(state, producer_id, path, value, blobs, step)
        return
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
        check_key(key, limits, what="summary key", printable=False)
        if wire is None:  # rule 5: None in a summary update removes the key
            ops.append((key, None, None))
        else:
            blobs: list[TensorBlob] = []
            ops.append((key, materialize(wire, limits, blobs, ""), blobs))
    for key in removes:
        ops.append((check_key(key, limits, what="summary key", printable=False), None, None))
    return ops


def _apply_summary_update(state: RunState, datum: Mapping[str, Any], payload: Any) -> None:
    tracker = state.tracker
    for key, value, blobs in payload:
        tracker.mark_dirty(key)
        if blobs is None:  # rule 16: remove the override and hide the key until logged again
            state.overrides.pop(key, None)
            state.hidden.add(key)
        else:  # rules 15, 17: exactly this value, winning over automatic values
            state.overrides[key] = (value, refs_of(blobs))
            state.hidden.discard(key)
            keep_blobs(state, blobs)


# --- DefineMetric ----------------------------------------------------------------------------------------


def _prepare_define(state: RunState, datum: Mapping[str, Any], limits: Limits) -> Any:
    definition, overwrite = parse_definition(datum, limits)
    old = next((d for d in state.definitions if d.name == definition.name), None)
    return merge_definition(old, definition, overwrite=overwrite)


def _apply_define(state: RunState, datum: Mapping[str, Any], payload: Any) -> None:
    state.tracker.mark_all_dirty(summary_keys(state))  # rule 8: takes effect at once, also for keys already seen
    state.definitions = [d for d in state.definitions if d.name != payload.name]
    state.definitions.append(payload)
    state.resolver = Resolver(state.definitions)
    state.at_best.configure(state.definitions)
    state.definitions_json = None


# --- RunStarted / RunFinished ----------------------------------------------------------------------------


def _prepare_started(state: RunState, datum: Mapping[str, Any], limits: Limits) -> Any:
    # the SDK's own checks (schemas.run_fields), except that unprintable names and tags still fold (see check_tags)
    name = check_run_name(datum.get("name"), limits, printable=False)
    config = check_config_json(datum.get("config_json", "{}"))
    tags = check_tags(datum.get("tags") or (), limits, printable=False)
    notes = check_run_notes(datum.get("notes"), limits, printable=False)  # absent in RunStarted version 1
    group = check_run_label(datum.get("group"), "group", limits, printable=False)
    job_type = check_run_label(datum.get("job_type"), "job_type", limits, printable=False)
    return name, canonical_json(config), tags, notes, group, job_type


def _apply_started(state: RunState, datum: Mapping[str, Any], payload: Any) -> None:
    name, config, tags, notes, group, job_type = payload
    if name is not None:
        state.name = name
    if notes is not None:  # notes, group, job_type: the last one given wins, as the name
        state.notes = notes
    if group is not None:
        state.group = group
    if job_type is not None:
        state.job_type = job_type
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
    LOG: (_prepare_log, _apply_log),
    SUMMARY_UPDATE: (_prepare_summary_update, _apply_summary_update),
    DEFINE_METRIC: (_prepare_define, _apply_define),
    RUN_STARTED: (_prepare_started, _apply_started),
    RUN_FINISHED: (_prepare_finished, _apply_finished),
}
