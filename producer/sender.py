"""Sending a Run's events: cut batches, encode them, hand them to Kafka or to the spool.

Run methods append to ``pending`` under the Sender's ``lock``. A batch is sealed (moved to the ready
queue) by the caller when it reaches ``max_batch_events`` events or ``target_batch_bytes`` (estimated),
and by the process's dispatcher at the first tick of the process's clock after its first event (so at
most one tick after it). Ticks are ``linger_s`` apart, stretched when many runs of the process log: a
process sends about ``max_records_per_s`` records a second at most (each logging run sends one record per
tick, and the consumer's cost is mostly per record), so with 50 runs logging the ticks are 0.25 s apart
(``max_linger_s`` apart at most: 1 s).
The ready queue is bounded (``max_queued_events`` / ``max_queued_bytes``): when it is full the caller waits
for room (back-pressure), nothing is dropped.

One dispatcher thread per process seals and delivers the batches of every open run, in each run's order.
The ticks are shared (with a random phase per process), so all runs of a process seal together and their
records reach the (shared) KafkaProducer within a few milliseconds, which sends them in one request.
Measured with bench/load.py's trainers (50 runs, 2,500 events/s): a sender thread per run cost ~0.5 of a
core, nearly all of it 50 threads fighting for the GIL at every tick (futex storms) plus kafka-python's
per-request cost; one thread per process costs a fraction of that.

Delivery: online, each sealed batch becomes one Kafka record (key = run path); records stay "in flight"
until acknowledged. If Kafka cannot be reached at start, or a record fails (after kafka-python's retries
and ``delivery_timeout_ms``), every record not yet acknowledged and everything after it goes, in order,
to the run's spool file, and the run stays offline until it finishes: ``metricfold sync`` publishes the
spool later. Records that were in flight when the switch happened may reach Kafka twice; the consumer
deduplicates events by (producer id, seq), so the effect is exactly once. A run with more than
``max_inflight_bytes`` unacknowledged waits for acks before its next record, without holding up the
dispatcher: its batches stay queued and it is looked at again a few milliseconds later, while the other
runs are served. ``close()`` (the run's finish) waits until the dispatcher has handed over the run's last
batch, then waits for the acks (or spools) in the caller's thread, so one run finishing does not hold up
the others.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import random
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from producer.batch import PendingBatch
from producer.spool import SpoolWriter
from producer.transport import Delivery, KafkaTransport
from schemas.codec import default_codec
from schemas.errors import BrokerUnavailable, CodecError, ValidationError
from schemas.limits import Limits
from schemas.settings import Settings

__all__ = ["SendReport", "Sender", "SenderOptions", "SpoolWarning", "tick_s"]

log = logging.getLogger("metricfold.producer")


class SpoolWarning(UserWarning):
    """Warned when a run's events were written to a spool file instead of Kafka (the message says where)."""


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


#: a run counts as logging for tick_s between LOGGING_WINDOW_S and twice that after its last batch began
LOGGING_WINDOW_S = 1.0


@dataclass
class SendReport:
    """What happened to a run's records by the time it finished."""

    records_sent: int = 0  #: acknowledged by Kafka
    records_spooled: int = 0
    spool_path: Path | None = None
    reason: str | None = None  #: why the run went to the spool (None if it did not)
    errors: int = 0  #: batches that could not be encoded (a bug; logged)


class _Dispatcher:
    """The one thread of a process that seals and delivers the batches of every open run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._due: dict[Sender, float] = {}  # senders with a pending batch -> when it is due
        self._ready: dict[Sender, None] = {}  # senders with sealed batches (or closing): serve now
        self._next_wake = math.inf  # when the thread wakes by itself; earlier work must notify it
        self._logging: dict[Sender, float] = {}  # senders whose batch began lately -> when (see logging_runs)
        self._logging_since = time.monotonic()
        #: where this process's ticks fall within linger_s (a fraction): processes on one host do not all
        #: send at the same instant, so the consumer gets an even stream instead of bursts
        self.phase = random.random()
        self.thread = threading.Thread(target=self._loop, name="metricfold-sender", daemon=True)
        self.thread.start()

    def schedule(self, sender: Sender, due: float) -> None:
        """*sender*'s pending batch is due at *due* (the caller may hold ``sender.lock``)."""
        with self._lock:
            known = self._due.get(sender)
            if known is None or due < known:
                self._due[sender] = due
            if due < self._next_wake:
                self._next_wake = due
                self._wake.notify()

    def logging_runs(self, sender: Sender, now: float) -> int:
        """Note that *sender*'s pending batch began at *now*; return how many runs of this process began one
        within the last LOGGING_WINDOW_S (up to twice that: the list is pruned once per window)."""
        with self._lock:
            if now - self._logging_since > LOGGING_WINDOW_S:
                self._logging = {s: t for s, t in self._logging.items() if now - t <= LOGGING_WINDOW_S}
                self._logging_since = now
            self._logging[sender] = now
            return len(self._logging)

    def forget(self, sender: Sender) -> None:
        """*sender*'s run finished: it no longer counts as logging."""
        with self._lock:
            self._logging.pop(sender, None)

    def ready(self, sender: Sender) -> None:
        """*sender* has sealed batches to deliver, or is closing (the caller may hold ``sender.lock``)."""
        with self._lock:
            self._ready[sender] = None
            self._next_wake = -math.inf
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    work = list(self._ready)
                    self._ready.clear()
                    for sender, due in list(self._due.items()):
                        if due <= now:
                            del self._due[sender]
                            work.append(sender)
                    if work:
                        self._next_wake = -math.inf  # busy: callers need not wake the thread
                        break
                    self._next_wake = min(self._due.values(), default=math.inf)
                    self._wake.wait(None if self._next_wake == math.inf else self._next_wake - now)
            for sender in dict.fromkeys(work):
                sender._serve(self)


_INFLIGHT_RETRY_S = 0.005  #: a run over max_inflight_bytes looks again this soon (the others are served meanwhile)
_DISPATCHERS: dict[int, _Dispatcher] = {}  # pid -> the process's dispatcher (a forked child starts its own)
_DISPATCHERS_LOCK = threading.Lock()


def _dispatcher() -> _Dispatcher:
    with _DISPATCHERS_LOCK:
        dispatcher = _DISPATCHERS.get(os.getpid())
        if dispatcher is None or not dispatcher.thread.is_alive():
            dispatcher = _DISPATCHERS[os.getpid()] = _Dispatcher()
        return dispatcher


class Sender:
    def __init__(
        self,
        *,
        run_path: str,
        producer_id: str,
        settings: Settings,
        limits: Limits,
        offline: bool,
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
        self._transport: KafkaTransport | None = None if offline else KafkaTransport(
            settings, limits, connect_timeout_s=options.connect_timeout_s
        )
        self._spool = SpoolWriter(spool_dir, run_path, producer_id)
        self._inflight: collections.deque[tuple[Delivery, bytes]] = collections.deque()
        self._inflight_bytes = 0
        self.report = SendReport(reason="offline mode" if offline else None)
        self._dispatcher = _dispatcher()

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
                self._drain()
        except BaseException:  # pragma: no cover - a bug; never leave the run hanging silently
            log.exception("metricfold: the sender of run %s failed", self.key.decode())
            self.report.errors += 1
        finally:
            self._spool.close()
        return self.report

    # -- the dispatcher's side -------------------------------------------------------------------------

    def _serve(self, dispatcher: _Dispatcher) -> None:
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
                if self._inflight_full():  # come back for the rest in a moment; serve the other runs meanwhile
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
        self._deliver(value)

    def _deliver(self, value: bytes) -> None:
        transport = self._transport
        if transport is None:
            self._spool_record(value)
            return
        try:
            transport.connect()
        except BrokerUnavailable as exc:
            self._go_offline(str(exc))
            self._spool_record(value)
            return
        delivery = transport.send(self.key, value)
        self._inflight.append((delivery, value))
        self._inflight_bytes += len(value)
        self._settle()

    def _inflight_full(self) -> bool:
        """Whether more than ``max_inflight_bytes`` are unacknowledged (online): the next batch waits."""
        self._settle()
        return self._transport is not None and self._inflight_bytes > self.options.max_inflight_bytes

    def _settle(self) -> None:
        """Drop acknowledged records from the in-flight queue; on a failure, go offline."""
        inflight = self._inflight
        while inflight and inflight[0][0].done:
            delivery, value = inflight[0]
            if not delivery.ok:
                self._go_offline(f"Kafka did not accept a record: {delivery.error}")
                return
            inflight.popleft()
            self._inflight_bytes -= len(value)
            self.report.records_sent += 1

    def _go_offline(self, reason: str) -> None:
        """Spool every unacknowledged record, in order, and everything after it."""
        transport, self._transport = self._transport, None
        self.report.reason = reason
        log.warning(
            "metricfold: %s; events of run %s now go to the spool file %s; publish them later with "
            "`metricfold sync %s`",
            reason,
            self.key.decode(),
            self._spool.path,
            self._spool.path.parent,
        )
        if transport is not None:
            transport.close(0.0)
        while self._inflight:
            self._spool_record(self._inflight.popleft()[1])
        self._inflight_bytes = 0

    def _spool_record(self, value: bytes) -> None:
        self._spool.append(self.key.decode(), value)
        self.report.records_spooled += 1
        self.report.spool_path = self._spool.path

    def _drain(self) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.flush(self.options.flush_timeout_s)
        self._settle()
        if self._inflight:
            self._go_offline("Kafka did not acknowledge every record before finish")
        elif self._transport is not None:
            self._transport.close(5.0)
            self._transport = None
