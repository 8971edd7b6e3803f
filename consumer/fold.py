"""The fold: decoded events in, a run's state out. Pure code: no Kafka, no Redis, no clock, no randomness.

    state = new_run_state("team", "vision", "3f2a9c")
    rejected = fold_record(state, ("metricfold.Batch", {...}))   # mutates state in place
    changes = take_changes(state)                                 # what to write to Redis
    data = state_to_bytes(state)                                  # stored with the offsets, atomically

``fold_record`` applies one decoded Kafka record value (a standalone event or a ``metricfold.Batch``) in
order and returns the events it refused; a refused event changes nothing (not even the dedup memory, so a
fixed resend is applied) and the events around it are still applied. Reasons for refusing: the record or a
batch item belongs to another run or producer than its header; a negative seq; a limit
(``schemas.limits.Limits``: key length and depth, values per event, string length, tensor bytes); an
invalid ``.npy``; bad ``define_metric`` options, or ``best`` without an objective; a malformed LogBlock or
event. An event already applied (same producer id and seq) is skipped silently (SPEC §4 rule 18).

Every SPEC §4 rule is implemented across this package: keys and merge (consumer.events, rules 1-2),
values (consumer.wirevalues, rules 3-5), aggregates (consumer.aggregates, rules 6, 8, 10, 11),
definitions (consumer.definitions, rules 9, 12, 13), views and overrides (consumer.views, rules 7, 15-17),
dedup and canonical state (consumer.runstate, rules 18-19), LogBlocks (consumer.logblock, its checks in
consumer.blockcheck, numpy column stats and exact sums in consumer.columnstats).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumer.canonical import canonical_json, display_path
from consumer.events import HANDLERS, Handler, applied
from consumer.logblock import LOGBLOCK, fold_log_block
from consumer.runstate import Changes, Rejected, RunState, new_run_state, state_from_bytes, state_to_bytes
from consumer.views import flat_view, summary, take_changes, tensors_view
from schemas.errors import ValidationError
from schemas.limits import Limits

__all__ = [
    "Changes",
    "Rejected",
    "RunState",
    "canonical_json",
    "display_path",
    "events_applied",
    "flat_view",
    "fold_record",
    "new_run_state",
    "state_from_bytes",
    "state_to_bytes",
    "summary",
    "take_changes",
    "tensors_view",
]

BATCH = "metricfold.Batch"
DEFAULT_LIMITS = Limits()


def fold_record(state: RunState, record: tuple[str, Mapping[str, Any]], *, limits: Limits = DEFAULT_LIMITS) -> list[Rejected]:
    """Apply one decoded record (``(full name, datum)``) to *state* in place; return the refused events."""
    rejected: list[Rejected] = []
    name, datum = record
    if name == BATCH:
        _fold_batch(state, datum, limits, rejected)
        return rejected
    handler = HANDLERS.get(name)
    if handler is None:
        reason = (
            "a LogBlock must travel inside a metricfold.Batch" if name == LOGBLOCK else f"{name!r} is not a metricfold event type"
        )
        rejected.append(Rejected(0, _get(datum, "producer_id"), _get(datum, "seq"), reason, name))
        return rejected
    run = (datum.get("entity"), datum.get("project"), datum.get("run_id"))
    if run != (state.entity, state.project, state.run_id):
        reason = f"the event is for run {'/'.join(map(str, run))!r}, not {state.run_path!r}"
        rejected.append(Rejected(0, _get(datum, "producer_id"), _get(datum, "seq"), reason, name))
        return rejected
    _fold_event(state, name, handler, datum, 0, limits, rejected)
    return rejected


def events_applied(state: RunState) -> int:
    """How many events the state has applied (duplicates and refused events are not counted)."""
    return state.events


def _get(datum: Any, field: str) -> Any:
    return datum.get(field) if isinstance(datum, Mapping) else None


def _fold_batch(state: RunState, batch: Mapping[str, Any], limits: Limits, rejected: list[Rejected]) -> None:
    try:
        run = (batch["entity"], batch["project"], batch["run_id"])
        producer_id = batch["producer_id"]
        items = [(str(name), item) for name, item in batch["items"]]
    except (KeyError, TypeError, ValueError) as exc:
        rejected.append(Rejected(0, _text(_get(batch, "producer_id")), None, f"malformed {BATCH}: {exc!r}", BATCH))
        return
    wrong_run = run != (state.entity, state.project, state.run_id)
    for index, (name, item) in enumerate(items):
        if name == LOGBLOCK:
            if wrong_run:
                n = len(item.get("steps") or ()) or 1
                reason = f"the batch is for run {'/'.join(run)!r}, not {state.run_path!r}"
                first = item.get("first_seq", 0)
                rejected.extend(Rejected(index, producer_id, first + i, reason, name) for i in range(n))
            else:
                fold_log_block(state, producer_id, item, index, limits, rejected)
            continue
        handler = HANDLERS.get(name)
        reason = ""
        if handler is None:
            reason = f"{name!r} is not a metricfold event type"
        elif wrong_run:
            reason = f"the batch is for run {'/'.join(run)!r}, not {state.run_path!r}"
        elif (item.get("entity"), item.get("project"), item.get("run_id"), item.get("producer_id")) != (
            *run,
            producer_id,
        ):
            reason = "the item's run path or producer id differs from its batch header"
        if reason or handler is None:
            rejected.append(Rejected(index, _get(item, "producer_id"), _get(item, "seq"), reason, name))
            continue
        _fold_event(state, name, handler, item, index, limits, rejected)


def _fold_event(
    state: RunState,
    name: str,
    handler: Handler,
    datum: Mapping[str, Any],
    index: int,
    limits: Limits,
    rejected: list[Rejected],
) -> None:
    producer_id, seq, ts = datum.get("producer_id"), datum.get("seq"), datum.get("ts_ms")
    if type(producer_id) is not str or type(seq) is not int or type(ts) is not int:
        reason = f"malformed {name} event: producer_id, seq and ts_ms are required"
        rejected.append(Rejected(index, _text(producer_id), seq if type(seq) is int else None, reason, name))
        return
    if seq < 0:
        reason = f"seq {seq!r} is negative: seqs count from 0 per producer"
        rejected.append(Rejected(index, producer_id, seq, reason, name))
        return
    seen = state.producers.get(producer_id)
    if seen is not None and seen.seen(seq):
        return  # rule 18: already applied
    prepare, apply = handler
    try:
        payload = prepare(state, datum, limits)
    except ValidationError as exc:
        rejected.append(Rejected(index, producer_id, seq, str(exc), name))
        return
    except (KeyError, TypeError, AttributeError, IndexError) as exc:  # a datum that is not the schema's shape
        rejected.append(Rejected(index, producer_id, seq, f"malformed {name} event: {exc!r}", name))
        return
    apply(state, datum, payload)
    applied(state, producer_id, seq, seq + 1, 1, ts, ts)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
