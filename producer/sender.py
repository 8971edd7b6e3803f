"""Sending a Run's events: cut batches, encode them, hand them to Kafka or to the spool.

Run methods append to ``pending`` under the Sender's ``lock``. A batch is sealed (moved to the ready
queue) by the caller when it reaches ``max_batch_events`` events or ``target_batch_bytes`` (estimated),
and by the process's dispatcher (producer.dispatcher: one thread per process serves every open run) at the
first tick of the process's clock after its first event. The ready queue is bounded (``max_queued_events`` /
``max_queued_bytes``): when it is full the caller waits for room (back-pressure), nothing is dropped.

Each sealed batch becomes one record, delivered to Kafka or to the run's spool file (producer.delivery). A
run with more than ``max_inflight_bytes`` unacknowledged waits for acks before its next record, without
holding up the dispatcher: its batches stay queued and it is looked at again a few milliseconds later, while
the other runs are served. ``close()`` (the run's finish) waits until the dispatcher has handed over the run's last
batch, then waits for the acks (or spools) in the caller's thread, so one run finishing does not hold up
the others.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from producer.batch import PendingBatch
from producer.delivery import RecordDelivery, SendReport
from producer.dispatcher import Dispatcher, process_dispatcher
from producer.spool_file import SpoolWriter
from producer.transport import KafkaTransport
from schemas.codec import default_codec
from schemas.errors import CodecError, ValidationError
from schemas.limits import Limits
from schemas.settings import Settings

__all__ = ["Sender", "SenderOptions", "tick_s"]

log = logging.getLogger("metricfold.producer")


@dataclass(frozen=True, kw_only=True)
class SenderOptions:
    """Batching and queue bounds of the sender (defaults tuned with bench/producer.py)."""

    linger_s: float = 0.2  #: seal batches on ticks this far apart (a live run sends <= 5 records/s) ...
    #: ... or further apart when more than linger_s x this many runs of the process log: their ticks are then
    #: (runs logging) / this apart, so the process sends about this many records a second (see tick_s) ...
    max_records_per_s: float = 200.0
    max_linger_s: float = 1.0  #: ... but never further apart than this
    max_batch_events: int = 8192  #: seal a batch with this many events
    target_batch_bytes: int = 1024 * 1024  #: seal a batch at this estimated size
    max_queued_events: int = 200_000  #: back-pressure above this many sealed, unsent events
    max_queued_bytes: int = 64 * 1024 * 1024  #: ... or this many estimated bytes
    max_inflight_bytes: int = 64 * 1024 * 1024  #: wait for acks above this many unacknowledged bytes
    connect_timeout_s: float = 5.0  #: give up on Kafka (and spool) after this long at start
    flush_timeout_s: float = 60.0  #: finish() waits this long for acks, then spools what is left

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            least = 0 if field.name == "linger_s" else 1e-9  # linger_s=0: seal at once, no ticks
            if type(value) not in (int, float) or not math.isfinite(value) or value < least:
                relation = "at least 0" if least == 0 else "above 0"
                raise ValidationError(f"SenderOptions.{field.name} must be a number {relation}, got {value!r}",
                                      key=field.name, value=value)


def tick_s(options: SenderOptions, logging_runs: int) -> float:
    """Seconds between a process's ticks while *logging_runs* of its runs log (each sends a record per tick)."""
    return max(options.linger_s, min(logging_runs / options.max_records_per_s, options.max_linger_s))


_INFLIGHT_RETRY_S = 0.005  #: a run over max_inflight_bytes looks again this soon (the others are served meanwhile)


class Sender:
    """Batches one Run's events and has the process's dispatcher deliver them, in order."""

    def __init__(
        self,
        *,
        run_path: str,
        producer_id: str,
        settings: Settings,
        limits: Limits,
        mode: str,
        spool_dir: Path,
        options: SenderOptions,
    ) -> None:
        self.key = run_path.encode()
        self.entity, self.project, self.run_id = run_path.split("/")
        self.producer_id = producer_id
        self.options = options
        self.record_limit = limits.kafka_max_record_bytes - 64 * 1024
        self.lock = threading.Lock()
        self._has_space = threading.Condition(self.lock)  # also: the dispatcher handed over the last batch
        self.pending = PendingBatch()
        self._ready: collections.deque[PendingBatch] = collections.deque()
        self._queued_events = 0
        self._queued_bytes = 0
        self._closing = False
        self._handed_over = False  # closing, and every batch delivered (or the sender failed): close() goes on
        self._failed = False
        self.report = SendReport(reason=None if mode == "online" else f"{mode} mode")
        self._discard = mode == "disabled"  # W&B's mode="disabled": batches are made (every check runs), never sent
        self._delivery = RecordDelivery(
            self.key,
            KafkaTransport(settings, limits, connect_timeout_s=options.connect_timeout_s) if mode == "online" else None,
            SpoolWriter(spool_dir, run_path, producer_id),
            self.report,
            max_inflight_bytes=options.max_inflight_bytes,
            flush_timeout_s=options.flush_timeout_s,
        )
        self._dispatcher = process_dispatcher()

    # -- called by the Run, with self.lock held -------------------------------------------------------

    def started_locked(self) -> None:
        """The pending batch got its first event: it is due at the next tick; tell the dispatcher."""
        now = time.monotonic()
        if self.options.linger_s > 0:
            tick = tick_s(self.options, self._dispatcher.logging_runs(self, now))
            phase = self._dispatcher.phase * tick
            due = now - (now - phase) % tick + tick
        else:
            due = now
        self.pending.due = due
        self._dispatcher.schedule(self, due)

    def seal_locked(self) -> None:
        """Move the pending batch to the ready queue; wait for room if the queue is full."""
        batch = self.pending
        if batch.events == 0 and batch.block is None:
            return
        self.pending = PendingBatch()
        self._ready.append(batch)
        self._queued_events += batch.events
        self._queued_bytes += batch.nbytes
        self._dispatcher.ready(self)
        opts = self.options
        while (self._queued_events > opts.max_queued_events or self._queued_bytes > opts.max_queued_bytes) and (
            not self._failed and self._dispatcher.thread.is_alive()
        ):
            self._has_space.wait(0.5)

    # -- the caller's side -----------------------------------------------------------------------------

    def close(self) -> SendReport:
        """Send everything, wait for acks (or spool), fsync the spool; return what happened."""
        with self.lock:
            self.seal_locked()
            self._closing = True
            self._dispatcher.ready(self)
            while not self._handed_over and self._dispatcher.thread.is_alive():
                self._has_space.wait(0.5)
        self._dispatcher.forget(self)
        try:
            if not self._failed:
                self._delivery.drain()
        except BaseException:  # pragma: no cover - a bug; never leave the run hanging silently
            log.exception("metricfold: the sender of run %s failed", self.key.decode())
            self.report.errors += 1
        finally:
            self._delivery.close()
        return self.report

    # -- the dispatcher's side -------------------------------------------------------------------------

    def serve(self, dispatcher: Dispatcher) -> None:
        """Seal the pending batch if it is due and deliver the sealed batches, in order. One pass: if more
        were sealed meanwhile, the sender goes to the back of the dispatcher's queue (fair to other runs)."""
        try:
            with self.lock:
                if self._handed_over:
                    return
                pending = self.pending
                if pending.events or pending.block is not None:
                    if pending.due <= time.monotonic() or self._closing:
                        self._ready.append(pending)
                        self._queued_events += pending.events
                        self._queued_bytes += pending.nbytes
                        self.pending = PendingBatch()
                    else:
                        dispatcher.schedule(self, pending.due)
                if not self._ready:
                    if self._closing:
                        self._handed_over = True
                        self._has_space.notify_all()
                    return
                batches = list(self._ready)
                self._ready.clear()
            for i, batch in enumerate(batches):
                if self._delivery.inflight_full():  # come back for the rest in a moment; serve the other runs meanwhile
                    with self.lock:
                        self._ready.extendleft(reversed(batches[i:]))
                    dispatcher.schedule(self, time.monotonic() + _INFLIGHT_RETRY_S)
                    return
                self._deliver_batch(batch)
                with self.lock:
                    self._queued_events -= batch.events
                    self._queued_bytes -= batch.nbytes
                    self._has_space.notify_all()
            dispatcher.ready(self)  # look again: more may have been sealed meanwhile, or it is closing
        except BaseException:  # pragma: no cover - a bug; never leave the run hanging silently
            log.exception("metricfold: the sender of run %s failed", self.key.decode())
            with self.lock:
                self.report.errors += 1
                self._failed = self._handed_over = True
                self._has_space.notify_all()

    def _deliver_batch(self, batch: PendingBatch) -> None:
        if self._discard:
            return
        datum = {
            "entity": self.entity,
            "project": self.project,
            "run_id": self.run_id,
            "producer_id": self.producer_id,
            "items": batch.batch_items(),
        }
        try:
            value = default_codec().encode_batch(datum)
        except CodecError:
            log.exception("metricfold: could not encode a batch of run %s (a bug); it was not sent", self.key)
            self.report.errors += 1
            return
        self._delivery.deliver(value)
