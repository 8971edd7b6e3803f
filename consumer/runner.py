"""The consume loop: Kafka records -> decode -> fold -> one Redis round trip per batch -> commit.

Exactly-once effect (SPEC §6): each run's new views are written together with the offset of the last record
they contain (`Store.apply`, one atomic step per run in Lua); a record at or below a run's applied offset does
not change the views again, so a batch re-read after a crash changes nothing. The state cached in memory is
trusted only while Redis agrees: every write names the applied offset it was built on, and a mismatch (Redis
lost writes, or another consumer wrote the run) makes the runner reload the run from Redis and fold it again.

The fold state itself (a run's exact sums, extremes, seen seqs) is stored less often: a run's state goes to
Redis once it has differed from the stored one for STATE_EVERY_S (and when the consumer is idle or stops),
not with every batch; writing it every time was the largest single cost per run and batch. Until then the
run is in its partition's lag set in Redis, scored by the first offset its stored state lacks. A consumer that
starts over (partition assignment, any Redis failure) seeks to the lowest of those, or to the partition's
checkpoint, and folds the records its runs' views already hold into their states again, without writing
views, dead letters or counts for them a second time. Kafka's committed offsets are only informational.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from consumer.coalesce import merge_log_records
from consumer.fold import (
    RunState,
    fold_record,
    new_run_state,
    state_from_bytes,
    state_to_bytes,
    take_changes,
)
from consumer.kafka_io import STALL_LIMIT_S, ConsumerStalled, DeadLetterProducer, GroupConsumer, Record
from consumer.resume import first_delivery, lagging_partitions, lost_writes
from consumer.store import APPLIED, CONFLICT, MOVED, RunWrite, Store
from schemas import codec
from schemas.errors import BrokerUnavailable, CodecError, MetricfoldError, StoreUnavailable, ValidationError, WriteRefused
from schemas.limits import Limits, check_run_part
from schemas.settings import Settings

if TYPE_CHECKING:
    from consumer.metrics import ConsumerMetrics

__all__ = ["BatchTiming", "ConsumeReport", "Consumer", "run_path_of"]

log = logging.getLogger(__name__)


class GenerationMoved(MetricfoldError):
    """Raised inside the loop when a replay switched `<ns>:active` to another generation."""

    def __init__(self, message: str, generation: str) -> None:
        super().__init__(message)
        self.generation = generation


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


_Groups = OrderedDict[tuple[str, int], list[Record]]

#: a run's fold state is stored once it has differed from the stored one this long (seconds): a consumer that
#: starts over reads back about this far
STATE_EVERY_S = 5.0
#: states stored with one batch, at most (the oldest first), unless they are overdue by 4 x STATE_EVERY_S
STATES_PER_BATCH = 64


class _LostWrites(StoreUnavailable):
    """Redis lost writes of these runs after acknowledging them: start over from the resume points, read again
    from where those runs' masters lost them (on a cluster, the topic's checkpoint may be on another master)."""

    def __init__(self, message: str, run_paths: list[str]) -> None:
        super().__init__(message)
        self.run_paths = run_paths


class _ResumeNeeded(MetricfoldError):
    """A run's stored state lacks records that are behind the read position: read again from the resume point."""


class _BadRecords(Exception):
    """Records failed for a reason of their own while being folded or written (an exception from the fold, a
    value that cannot be encoded for Redis, a write script failing on them), not because Kafka or Redis is away.

    *spans* are (partition, first offset, last offset): one record, which is then dead-lettered, or several
    (a batch), which are then read again one record at a time to find the one at fault."""

    def __init__(self, reason: str, spans: list[tuple[int, int, int]]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.spans = spans


@dataclasses.dataclass
class _Cached:
    state: RunState
    applied: dict[int, int]  # partition -> offset of the last record in the views, as Redis has it
    folded: dict[int, int]  # partition -> offset of the last record folded into `state`
    stored: dict[int, int]  # partition -> offset of the last record in the state Redis holds
    events: int  # events the views count (the stats counter has them)
    updated_ms: int
    #: partition -> the first record folded since the state was stored, where the stored state has none of it
    first_unstored: dict[int, int] = dataclasses.field(default_factory=dict)
    dirty_since: float | None = None  # monotonic time the state first differed from the stored one
    lagging: set[int] = dataclasses.field(default_factory=set)  # partitions where Redis has the run in the lag set


def _timing(records: list[Record], runs: int, poll_s: float, fold_s: float, redis_s: float, polled_ms: float
            ) -> BatchTiming:
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


def run_path_of(decoded: tuple[str, Any]) -> str:
    """The run path a decoded record belongs to, checked (a bad one cannot become a Redis key)."""
    _, datum = decoded
    parts = (datum.get("entity"), datum.get("project"), datum.get("run_id"))
    check_run_part("entity", parts[0])
    check_run_part("project", parts[1])
    check_run_part("run_id", parts[2])
    return "/".join(parts)


class Consumer:
    """One consumer-group member folding the event topic into one Redis generation."""

    def __init__(
        self,
        settings: Settings,
        *,
        limits: Limits | None = None,
        store: Store | None = None,
        group: bool = True,
        max_cached_runs: int = 100_000,
        poll_records: int = 2000,
        stop_at: dict[int, int] | None = None,
        stall_limit_s: float = STALL_LIMIT_S,
    ) -> None:
        """*group=False* reads every partition itself and writes a non-active generation (replay): then the store
        must name its generation, and refused records are counted and logged but not sent to the dead-letter topic
        again (the live consumer sent them). *stop_at* (partition -> offset) folds only the records before those offsets.
        *stall_limit_s*: a Kafka client that fetches nothing this long while records wait is made anew."""
        self.settings = settings
        self.limits = limits or Limits.from_env()
        self.store = store or Store(settings)
        self.generation = self.store.ensure_generation()
        self.store.check_layout(settings.topic)
        self.store.load_read_functions()  # the read-only ACL user (serve, Grafana) cannot load them itself
        self.group = group
        self.live = group  # a live consumer follows `<ns>:active`; a replay writes its own generation
        self.stop_at = stop_at
        self.stall_limit_s = stall_limit_s
        self.poll_records = poll_records
        self.max_cached_runs = max_cached_runs
        self.report = ConsumeReport()
        self._lost: list[str] = []  # runs whose writes Redis lost, for the next resume points (_LostWrites)
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._partition_of: dict[str, int] = {}
        self._dirty: OrderedDict[str, None] = OrderedDict()  # runs whose state differs from the stored one, oldest first
        self._kafka: GroupConsumer | None = None
        self._dead: DeadLetterProducer | None = None
        # partition -> the checkpoint we know Redis holds (read at a seek, or written by us): Redis holding less
        # later means it lost acknowledged writes
        self._known: dict[int, int] = {}
        self.stopping = False
        # records that failed on their own (_BadRecords): (partition, offset) -> reason, dead-lettered when read
        # again; and partition -> last offset of a failed batch, read again one record at a time up to it
        self._poison: dict[tuple[int, int], str] = {}
        self._suspect: dict[int, int] = {}
        # dead letters sent for records whose batch has not been written yet: a batch that fails and is read
        # again does not send them twice (the run writes count them once either way)
        self._dead_sent: set[tuple[int, int, str | None, str | None]] = set()
        #: called with each batch's BatchTiming (`metricfold consume --timings`); None: not measured
        self.on_timing: Callable[[BatchTiming], None] | None = None
        #: Prometheus metrics and health (`metricfold consume --metrics-port`); None: not kept
        self.metrics: ConsumerMetrics | None = None

    # ------------------------------------------------------------------ lifecycle
    def _connect(self) -> GroupConsumer:
        if self._kafka is None:
            self._dead = DeadLetterProducer(self.settings, self.limits, publish=self.group)
            self._kafka = GroupConsumer(
                self.settings,
                on_assigned=self._on_assigned,
                on_revoked=self._on_revoked,
                group=self.group,
                max_record_bytes=self.limits.kafka_max_record_bytes,
                stall_limit_s=self.stall_limit_s,
            )
            if self.metrics is not None:
                self.metrics.kafka_client_made()
        return self._kafka

    def close(self) -> None:
        self._drop_kafka()
        self.store.close()

    def caught_up(self) -> bool:
        """True when Redis holds every record of every partition, in the views and in the stored states (the
        resume points reach the end offsets).

        Judged by Redis rather than our own position, so it is right even while other group members (or dead
        ones whose session has not expired yet) hold some partitions.
        """
        ends = self._connect().topic_end_offsets()
        if not ends:
            return False
        resume = self.store.resume_points(self.settings.topic)
        return all(resume.get(p, 0) >= end for p, end in ends.items())

    def positions(self) -> dict[int, int]:
        """Next offset to read per assigned partition (for progress displays)."""
        return self._kafka.positions() if self._kafka is not None else {}

    def _on_assigned(self, partitions: list[int]) -> dict[int, int]:
        checkpoints = self.store.checkpoints(self.settings.topic)
        resume = self.store.resume_points(self.settings.topic, checkpoints, lost=self._lost)
        self._lost = []
        self._known.update({p: checkpoints[p] for p in partitions if p in checkpoints})
        if self.metrics is not None:
            self.metrics.rebalanced("assigned", partitions)
        return {p: resume[p] for p in partitions if p in resume}

    def _on_revoked(self, partitions: list[int]) -> None:
        """Forget the runs of partitions another member takes over (their lag set in Redis says where it starts)."""
        gone = set(partitions)
        if self.metrics is not None:
            self.metrics.rebalanced("revoked", partitions)
        for partition in gone:
            self._known.pop(partition, None)
        for path in [p for p, part in self._partition_of.items() if part in gone]:
            self._forget(path)

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        *,
        until_caught_up: bool = False,
        idle_timeout_s: float | None = None,
        on_batch: Callable[[ConsumeReport], None] | None = None,
    ) -> ConsumeReport:
        """Consume until stopped (SIGTERM sets `stopping`), or until caught up / idle for idle_timeout_s."""
        started = time.monotonic()
        last_progress = time.monotonic()
        backoff = 0.5
        while not self.stopping:
            if self.metrics is not None:
                self.metrics.tick(self.report, self._kafka)
            try:
                kafka = self._connect()
                poll_began = time.monotonic()
                records = kafka.poll(timeout_ms=200, max_records=self.poll_records)
                poll_s = time.monotonic() - poll_began
                if self.stop_at is not None:
                    records = [r for r in records if r.offset < self.stop_at.get(r.partition, 0)]
                    if not records and kafka.reached(self.stop_at):
                        break
                if records:
                    if self._suspect:
                        records = self._process_one_by_one(records)
                    if records:
                        self.process(records, poll_s=poll_s)
                    last_progress = time.monotonic()
                    if on_batch:
                        on_batch(self.report)
                else:
                    if self._dirty:
                        self.store_states(everything=True)  # idle: store every state now
                    if (until_caught_up and self.caught_up()) or (
                        idle_timeout_s is not None and time.monotonic() - last_progress > idle_timeout_s
                    ):
                        break
                backoff = 0.5
            except GenerationMoved as exc:
                log.warning("%s; moving to it and resuming from its checkpoint", exc)
                self.store.use_generation(exc.generation)
                self.generation = exc.generation
                self._reset(0.0)
            except _ResumeNeeded as exc:
                log.warning("%s; reading again from the Redis resume point", exc)
                self._reset(0.0)
            except _BadRecords as exc:
                self._isolate(exc)
                self._reset(0.0)
            except StoreUnavailable as exc:
                self.report.redis_failures += 1
                log.warning("Redis is unavailable (%s); resuming from its checkpoint in %.1f s", exc, backoff)
                self._reset(backoff, lost=exc.run_paths if isinstance(exc, _LostWrites) else ())
                with contextlib.suppress(StoreUnavailable):  # a Redis that lost its data lost the read functions too
                    self.store.load_read_functions()
                backoff = min(backoff * 2, 10.0)
            except BrokerUnavailable as exc:
                log.warning("Kafka is unavailable (%s); resuming from the Redis checkpoint in %.1f s", exc, backoff)
                if self.metrics is not None:
                    self.metrics.kafka_error()
                if isinstance(exc, ConsumerStalled):
                    self._drop_kafka()
                self._reset(backoff)
                backoff = min(backoff * 2, 10.0)
        if self._dirty and self._kafka is not None:
            try:  # so that the next consumer need not read back (it would be right either way)
                self.store_states(everything=True)
            except (StoreUnavailable, GenerationMoved, _BadRecords) as exc:
                log.warning("could not store the last fold states (%s); the next consumer reads back for them", exc)
        self.report.seconds = time.monotonic() - started
        if self.metrics is not None:
            self.metrics.tick(self.report, self._kafka)
        return self.report

    def _isolate(self, exc: _BadRecords) -> None:
        """Remember what failed: one record is dead-lettered when it is read again; the records of a failed batch
        are read again one at a time, each written alone, so that the one at fault shows itself."""
        if len(exc.spans) == 1 and exc.spans[0][1] == exc.spans[0][2]:
            partition, offset, _ = exc.spans[0]
            self._poison[(partition, offset)] = f"refused: {exc.reason}"
            log.warning("record %d of partition %d cannot be folded or written (%s); it goes to %s and the stream "
                        "goes on", offset, partition, exc.reason, self.settings.dead_letter_topic)
            return
        for partition, _, last in exc.spans:
            self._suspect[partition] = max(last, self._suspect.get(partition, last))
        log.warning("a batch failed for its records' sake (%s); reading partitions %s again one record at a time to "
                    "find the one at fault", exc.reason, sorted(p for p, _, _ in exc.spans))

    def _process_one_by_one(self, records: list[Record]) -> list[Record]:
        """Fold and write alone each record of a partition read again after a batch failed for its records'
        sake (up to that batch's last offset); return the other records, for a batch as usual."""
        rest: list[Record] = []
        for record in records:
            last = self._suspect.get(record.partition)
            if last is None or record.offset > last:
                rest.append(record)
                continue
            self.process([record], strict=True)
            if record.offset == last:
                del self._suspect[record.partition]
        return rest

    def _reset(self, wait_s: float, *, lost: Sequence[str] = ()) -> None:
        """After a failed batch: forget every cached state and read again from the Redis checkpoint.

        The cached states may hold records whose write did not land, and Redis may have lost writes it had
        acknowledged (AOF everysec), so only what Redis holds is trusted.
        """
        time.sleep(wait_s)
        self._lost = [*self._lost, *lost]  # until a seek used them (a new Kafka client's assignment, if not this one)
        self.store.forget_announced()
        self._cache.clear()
        self._partition_of.clear()
        self._dirty.clear()
        self._known.clear()
        if self._kafka is not None:
            try:
                checkpoints = self.store.checkpoints(self.settings.topic)
                self._kafka.seek(self.store.resume_points(self.settings.topic, checkpoints, lost=self._lost))
                self._lost = []
                self._known.update(checkpoints)
            except (StoreUnavailable, BrokerUnavailable) as exc:
                log.warning("cannot seek back yet (%s); dropping the Kafka connection to start over", exc)
                self._drop_kafka()

    def _drop_kafka(self) -> None:
        for closer in (self._kafka, self._dead):
            if closer is not None:
                try:
                    closer.close()
                except Exception as exc:  # closing a broken client must not stop the loop
                    log.debug("closing a Kafka client failed: %s", exc)
        self._kafka = None
        self._dead = None

    def process(self, records: list[Record], *, poll_s: float = 0.0, strict: bool = False) -> None:
        """Fold one poll's records and write them to Redis in one round trip; then commit to Kafka.

        Records are grouped by their key (the run path) and decoded one at a time while folding, so a poll's
        decoded events never all sit in memory at once. *poll_s*: how long the poll took (for `on_timing`).
        *strict*: the runs' fold states are encoded after each record (so that a record whose state cannot be
        stored shows itself), and no other run's state is stored with this batch.

        Raises _BadRecords when records fail for their own sake (see Consumer._isolate).
        """
        began = time.monotonic()
        polled_ms = time.time() * 1000.0
        self.report.batches += 1
        self.report.records += len(records)
        dead = self._dead
        assert dead is not None and self._kafka is not None
        groups: _Groups = OrderedDict()
        next_offsets: dict[int, int] = {}
        undecodable: dict[int, int] = {}
        for record in records:
            next_offsets[record.partition] = record.offset + 1
            path = _key_path(record.key)
            if path is None:
                if first_delivery(record.offset, self._known.get(record.partition, 0)):
                    dead.send(record, f"undecodable: the record key {record.key!r} is not a run path entity/project/run_id")
                    undecodable[record.partition] = undecodable.get(record.partition, 0) + 1
                continue
            groups.setdefault((path, record.partition), []).append(record)

        writes, pending = self._fold_groups(groups, dead, undecodable, strict=strict)
        if not strict:
            self._add_due_states(writes, pending, everything=False)
        dead.flush()
        known = {p: self._known[p] for p in next_offsets if p in self._known}
        folded, runs = time.monotonic(), len(writes)
        results = self._apply(writes, pending, next_offsets, undecodable, known)
        self._check_moved(results)
        self._count(writes, results)
        retries = [pending[i] for i, r in enumerate(results) if r == CONFLICT]
        self._stored(writes, results)
        if retries:
            self.report.conflicts += len(retries)
            self._check_not_lost([w for w, r in zip(writes, results, strict=True) if r == CONFLICT])
            for key, _ in retries:
                self._forget(key[0])
            writes, pending = self._fold_groups(OrderedDict(retries), dead, None, strict=strict)
            dead.flush()
            results = self._apply(writes, pending, next_offsets, undecodable, known)
            self._check_moved(results)
            self._count(writes, results)
            if CONFLICT in results:
                raise StoreUnavailable("a run kept changing under us (is a second consumer writing this generation?)")
        for partition, offset in next_offsets.items():
            self._known[partition] = max(offset, self._known.get(partition, offset))
        if self._poison:  # dead-lettered with this batch: Redis holds that now
            for done in [k for k in self._poison if k[1] < next_offsets.get(k[0], -1)]:
                del self._poison[done]
        if self._dead_sent:
            self._dead_sent = {k for k in self._dead_sent if k[1] >= next_offsets.get(k[0], -1)}
        self.report.undecodable += sum(undecodable.values())
        if self.on_timing is not None or self.metrics is not None:
            timing = _timing(records, runs, poll_s, folded - began, time.monotonic() - folded, polled_ms)
            if self.on_timing is not None:
                self.on_timing(timing)
            if self.metrics is not None:
                self.metrics.batch(timing)
        self._kafka.commit(next_offsets)
        self._evict()

    def _apply(self, writes: list[RunWrite], pending: list[tuple[tuple[str, int], list[Record]]],
               checkpoints: dict[int, int], undecodable: dict[int, int] | None = None,
               known: dict[int, int] | None = None) -> list[int]:
        """Store.apply, with a refusal of some runs' writes for their content turned into _BadRecords naming
        the records behind those writes."""
        try:
            return self.store.apply(writes, checkpoints, undecodable, live=self.live, known=known)
        except WriteRefused as exc:
            refused = set(exc.run_paths)
            spans = [self._span_of(path, partition, records) for (path, partition), records in pending if path in refused]
            raise _BadRecords(str(exc), spans) from exc

    def _count(self, writes: list[RunWrite], results: list[int]) -> None:
        """Count in the report what Redis now counts: the events and dead letters of the writes that applied
        (a batch that failed, or a write refolded after a conflict, is counted when it lands)."""
        for write, result in zip(writes, results, strict=True):
            if result == APPLIED:
                self.report.events_applied += write.events
                self.report.dead_letters += write.dead_letters

    def _span_of(self, path: str, partition: int, records: list[Record]) -> tuple[int, int, int]:
        """The records behind a run's write: this batch's, or (a write of its state alone) every record folded
        into the state since it was last stored."""
        if records:
            return partition, records[0].offset, records[-1].offset
        cached = self._cache[path]
        first = cached.first_unstored.get(partition, cached.stored.get(partition, -1) + 1)
        return partition, first, cached.folded.get(partition, first)

    def store_states(self, *, everything: bool = True) -> None:
        """Store the fold states that differ from the stored ones (*everything*: all that can be; else the due
        ones), without records: used when the consumer is idle and when it stops."""
        writes: list[RunWrite] = []
        pending: list[tuple[tuple[str, int], list[Record]]] = []
        self._add_due_states(writes, pending, everything=everything)
        if writes:
            results = self._apply(writes, pending, {})
            self._check_moved(results)
            self._stored(writes, results)
            if CONFLICT in results:  # another writer, or Redis lost writes: start over from what Redis holds
                self._check_not_lost([w for w, r in zip(writes, results, strict=True) if r == CONFLICT])
                for w, r in zip(writes, results, strict=True):
                    if r == CONFLICT:
                        self._forget(w.run_path)

    def _add_due_states(self, writes: list[RunWrite], pending: list[tuple[tuple[str, int], list[Record]]], *,
                        everything: bool) -> None:
        """Give the runs whose state is due for storing (the oldest first) their state: in their write of this
        batch, or in a write of their own that changes no view (it names the applied offset, so the script skips
        the views and stores the state)."""
        if not self._dirty:
            return
        now = time.monotonic()
        index = {w.run_path: i for i, w in enumerate(writes)}
        taken = 0
        for path in list(self._dirty):
            cached = self._cache.get(path)
            if cached is None or cached.dirty_since is None:
                self._dirty.pop(path, None)
                continue
            age = now - cached.dirty_since
            if not everything and (age < STATE_EVERY_S or (taken >= STATES_PER_BATCH and age < 4 * STATE_EVERY_S)):
                break
            if cached.folded != cached.applied:  # still folding again what its views hold: not storable yet
                continue
            taken += 1
            state = self._state_bytes(path, cached)
            i = index.get(path)
            if i is not None:
                writes[i].state = state
                writes[i].state_at = dict(cached.folded)
                continue
            partition = self._partition_of[path]
            offset = cached.applied[partition]
            writes.append(RunWrite(run_path=path, partition=partition, offset=offset, expected_prev=offset, state=state,
                                   updated_ms=cached.updated_ms, state_at=dict(cached.folded)))
            pending.append(((path, partition), []))

    def _state_bytes(self, path: str, cached: _Cached, records: list[Record] | None = None) -> bytes:
        """The run's state as stored; one that cannot be encoded is the fault of the records folded into it
        since it was last stored (or of *records*)."""
        try:
            return state_to_bytes(cached.state)
        except Exception as exc:  # any failure here is of this run's data
            partition = self._partition_of[path]
            raise _BadRecords(f"the fold state of run {path} cannot be stored: {_what(exc)}",
                              [self._span_of(path, partition, records or [])]) from exc

    def _stored(self, writes: list[RunWrite], results: list[int]) -> None:
        """Note what Redis now holds: the states of the writes that were not conflicts (stored, or Redis kept a
        newer one), and the lag set entries of the views written without a state."""
        written = 0
        for write, result in zip(writes, results, strict=True):
            if result != CONFLICT:
                written += len(write.state)
            cached = self._cache.get(write.run_path)
            if cached is None or result == CONFLICT:
                continue
            if not write.state:
                if result == APPLIED:
                    cached.lagging.add(write.partition)
                continue
            cached.stored = dict(write.state_at)
            cached.first_unstored = {}
            cached.lagging = set()
            if cached.folded == write.state_at:
                cached.dirty_since = None
                self._dirty.pop(write.run_path, None)
        if written and self.metrics is not None:
            self.metrics.state_written(written)

    def _forget(self, path: str) -> None:
        self._cache.pop(path, None)
        self._partition_of.pop(path, None)
        self._dirty.pop(path, None)

    def _evict(self) -> None:
        """Keep at most max_cached_runs states cached, dropping the least recently used ones whose state Redis
        holds (one that differs from the stored state stays until it is stored: dropping it would lose records)."""
        excess = len(self._cache) - self.max_cached_runs
        if excess <= 0:
            return
        for path in list(self._cache):
            if excess <= 0:
                break
            if path not in self._dirty:
                self._forget(path)
                excess -= 1

    def _check_not_lost(self, conflicts: list[RunWrite]) -> None:
        """A conflict where Redis holds an older applied offset than the one our cached state was built on means
        Redis lost writes it had acknowledged: refolding only this batch would leave a gap, so start over from
        the Redis resume points (a newer offset means another writer, handled by refolding the batch)."""
        stored = self.store.load_runs([w.run_path for w in conflicts])
        lost = [w for w in conflicts if lost_writes(w.expected_prev, stored[w.run_path].applied.get(w.partition))]
        if lost:
            w = lost[0]
            raise _LostWrites(
                f"Redis lost writes it had acknowledged: run {w.run_path} is at offset "
                f"{stored[w.run_path].applied.get(w.partition)} of partition {w.partition}, not {w.expected_prev}"
                + (f" (and {len(lost) - 1} more runs)" if len(lost) > 1 else ""),
                [w.run_path for w in lost],
            )

    def _check_moved(self, results: list[int]) -> None:
        if MOVED in results:
            active = self.store.active_generation()
            raise GenerationMoved(f"generation {self.generation} is no longer active ({active} is)", active or self.generation)

    def _load(self, paths: list[str]) -> None:
        missing = [p for p in paths if p not in self._cache]
        if not missing:
            return
        for path, stored in self.store.load_runs(missing).items():
            if stored.state is None:
                entity, project, run_id = path.split("/")
                state = new_run_state(entity, project, run_id)
            else:
                state = state_from_bytes(stored.state)
            lagging = lagging_partitions(stored.applied, stored.state_at)
            self._cache[path] = _Cached(state, stored.applied, dict(stored.state_at), dict(stored.state_at),
                                        _events_of(state), int(state.updated or 0), lagging=lagging)

    def _fold_groups(
        self, groups: _Groups, dead: DeadLetterProducer, undecodable: dict[int, int] | None, *, strict: bool = False
    ) -> tuple[list[RunWrite], list[tuple[tuple[str, int], list[Record]]]]:
        """Fold each run's records; *undecodable* (None on a retry) collects the records that are not events.

        A record the stored state holds is skipped; one the views hold but the cached state does not (read again
        after a restart, the state being stored less often than the views) is folded into the state only. A
        record found at fault before (`_poison`) is dead-lettered instead of folded, and the run's write moves
        its applied offset over it, so that it is counted once. An exception from the fold other than a
        refusal raises _BadRecords: the state may be half-changed, so the consumer starts over from Redis."""
        self._load(list(dict.fromkeys(path for path, _ in groups)))
        writes: list[RunWrite] = []
        pending: list[tuple[tuple[str, int], list[Record]]] = []
        now = time.monotonic()
        for (path, partition), records in groups.items():
            cached = self._cache[path]
            self._cache.move_to_end(path)
            self._partition_of[path] = partition
            applied = cached.applied.get(partition)
            folded = cached.folded.get(partition)
            known = self._known.get(partition, 0)
            rejected = 0
            last_offset = None
            again: list[tuple[list[Record], tuple[str, Any]]] = []  # in the views already
            units: list[tuple[list[Record], tuple[str, Any]]] = []
            for record in records:
                if folded is not None and record.offset <= folded:  # in the state already
                    continue
                poisoned = self._poison.get((partition, record.offset)) if self._poison else None
                if poisoned is not None:
                    if partition not in cached.stored and partition not in cached.first_unstored:
                        cached.first_unstored[partition] = record.offset
                    if applied is None or record.offset > applied:  # else it went with an earlier write
                        self._dead_letter(dead, record, poisoned, kind="poisoned")
                        rejected += 1
                        last_offset = record.offset
                    continue
                try:
                    decoded = codec.decode(record.value or b"")
                    if _joined_path(decoded) != path:  # equal to the checked key path: valid, no need to check again
                        inside = run_path_of(decoded)
                        raise ValidationError(f"the record key {path!r} is not the run path of its events ({inside!r})")
                except Exception as exc:  # CodecError, ValidationError, or anything a malformed body makes fastavro raise
                    if isinstance(exc, MetricfoldError) and not isinstance(exc, (CodecError, ValidationError)):
                        raise
                    if undecodable is not None and record.offset >= known:  # counted with the checkpoint: once
                        dead.send(record, f"undecodable: {exc}")
                        undecodable[partition] = undecodable.get(partition, 0) + 1
                    continue
                if partition not in cached.stored and partition not in cached.first_unstored:
                    cached.first_unstored[partition] = record.offset
                (again if applied is not None and record.offset <= applied else units).append(([record], decoded))
            if again:
                for unit_records, decoded in _merged(path, partition, again):
                    with contextlib.suppress(MetricfoldError):  # its refusals went to the dead letters the first time
                        self._fold_unit(path, partition, cached, unit_records, decoded, strict)
                folded = cached.folded[partition] = again[-1][0][-1].offset
                self._mark_dirty(path, cached, now)
                if folded == applied:  # the state holds what the views hold again: what they show is published
                    take_changes(cached.state)
                    cached.events = _events_of(cached.state)
                    cached.updated_ms = int(cached.state.updated or cached.updated_ms)
            if units and folded != applied:
                raise _ResumeNeeded(f"the stored state of run {path} lacks records of partition {partition} before "
                                    f"offset {units[0][0][0].offset}")
            for unit_records, decoded in _merged(path, partition, units):
                last_offset = unit_records[-1].offset
                try:
                    refused = self._fold_unit(path, partition, cached, unit_records, decoded, strict)
                except MetricfoldError as exc:  # a record the fold could not take at all
                    refused = []
                    for record in unit_records:
                        self._dead_letter(dead, record, f"refused: {exc}")
                    rejected += len(unit_records)
                for r in refused:
                    extra = {"item.index": str(r.index)}
                    if r.producer_id is not None:
                        extra["producer.id"] = r.producer_id
                    if r.seq is not None:
                        extra["seq"] = str(r.seq)
                    self._dead_letter(dead, _source_of(unit_records, r.seq), r.reason, extra)
                rejected += len(refused)
            if last_offset is None:
                continue
            try:
                changes = take_changes(cached.state)
                events = _events_of(cached.state)
            except Exception as exc:  # a fault of this run's data (or a bug): find the record behind it
                raise _BadRecords(f"the changes of run {path} cannot be taken: {_what(exc)}",
                                  [(partition, records[0].offset, records[-1].offset)]) from exc
            updated = int(changes.meta.get("updated", cached.updated_ms) or 0)
            stored_at = cached.stored.get(partition)
            if partition in cached.lagging:
                lacks_from = None  # Redis has the run in the lag set already
            elif stored_at is not None:
                lacks_from = stored_at + 1
            else:
                lacks_from = cached.first_unstored[partition]
            write = RunWrite(
                run_path=path,
                partition=partition,
                offset=last_offset,
                expected_prev=applied,
                state=b"",
                updated_ms=updated,
                changes=changes,
                events=events - cached.events,
                dead_letters=rejected,
                lacks_from=lacks_from,
            )
            writes.append(write)
            pending.append(((path, partition), records))
            cached.applied[partition] = cached.folded[partition] = last_offset
            cached.events = events
            cached.updated_ms = updated
            self._mark_dirty(path, cached, now)
        return writes, pending

    def _fold_unit(self, path: str, partition: int, cached: _Cached, unit_records: list[Record],
                   decoded: tuple[str, Any], strict: bool) -> list[Any]:
        """fold_record for the records of one unit (one record, or consecutive LogBlocks merged); a refusal
        (MetricfoldError) passes through, any other exception becomes _BadRecords naming the unit's records.
        *strict*: also check that the state can still be stored."""
        try:
            refused = fold_record(cached.state, decoded, limits=self.limits)
        except MetricfoldError:
            raise
        except Exception as exc:
            raise _BadRecords(f"the fold failed on run {path}: {_what(exc)}",
                              [(partition, unit_records[0].offset, unit_records[-1].offset)]) from exc
        if strict:
            self._state_bytes(path, cached, unit_records)
        return refused

    def _dead_letter(self, dead: DeadLetterProducer, record: Record, reason: str,
                     extra: dict[str, str] | None = None, *, kind: str = "refused") -> None:
        """Send a refused record (or one event of it) to the dead letters, unless this process sent it already
        for a batch that then failed and is being read again. *kind*: the metrics' reason (refused, poisoned)."""
        key = (record.partition, record.offset, (extra or {}).get("item.index"), (extra or {}).get("seq"))
        if key not in self._dead_sent:
            self._dead_sent.add(key)
            dead.send(record, reason, extra)
            if self.metrics is not None:
                self.metrics.dead_letter(kind)

    def _mark_dirty(self, path: str, cached: _Cached, now: float) -> None:
        if cached.dirty_since is None:
            cached.dirty_since = now
            self._dirty[path] = None


def _what(exc: BaseException) -> str:
    """An exception in one line of a few hundred characters at most (a UnicodeError's repr holds its whole
    text: a run's state)."""
    if isinstance(exc, UnicodeError):
        reason, start = getattr(exc, "reason", ""), getattr(exc, "start", "?")
        return f"{type(exc).__name__}: {reason} at position {start}"
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _merged(path: str, partition: int, units: list[tuple[list[Record], tuple[str, Any]]]
            ) -> list[tuple[list[Record], tuple[str, Any]]]:
    """merge_log_records, with a failure on odd (but decodable) records turned into _BadRecords."""
    try:
        return merge_log_records(units)
    except Exception as exc:
        raise _BadRecords(f"merging the log records of run {path} failed: {_what(exc)}",
                          [(partition, units[0][0][0].offset, units[-1][0][-1].offset)]) from exc


def _source_of(records: list[Record], seq: int | None) -> Record:
    """The record (of several merged ones) that carried the event with this seq: the one with the highest
    first seq at or below it (each merged record is one LogBlock with consecutive seqs)."""
    if len(records) == 1 or seq is None:
        return records[0]
    best = records[0]
    for record in records:
        block = codec.decode(record.value or b"")[1]["items"][0][1]
        if block["first_seq"] <= seq:
            best = record
    return best


def _joined_path(decoded: tuple[str, Any]) -> str | None:
    """entity/project/run_id of a decoded record, unchecked (None if a part is missing or not a str)."""
    datum = decoded[1]
    parts = (datum.get("entity"), datum.get("project"), datum.get("run_id"))
    return "/".join(parts) if all(type(part) is str for part in parts) else None


_MAX_RUN_PATH_BYTES = 3 * 128 + 2  # three parts of at most 128 ASCII characters (check_run_part), two slashes


def _key_path(key: bytes | None) -> str | None:
    """The run path a record key names, if it is a valid one (the SDK keys every record by its run path)."""
    if not key or len(key) > _MAX_RUN_PATH_BYTES:  # longer keys are never valid, and never cached
        return None
    return _checked_key_path(key)


@functools.lru_cache(maxsize=65536)  # a few MB at most: keys are short (above)
def _checked_key_path(key: bytes) -> str | None:
    try:
        entity, project, run_id = key.decode("utf-8").split("/")
        check_run_part("entity", entity)
        check_run_part("project", project)
        check_run_part("run_id", run_id)
    except (UnicodeDecodeError, ValueError):
        return None
    return f"{entity}/{project}/{run_id}"


def _events_of(state: RunState) -> int:
    from consumer.fold import events_applied

    return events_applied(state)
