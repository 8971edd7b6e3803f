"""Where a decoded record enters the fold: ``fold_record`` checks its run and producer, splits a Batch into
its items, and sends each event to its handler (consumer.fold.handlers) or a LogBlock to its fast path
(consumer.fold.log_block); then records the event as applied. Duplicates (same producer id and seq) are
skipped silently (RULES.md §4 rule 18); refused events are returned, having changed nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumer.fold.handlers import HANDLERS, Handler
from consumer.fold.log_block import fold_log_block
from consumer.fold.mutations import applied
from consumer.fold.state import Rejected, RunState
from schemas.errors import ValidationError
from schemas.events import BATCH, LOG_BLOCK
from schemas.limits import Limits

__all__ = ["events_applied", "fold_record"]

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
            f"a LogBlock must travel inside a {BATCH}" if name == LOG_BLOCK else f"{name!r} is not a metricfold event type"
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
        if name == LOG_BLOCK:
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
