"""The consume loop: Kafka records -> decode -> fold -> one Redis round trip per batch -> commit.

Exactly-once effect (RULES.md §6): each run's new views are written together with the offset of the last record
they contain (`Store.apply`, one atomic step per run in Lua); a record at or below a run's applied offset does
not change the views again, so a batch re-read after a crash changes nothing. The state cached in memory is
trusted only while Redis agrees: every write names the applied offset it was built on, and a mismatch (Redis
lost writes, or another consumer wrote the run) makes the runner reload the run from Redis and fold it again.
The fold states themselves are stored less often (consumer/consume/run_cache.py), so a consumer that starts
over reads back from the Redis resume points. Kafka's committed offsets are only informational.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from consumer.consume.batch_fold import BatchFolder, ResumeNeeded, group_by_run
from consumer.consume.checkpoints import Checkpoints
from consumer.consume.dead_letters import BadRecords, DeadLetters
from consumer.consume.report import BatchTiming, ConsumeReport, batch_timing
from consumer.consume.run_cache import RunCache
from consumer.consume.run_writer import GenerationMoved, LostWrites, RunWriter
from consumer.kafka_io import STALL_LIMIT_S, ConsumerStalled, DeadLetterProducer, GroupConsumer, Record
from consumer.store import CONFLICT, Store
from schemas.errors import BrokerUnavailable, StoreUnavailable
from schemas.limits import Limits
from schemas.settings import Settings

if TYPE_CHECKING:
    from consumer.metrics import ConsumerMetrics

__all__ = ["BatchTiming", "ConsumeReport", "Consumer"]

log = logging.getLogger(__name__)


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
        self.store.ensure_indexes()  # runs folded before the filter index sets existed are put in them, once
        self.store.load_read_functions()  # the read-only ACL user (serve, Grafana) cannot load them itself
        self.group = group
        self.stop_at = stop_at
        self.stall_limit_s = stall_limit_s
        self.poll_records = poll_records
        self.report = ConsumeReport()
        self._checkpoints = Checkpoints(self.store, settings.topic)
        self._runs = RunCache(self.store, max_cached_runs)
        self._dead_letters = DeadLetters(settings.dead_letter_topic, self._count_dead_letter)
        self._folder = BatchFolder(self._runs, self._dead_letters, self.limits)
        # a live consumer follows `<ns>:active`; a replay writes its own generation
        self._writer = RunWriter(self.store, self._runs, self.report, live=group, on_state_written=self._count_state)
        self._kafka: GroupConsumer | None = None
        self._dead: DeadLetterProducer | None = None
        self.stopping = False
        #: called with each batch's BatchTiming (`metricfold consume --timings`); None: not measured
        self.on_timing: Callable[[BatchTiming], None] | None = None
        #: Prometheus metrics and health (`metricfold consume --metrics-port`); None: not kept
        self.metrics: ConsumerMetrics | None = None

    @property
    def _dirty(self) -> OrderedDict[str, None]:
        """The runs whose state differs from the stored one, oldest first."""
        return self._runs.dirty

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
        return bool(ends) and self._checkpoints.reach(ends)

    def positions(self) -> dict[int, int]:
        """Next offset to read per assigned partition (for progress displays)."""
        return self._kafka.positions() if self._kafka is not None else {}

    def _on_assigned(self, partitions: list[int]) -> dict[int, int]:
        resume = self._checkpoints.assigned(partitions)
        if self.metrics is not None:
            self.metrics.rebalanced("assigned", partitions)
        return resume

    def _on_revoked(self, partitions: list[int]) -> None:
        """Forget the runs of partitions another member takes over (their lag set in Redis says where it starts)."""
        if self.metrics is not None:
            self.metrics.rebalanced("revoked", partitions)
        self._checkpoints.revoked(partitions)
        self._runs.forget_partitions(set(partitions))

    def _count_dead_letter(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.dead_letter(kind)

    def _count_state(self, size: int) -> None:
        if self.metrics is not None:
            self.metrics.state_written(size)

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
                    if self._dead_letters.suspect:
                        records = self._dead_letters.process_one_by_one(records, lambda r: self.process([r], strict=True))
                    if records:
                        self.process(records, poll_s=poll_s)
                    last_progress = time.monotonic()
                    if on_batch:
                        on_batch(self.report)
                else:
                    if self._dirty:
                        self._writer.store_states(self.generation, everything=True)  # idle: store every state now
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
            except ResumeNeeded as exc:
                log.warning("%s; reading again from the Redis resume point", exc)
                self._reset(0.0)
            except BadRecords as exc:
                self._dead_letters.isolate(exc)
                self._reset(0.0)
            except StoreUnavailable as exc:
                self.report.redis_failures += 1
                log.warning("Redis is unavailable (%s); resuming from its checkpoint in %.1f s", exc, backoff)
                self._reset(backoff, lost=exc.run_paths if isinstance(exc, LostWrites) else ())
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
                self._writer.store_states(self.generation, everything=True)
            except (StoreUnavailable, GenerationMoved, BadRecords) as exc:
                log.warning("could not store the last fold states (%s); the next consumer reads back for them", exc)
        self.report.seconds = time.monotonic() - started
        if self.metrics is not None:
            self.metrics.tick(self.report, self._kafka)
        return self.report

    def _reset(self, wait_s: float, *, lost: Sequence[str] = ()) -> None:
        """After a failed batch: forget every cached state and read again from the Redis checkpoint.

        The cached states may hold records whose write did not land, and Redis may have lost writes it had
        acknowledged (AOF everysec), so only what Redis holds is trusted.
        """
        time.sleep(wait_s)
        self._checkpoints.forget(lost)
        self.store.forget_announced()
        self._runs.clear()
        if self._kafka is not None:
            try:
                self._checkpoints.seek_back(self._kafka)
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

        Raises BadRecords when records fail for their own sake (see DeadLetters.isolate).
        """
        began = time.monotonic()
        polled_ms = time.time() * 1000.0
        self.report.batches += 1
        self.report.records += len(records)
        dead = self._dead
        assert dead is not None and self._kafka is not None
        known = self._checkpoints.known
        groups, next_offsets, undecodable = group_by_run(records, dead, known)
        writes, pending = self._folder.fold(groups, dead, undecodable, known, strict=strict)
        if not strict:
            self._runs.add_due_states(writes, pending, everything=False)
        dead.flush()
        known_now = {p: known[p] for p in next_offsets if p in known}
        folded, runs = time.monotonic(), len(writes)
        results = self._writer.apply(writes, pending, next_offsets, self.generation, undecodable, known_now)
        self._writer.count(writes, results)
        retries = [pending[i] for i, r in enumerate(results) if r == CONFLICT]
        self._writer.note_stored(writes, results)
        if retries:
            self.report.conflicts += len(retries)
            self._writer.check_not_lost([w for w, r in zip(writes, results, strict=True) if r == CONFLICT])
            for key, _ in retries:
                self._runs.forget(key[0])
            writes, pending = self._folder.fold(OrderedDict(retries), dead, None, known, strict=strict)
            dead.flush()
            results = self._writer.apply(writes, pending, next_offsets, self.generation, undecodable, known_now)
            self._writer.count(writes, results)
            if CONFLICT in results:
                raise StoreUnavailable("a run kept changing under us (is a second consumer writing this generation?)")
        self._checkpoints.written(next_offsets)
        self._dead_letters.batch_written(next_offsets)
        self.report.undecodable += sum(undecodable.values())
        if self.on_timing is not None or self.metrics is not None:
            timing = batch_timing(records, runs, poll_s, folded - began, time.monotonic() - folded, polled_ms)
            if self.on_timing is not None:
                self.on_timing(timing)
            if self.metrics is not None:
                self.metrics.batch(timing)
        self._kafka.commit(next_offsets)
        self._runs.evict()
