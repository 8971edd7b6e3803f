"""The background sender of one Run: cuts batches, encodes them, hands them to Kafka or to the spool.

Run methods append to ``pending`` under ``lock``. A batch is sealed (moved to the ready queue) by the
caller when it reaches ``max_batch_events`` events or ``target_batch_bytes`` (estimated), and by this
thread when it is ``linger_s`` old. The ready queue is bounded (``max_queued_events`` /
``max_queued_bytes``): when it is full the caller waits for room (back-pressure), nothing is dropped.

Delivery: online, each sealed batch becomes one Kafka record (key = run path); records stay "in flight"
until acknowledged. If Kafka cannot be reached at start, or a record fails (after kafka-python's retries
and ``delivery_timeout_ms``), every record not yet acknowledged and everything after it goes, in order,
to the run's spool file, and the run stays offline until it finishes: ``metricfold sync`` publishes the
spool later. Records that were in flight when the switch happened may reach Kafka twice; the consumer
deduplicates events by (producer id, seq), so the effect is exactly once.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from producer.batch import PendingBatch
from producer.spool import SpoolWriter
from producer.transport import Delivery, KafkaTransport
from schemas.codec import default_codec
from schemas.errors import BrokerUnavailable, CodecError
from schemas.limits import Limits
from schemas.settings import Settings

__all__ = ["SendReport", "Sender", "SenderOptions", "SpoolWarning"]

log = logging.getLogger("metricfold.producer")


class SpoolWarning(UserWarning):
    """Warned when a run's events were written to a spool file instead of Kafka (the message says where)."""


@dataclass(frozen=True, kw_only=True)
class SenderOptions:
    """Batching and queue bounds of the sender (defaults tuned with bench/producer.py)."""

    linger_s: float = 0.1  #: seal a batch this old (a live run sends ~10 records/s, each folded as one block)
    max_batch_events: int = 8192  #: seal a batch with this many events
    target_batch_bytes: int = 1024 * 1024  #: seal a batch at this estimated size
    max_queued_events: int = 200_000  #: back-pressure above this many sealed, unsent events
    max_queued_bytes: int = 64 * 1024 * 1024  #: ... or this many estimated bytes
    max_inflight_bytes: int = 64 * 1024 * 1024  #: wait for acks above this many unacknowledged bytes
    connect_timeout_s: float = 5.0  #: give up on Kafka (and spool) after this long at start
    flush_timeout_s: float = 60.0  #: finish() waits this long for acks, then spools what is left


@dataclass
class SendReport:
    """What happened to a run's records by the time it finished."""

    records_sent: int = 0  #: acknowledged by Kafka
    records_spooled: int = 0
    spool_path: Path | None = None
    reason: str | None = None  #: why the run went to the spool (None if it did not)
    errors: int = 0  #: batches that could not be encoded (a bug; logged)


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
        self._has_work = threading.Condition(self.lock)
        self._has_space = threading.Condition(self.lock)
        self.pending = PendingBatch(time.monotonic())
        self._ready: collections.deque[PendingBatch] = collections.deque()
        self._queued_events = 0
        self._queued_bytes = 0
        self._closing = False
        self._transport: KafkaTransport | None = None if offline else KafkaTransport(
            settings, limits, connect_timeout_s=options.connect_timeout_s
        )
        self._spool = SpoolWriter(spool_dir, run_path, producer_id)
        self._inflight: collections.deque[tuple[Delivery, bytes]] = collections.deque()
        self._inflight_bytes = 0
        self.report = SendReport(reason="offline mode" if offline else None)
        self._thread = threading.Thread(target=self._run, name=f"metricfold-sender-{run_path}", daemon=True)
        self._thread.start()

    # -- called by the Run, with self.lock held -------------------------------------------------------

    def started_locked(self) -> None:
        """The pending batch got its first event: start its age clock and wake the thread."""
        self.pending.born = time.monotonic()
        self._has_work.notify()

    def seal_locked(self) -> None:
        """Move the pending batch to the ready queue; wait for room if the queue is full."""
        batch = self.pending
        if batch.events == 0 and batch.block is None:
            return
        self.pending = PendingBatch(time.monotonic())
        self._ready.append(batch)
        self._queued_events += batch.events
        self._queued_bytes += batch.nbytes
        self._has_work.notify()
        opts = self.options
        while (self._queued_events > opts.max_queued_events or self._queued_bytes > opts.max_queued_bytes) and (
            self._thread.is_alive()
        ):
            self._has_space.wait(0.5)

    # -- the caller's side -----------------------------------------------------------------------------

    def close(self) -> SendReport:
        """Send everything, wait for acks (or spool), fsync the spool; return what happened."""
        with self.lock:
            self.seal_locked()
            self._closing = True
            self._has_work.notify()
        self._thread.join()
        return self.report

    # -- the thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self.lock:
                    while not self._ready and not self._closing:
                        pending = self.pending
                        if pending.events == 0 and pending.block is None:
                            self._has_work.wait()
                            continue
                        wait = pending.born + self.options.linger_s - time.monotonic()
                        if wait <= 0:
                            self._ready.append(pending)
                            self._queued_events += pending.events
                            self._queued_bytes += pending.nbytes
                            self.pending = PendingBatch(time.monotonic())
                        else:
                            self._has_work.wait(wait)
                    batches = list(self._ready)
                    self._ready.clear()
                    closing = self._closing
                for batch in batches:
                    self._deliver_batch(batch)
                    with self.lock:
                        self._queued_events -= batch.events
                        self._queued_bytes -= batch.nbytes
                        self._has_space.notify_all()
                if closing and not batches:
                    break
            self._drain()
        except BaseException:  # pragma: no cover - a bug; never leave the run hanging silently
            log.exception("metricfold: the sender of run %s failed", self.key.decode())
            self.report.errors += 1
        finally:
            self._spool.close()
            with self.lock:
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
        while self._transport is not None and self._inflight_bytes > self.options.max_inflight_bytes:
            time.sleep(0.005)
            self._settle()

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
