"""Where a run's records go once encoded: to Kafka, tracked until acknowledged, or to the run's spool file.

Online, each record goes to Kafka (key = run path) and stays "in flight" until acknowledged. If Kafka cannot
be reached at start, or a record fails (after kafka-python's retries and ``delivery_timeout_ms``), every
record not yet acknowledged and everything after it goes, in order, to the run's spool file, and the run
stays offline until it finishes: ``metricfold sync`` publishes the spool later. Records that were in flight
when the switch happened may reach Kafka twice; the consumer deduplicates events by (producer id, seq), so
the effect is exactly once.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from pathlib import Path

from producer.spool_file import SpoolWriter
from producer.transport import Delivery, KafkaTransport
from schemas.errors import BrokerUnavailable

__all__ = ["RecordDelivery", "SendReport", "SpoolWarning"]

log = logging.getLogger("metricfold.producer")


class SpoolWarning(UserWarning):
    """Warned when a run's events were written to a spool file instead of Kafka (the message says where)."""


@dataclass
class SendReport:
    """What happened to a run's records by the time it finished."""

    records_sent: int = 0  #: acknowledged by Kafka
    records_spooled: int = 0
    spool_path: Path | None = None
    reason: str | None = None  #: why the run went to the spool (None if it did not)
    errors: int = 0  #: batches that could not be encoded (a bug; logged)


class RecordDelivery:
    """The records of one run on their way (used by its sender's one thread at a time), counted in *report*."""

    def __init__(
        self, key: bytes, transport: KafkaTransport | None, spool: SpoolWriter, report: SendReport, *,
        max_inflight_bytes: int, flush_timeout_s: float,
    ) -> None:
        self.key = key
        self.report = report
        self._transport = transport  # None: offline (from the start, or since Kafka failed)
        self._spool = spool
        self._inflight: collections.deque[tuple[Delivery, bytes]] = collections.deque()
        self._inflight_bytes = 0
        self._max_inflight_bytes = max_inflight_bytes
        self._flush_timeout_s = flush_timeout_s

    def deliver(self, value: bytes) -> None:
        """Send one record to Kafka (without waiting for its ack), or spool it when offline."""
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

    def inflight_full(self) -> bool:
        """Whether more than ``max_inflight_bytes`` are unacknowledged (online): the next batch waits."""
        self._settle()
        return self._transport is not None and self._inflight_bytes > self._max_inflight_bytes

    def drain(self) -> None:
        """Wait up to ``flush_timeout_s`` for the acks of every record in flight; spool those not acknowledged."""
        transport = self._transport
        if transport is None:
            return
        transport.flush(self._flush_timeout_s)
        self._settle()
        if self._inflight:
            self._go_offline("Kafka did not acknowledge every record before finish")
        elif self._transport is not None:
            self._transport.close(5.0)
            self._transport = None

    def close(self) -> None:
        """Flush, fsync and close the spool file (no-op if nothing was spooled)."""
        self._spool.close()

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
