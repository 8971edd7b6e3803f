"""``Run.log()``: the hot path of the SDK, appending a dict of values to the open LogBlock's columns.

A flat dict of str keys and float values (the usual training metrics) takes the fast path straight into the
columns; anything else is converted and checked in full first (``schemas.values.Converter``). Either way
nothing is sent if any key or value is refused, and the call never waits on the network. Steps (RULES.md §4
rule 14): ``log(d, step=s)`` uses s; ``log(d)`` uses this producer's next auto step (see producer.runs);
``commit=False`` (rule 21) logs at that step without moving on, so the next call logs at the same step.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from producer.batch import EVENT_OVERHEAD_BYTES, EXTRA_OVERHEAD_BYTES, FLOAT_BYTES, PendingBatch
from producer.sender import Sender
from producer.summaries import Summary, merge_leaf
from schemas.errors import LimitExceeded, MetricfoldError, ValidationError
from schemas.limits import Limits
from schemas.paths import PathKey
from schemas.values import INT64_MAX, Converter

__all__ = ["RunLog"]

_time_ns = time.time_ns


def _check_step(step: object) -> int:
    if isinstance(step, (int, np.integer)) and not isinstance(step, (bool, np.bool_)):
        value = int(step)
        if 0 <= value <= INT64_MAX:
            return value
    raise ValidationError(f"step must be a whole number from 0 to 2**63-1, got {step!r}", key="step", value=step)


def check_commit(commit: object) -> bool | None:
    """``log(commit=)``: None, True or False (a numpy bool too)."""
    if commit is None or isinstance(commit, (bool, np.bool_)):
        return None if commit is None else bool(commit)
    raise ValidationError(f"commit must be True, False or None, got {commit!r:.60}", key="commit", value=commit)


def warn_sync_ignored(stacklevel: int) -> None:
    """W&B's deprecated ``log(sync=)``: accepted, and has no effect here."""
    warnings.warn("log(sync=...) is W&B's and is ignored by metricfold", stacklevel=stacklevel + 1)


class RunLog:
    """The logging part of a ``producer.runs.Run`` (its other events and finishing are there)."""

    path: str
    limits: Limits
    summary: Summary
    _sender: Sender
    _seq: int
    _next_step: int
    _finished: bool
    _max_key_length: int
    _max_values: int
    _max_batch_events: int
    _target_bytes: int
    _record_limit: int

    def _closed_error(self) -> MetricfoldError:
        return MetricfoldError(f"run {self.path} is finished: call producer.init() to start another")

    def log(
        self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None, sync: bool | None = None
    ) -> None:
        """Log a dict of values at *step* (default: this producer's next auto step). Never waits on the
        network; validates everything first and sends nothing if any key or value is refused.

        ``commit=False`` logs at the step without moving on: the next call (without ``step=``) logs at the same
        step, and the first one with ``commit`` None or True moves on after it (RULES.md §4 rule 21), e.g.
        ``log({"train/loss": l}, commit=False)`` then ``log({"val/loss": v})``: both at one step. ``sync`` is W&B's
        (deprecated there): a warning says it is ignored."""
        if self._finished:
            raise self._closed_error()
        if commit is not None and commit is not True and commit is not False:
            commit = check_commit(commit)
        if sync is not None:
            warn_sync_ignored(2)
        if type(data) is dict and len(data) <= self._max_values:
            max_len = self._max_key_length
            for k, v in data.items():
                if type(v) is not float or type(k) is not str or not 0 < len(k) <= max_len:
                    break
                if not k.isascii() or not k.isprintable():  # other keys: checked in full (check_label)
                    break
            else:
                self._log_floats(data, step, commit)
                return
        self._log_general(data, step, commit)

    def _log_floats(self, data: dict[str, float], step: int | None, commit: bool | None) -> None:
        """Fast path: a flat dict of str keys and float values goes straight into the LogBlock columns."""
        if step is not None:
            step = _check_step(step)
        sender = self._sender
        with sender.lock:
            if self._finished:
                raise self._closed_error()
            seq = self._seq
            self._seq = seq + 1
            if step is None:
                step = self._next_step
            self._next_step = step if commit is False else step + 1  # rule 21: commit=False stays at the step
            pending = sender.pending
            block = pending.block
            if block is None:
                if pending.events == 0:
                    sender.started_locked()
                block = pending.open_block(seq)
            block.steps.append(step)
            block.ts_ms.append(_time_ns() // 1_000_000)
            block.counts.append(len(data))
            index = block.index
            path_idx = block.path_idx
            added = EVENT_OVERHEAD_BYTES + FLOAT_BYTES * len(data)
            for k in data:
                i = index.get(k)
                if i is None:
                    i, extra = block.path_index(k)
                    added += extra
                path_idx.append(i)
            block.values.extend(data.values())
            pending.events += 1
            pending.seq_end = seq + 1
            pending.nbytes += added
            summary = self.summary
            summary._last.update(data)
            if summary._hidden:
                summary._hidden.difference_update(data)
            if pending.nbytes >= self._target_bytes or len(block.steps) >= self._max_batch_events:
                sender.seal_locked()

    def _log_general(self, data: Mapping[str, Any], step: int | None, commit: bool | None) -> None:
        converter = Converter(self.limits)
        floats: list[tuple[PathKey, float]] = []
        extras: list[tuple[PathKey, Any]] = []
        converter.log_leaves(data, floats, extras)
        if step is not None:
            step = _check_step(step)
        nbytes = EVENT_OVERHEAD_BYTES + converter.nbytes + 6 * len(floats) + EXTRA_OVERHEAD_BYTES * len(extras)
        self._check_record_size(nbytes)
        sender = self._sender
        with sender.lock:
            pending = self._pending_with_room_locked(nbytes)
            seq = self._seq
            self._seq = seq + 1
            if step is None:
                step = self._next_step
            self._next_step = step if commit is False else step + 1  # rule 21: commit=False stays at the step
            block = pending.block
            if block is None:
                if pending.events == 0:
                    sender.started_locked()
                block = pending.open_block(seq)
            event = len(block.steps)
            block.steps.append(step)
            block.ts_ms.append(_time_ns() // 1_000_000)
            block.counts.append(len(floats))
            last, hidden = self.summary._last, self.summary._hidden
            for path, value in floats:
                block.path_idx.append(block.path_index(path)[0])
                block.values.append(value)
                merge_leaf(last, path, value)
            for path, wire in extras:
                block.extras.append({"event": event, "path": block.path_index(path)[0], "value": wire})
                if wire is not None:
                    merge_leaf(last, path, wire)
            if hidden:
                hidden.difference_update(p if isinstance(p, str) else p[0] for p, _ in floats + extras)
            pending.events += 1
            pending.seq_end = seq + 1
            pending.nbytes += nbytes
            if pending.nbytes >= self._target_bytes or len(block.steps) >= self._max_batch_events:
                sender.seal_locked()

    def _pending_with_room_locked(self, nbytes: int) -> PendingBatch:
        """With the sender's lock held (log()'s general path, the other events): the pending batch, sealed first
        when *nbytes* more would not fit one Kafka record; MetricfoldError if the run is finished."""
        if self._finished:
            raise self._closed_error()
        sender = self._sender
        pending = sender.pending
        if pending.nbytes + nbytes > self._record_limit:
            sender.seal_locked()
            pending = sender.pending
        return pending

    def _check_record_size(self, nbytes: int) -> None:
        if nbytes > self._record_limit:
            raise LimitExceeded(
                f"one event of run {self.path} would take about {nbytes} bytes, more than one Kafka record holds "
                f"({self._record_limit}); split it into several calls or raise max_tensor_bytes",
                limit="kafka_max_record_bytes",
                maximum=self._record_limit,
            )
