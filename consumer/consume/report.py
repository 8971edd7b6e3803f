"""What the consume loop reports: its running counts (ConsumeReport) and where each batch's time went
(BatchTiming). A module of its own so that the metrics (consumer/metrics/) read them without importing the loop."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumer.kafka_io import Record

__all__ = ["BatchTiming", "ConsumeReport", "batch_timing"]


@dataclasses.dataclass
class ConsumeReport:
    records: int = 0
    events_applied: int = 0
    dead_letters: int = 0
    undecodable: int = 0
    batches: int = 0
    conflicts: int = 0
    redis_failures: int = 0
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class BatchTiming:
    """Where one batch's time went (`metricfold consume --timings FILE` writes one JSON line per batch).

    The ages compare the consumer's clock at the end of the poll with each record's Kafka timestamp (the
    producer's clock when it sent the record): they mean something when the two clocks agree (one host, NTP).
    The oldest record's age plus fold_ms and redis_ms is how long after its send it became readable.
    """

    at: float  #: Unix time when the batch was written
    records: int
    runs: int  #: runs written (each in one atomic step of the apply_runs script)
    poll_ms: float  #: waiting in poll() for the records
    fold_ms: float  #: decode, fold, dead letters
    redis_ms: float  #: the Redis round trip (and a refold, after a conflict)
    oldest_age_ms: float | None  #: at the end of the poll: now - the oldest record's timestamp (None: unknown)
    newest_age_ms: float | None


def batch_timing(records: list[Record], runs: int, poll_s: float, fold_s: float, redis_s: float, polled_ms: float
                 ) -> BatchTiming:
    """The BatchTiming of a batch just written; *polled_ms*: Unix time (ms) at the end of its poll."""
    stamps = [r.timestamp_ms for r in records if r.timestamp_ms >= 0]
    return BatchTiming(
        at=round(time.time(), 3),
        records=len(records),
        runs=runs,
        poll_ms=round(poll_s * 1000, 1),
        fold_ms=round(fold_s * 1000, 1),
        redis_ms=round(redis_s * 1000, 1),
        oldest_age_ms=round(polled_ms - min(stamps), 1) if stamps else None,
        newest_age_ms=round(polled_ms - max(stamps), 1) if stamps else None,
    )
