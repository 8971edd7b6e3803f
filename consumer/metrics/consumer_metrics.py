"""The consumer's metrics and health (`metricfold consume --metrics-port`): ConsumerMetrics.

The consumer's figures come from small calls in consumer/runner.py, made per batch or per event of note (a
rebalance, a dead letter, an error), never per record; `ConsumerMetrics.tick` runs once per turn of the loop,
in the loop's thread: it copies the ConsumeReport's counts into the counters and, at most every LAG_EVERY_S,
asks Kafka for the lag of the assigned partitions (kafka-python is not thread-safe, so the HTTP thread never
touches the client: it answers from what the last tick left, `health` and `readiness`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from schemas.errors import BrokerUnavailable, ConfigError

if TYPE_CHECKING:
    from consumer.consume.report import BatchTiming, ConsumeReport
    from consumer.kafka_io import GroupConsumer

__all__ = ["ALIVE_WITHIN_S", "LAG_EVERY_S", "READY_MAX_LAG", "ConsumerMetrics"]

log = logging.getLogger("consumer.metrics")  # the package's lines keep the name they have always had

#: the consume loop counts as alive while it went round within this many seconds (a poll waits 200 ms at most;
#: Kafka requests time out after 30 s, Redis retries back off up to 10 s)
ALIVE_WITHIN_S = 60.0
#: the lag of the assigned partitions is asked for at most this often (one end-offsets request), and at the next
#: turn of the loop after a rebalance
LAG_EVERY_S = 5.0
#: how long the brokers have to answer that request (the loop waits meanwhile); past it the lag is unknown, the
#: consumer not ready, and the lag is asked for again after LAG_RETRY_S (or at the next rebalance or new client)
LAG_TIMEOUT_S = 2.0
LAG_RETRY_S = 30.0
#: /readyz's default threshold (`--ready-max-lag`): records waiting in the member's partitions, in all
READY_MAX_LAG = 10_000

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class ConsumerMetrics:
    """The metrics of one consumer process, and its health; `Consumer.metrics = ConsumerMetrics(topic)`."""

    def __init__(self, topic: str, *, ready_max_lag: int = READY_MAX_LAG, lag_every_s: float = LAG_EVERY_S,
                 alive_within_s: float = ALIVE_WITHIN_S) -> None:
        if ready_max_lag < 0:
            raise ConfigError(f"--ready-max-lag must be 0 or more records, got {ready_max_lag}")
        self.topic = topic
        self.ready_max_lag = ready_max_lag
        self.lag_every_s = lag_every_s
        self.alive_within_s = alive_within_s
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.records = Counter("metricfold_records_folded", "Kafka records read and folded (undecodable ones included)",
                               registry=r)
        self.events = Counter("metricfold_events_folded", "Events applied to the run views (as Redis counts them)",
                              registry=r)
        self.batches = Counter("metricfold_batches", "Batches (polls with records) folded", registry=r)
        self.dead_letters = Counter("metricfold_dead_letters", "Records or events sent to the dead-letter topic, by "
                                    "reason: undecodable (not an event), refused (by the fold), poisoned (failed the "
                                    "fold or the write on its own)", ["reason"], registry=r)
        self.conflicts = Counter("metricfold_write_conflicts", "Run writes refused because Redis held another "
                                 "applied offset (the batch is folded again)", registry=r)
        self.batch_seconds = Histogram("metricfold_batch_duration_seconds", "Where a batch's time went: poll (waiting "
                                       "for records), fold (decode, fold, dead letters), redis (the round trip)",
                                       ["stage"], buckets=_DURATION_BUCKETS, registry=r)
        self.freshness = Histogram("metricfold_freshness_seconds", "Per batch: from its oldest record's Kafka "
                                   "timestamp (the producer's clock at send) until the batch was written to Redis",
                                   buckets=_FRESHNESS_BUCKETS, registry=r)
        self.lag = Gauge("metricfold_partition_lag", "Records between the consumer's position and the end of an "
                         "assigned partition (measured every few seconds)", ["topic", "partition"], registry=r)
        self.assigned = Gauge("metricfold_assigned_partitions", "Partitions assigned to this consumer", registry=r)
        self.ready = Gauge("metricfold_ready", "1 when /readyz says ready (at the last lag measurement), else 0",
                           registry=r)
        self.rebalances = Counter("metricfold_rebalances", "Partition assignments and revocations seen",
                                  ["kind"], registry=r)
        self.rebuilds = Counter("metricfold_kafka_client_rebuilds", "Kafka clients closed and made anew (a stall, "
                                "a broker away)", registry=r)
        self.redis_errors = Counter("metricfold_redis_errors", "Redis failures the consumer resumed from", registry=r)
        self.kafka_errors = Counter("metricfold_kafka_errors", "Kafka failures the consumer resumed from", registry=r)
        self.state_bytes = Counter("metricfold_state_bytes_written", "Bytes of run fold states written to Redis",
                                   registry=r)
        self.last_loop = Gauge("metricfold_last_loop_timestamp_seconds", "Unix time the consume loop last went round",
                               registry=r)
        for reason in ("undecodable", "refused", "poisoned"):
            self.dead_letters.labels(reason)  # shown as 0 before the first one
        for kind in ("assigned", "revoked"):
            self.rebalances.labels(kind)
        self._stages = tuple(self.batch_seconds.labels(stage) for stage in ("poll", "fold", "redis"))
        self._undecodable = self.dead_letters.labels("undecodable")
        self._seen = (0, 0, 0, 0, 0, 0)  # the report's counts already added to the counters
        self._clients = 0
        self._lag_at = 0.0  # monotonic time of the next lag measurement
        self._lag_partitions: set[int] = set()
        self._tick_at = time.monotonic()  # the loop counts as alive from the start
        self._rebalanced_at = 0.0  # monotonic time of the last assignment change
        self._measured_at: float | None = None  # monotonic time of the last lag measurement
        #: (ready, reason, detail), replaced whole by the loop thread, read by the HTTP thread
        self._readiness: tuple[bool, str, dict[str, Any]] = (False, "no partitions assigned yet", {})

    # ------------------------------------------------------------------ calls from the runner
    def tick(self, report: ConsumeReport, kafka: GroupConsumer | None) -> None:
        """Once per turn of the consume loop: the report's counts into the counters, and now and then the lag."""
        now = time.monotonic()
        self._tick_at = now
        self.last_loop.set(time.time())
        seen = (report.records, report.events_applied, report.undecodable, report.batches, report.conflicts,
                report.redis_failures)
        if seen != self._seen:
            old = self._seen
            self._seen = seen
            self.records.inc(seen[0] - old[0])
            self.events.inc(seen[1] - old[1])
            self._undecodable.inc(seen[2] - old[2])
            self.batches.inc(seen[3] - old[3])
            self.conflicts.inc(seen[4] - old[4])
            self.redis_errors.inc(seen[5] - old[5])
        if now >= self._lag_at:
            self._lag_at = now + self.lag_every_s
            self._measure_lag(kafka, now)

    def batch(self, timing: BatchTiming) -> None:
        """One written batch's durations and freshness."""
        poll, fold, redis = self._stages
        poll.observe(timing.poll_ms / 1000.0)
        fold.observe(timing.fold_ms / 1000.0)
        redis.observe(timing.redis_ms / 1000.0)
        if timing.oldest_age_ms is not None:
            readable_ms = timing.oldest_age_ms + timing.fold_ms + timing.redis_ms
            self.freshness.observe(max(0.0, readable_ms / 1000.0))

    def rebalanced(self, kind: str, partitions: list[int]) -> None:
        """*kind*: "assigned" or "revoked"; the lag is measured again at the next turn of the loop."""
        self.rebalances.labels(kind).inc()
        self._rebalanced_at = time.monotonic()
        self._lag_at = 0.0

    def dead_letter(self, reason: str, count: int = 1) -> None:
        self.dead_letters.labels(reason).inc(count)

    def kafka_client_made(self) -> None:
        """A Kafka client was made: every one after the first is a rebuild."""
        self._clients += 1
        if self._clients > 1:
            self.rebuilds.inc()
        self._lag_at = 0.0

    def kafka_error(self) -> None:
        self.kafka_errors.inc()

    def state_written(self, size: int) -> None:
        self.state_bytes.inc(size)

    # ------------------------------------------------------------------ lag and readiness
    def _measure_lag(self, kafka: GroupConsumer | None, now: float) -> None:
        if kafka is None:
            self._set_lag({})
            self._readiness = (False, "no Kafka client (one is being made)", {})
            self.ready.set(0)
            return
        try:
            lags = kafka.partition_lag(timeout_s=LAG_TIMEOUT_S)
        except BrokerUnavailable as exc:  # not the loop's business: the lag is unknown until the next try
            log.info("the lag could not be measured: %s", exc)
            self._readiness = (False, f"the lag could not be measured: {exc}", {})
            self.ready.set(0)
            self._lag_at = now + max(self.lag_every_s, LAG_RETRY_S)
            return
        self._set_lag(lags)
        total = sum(lags.values())
        detail: dict[str, Any] = {"partitions": sorted(lags), "lag": total, "max_lag": self.ready_max_lag}
        if not lags:
            self._readiness = (False, "no partitions assigned", detail)
        elif self._rebalanced_at > now:  # assigned again while measuring
            self._readiness = (False, "partitions were assigned again; measuring their lag", detail)
        elif total > self.ready_max_lag:
            self._readiness = (False, f"lag {total} records is over {self.ready_max_lag} (--ready-max-lag)", detail)
        else:
            self._readiness = (True, "partitions assigned and caught up", detail)
        self._measured_at = now
        self.ready.set(1 if self._readiness[0] else 0)

    def _set_lag(self, lags: dict[int, int]) -> None:
        for gone in self._lag_partitions - lags.keys():
            self.lag.remove(self.topic, str(gone))
        for partition, lag in lags.items():
            self.lag.labels(self.topic, str(partition)).set(lag)
        self._lag_partitions = set(lags)
        self.assigned.set(len(lags))

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of /healthz."""
        silent = time.monotonic() - self._tick_at
        alive = silent <= self.alive_within_s
        body: dict[str, Any] = {"alive": alive, "last_loop_seconds_ago": round(silent, 3)}
        if not alive:
            body["reason"] = f"the consume loop has not gone round for {silent:.0f} s (limit {self.alive_within_s:.0f} s)"
        return (200 if alive else 503), body

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of /readyz; a consumer whose loop is not alive, or whose lag was last measured
        more than 3 intervals (and at least 30 s) ago, is not ready either."""
        ready, reason, detail = self._readiness
        status, health = self.health()
        measured = self._measured_at
        stale = measured is None or time.monotonic() - measured > max(30.0, 3 * self.lag_every_s)
        if status != 200:
            ready, reason = False, health["reason"]
        elif ready and stale:
            ready, reason = False, "the lag has not been measured lately"
        return (200 if ready else 503), {"ready": ready, "reason": reason, **detail}
