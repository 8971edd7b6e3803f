"""The group consumer: a consumer-group member on the event topic that never auto-commits and seeks where the
runner tells it (the Redis resume points); its polls are watched for stalls (stall_watchdog.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumer.kafka_io.stall_watchdog import STALL_LIMIT_S, StallWatchdog
from schemas.errors import BrokerUnavailable
from schemas.settings import Settings

__all__ = ["COMMIT_EVERY_S", "GroupConsumer", "Record"]

log = logging.getLogger("consumer.kafka_io")  # the package's lines keep the name they have always had

#: at most one (informational) offset commit request per this many seconds
COMMIT_EVERY_S = 1.0


class Record(NamedTuple):
    """One Kafka record as the runner sees it (no kafka-python types leak out of this package)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = -1  #: the record's Kafka timestamp (the producer's clock at send); -1 unknown


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: GroupConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.owner._revoked([tp.partition for tp in revoked if tp.topic == self.owner.topic])

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner._assigned([tp.partition for tp in assigned if tp.topic == self.owner.topic])


def _log_commit_failure(offsets: object, response: object) -> None:
    if isinstance(response, BaseException):
        log.warning("Kafka offset commit failed (%s); the Redis checkpoint still guards against doubles", response)



class GroupConsumer:
    """A consumer-group member on the event topic that never auto-commits and seeks where it is told.

    *on_assigned(partitions)* returns the next offset to read for each partition it knows (the Redis
    checkpoint); partitions it does not know start from the beginning of the log. *on_revoked(partitions)*
    lets the owner drop what it cached for them. With *group=False* the consumer is assigned every partition
    itself and commits nothing (replay).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_assigned: Callable[[list[int]], dict[int, int]],
        on_revoked: Callable[[list[int]], None],
        group: bool = True,
        max_record_bytes: int | None = None,
        client_id: str = "metricfold-consumer",
        stall_limit_s: float = STALL_LIMIT_S,
    ) -> None:
        self.topic = settings.topic
        self.group = group
        self._last_commit: dict[TopicPartition, OffsetAndMetadata] = {}
        self._next_commit_at = 0.0  # monotonic time of the next commit request (see commit)
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        del max_record_bytes  # a record larger than the fetch sizes is still returned whole (KIP-74)
        try:
            self._consumer = KafkaConsumer(
                **settings.kafka_options(),
                group_id=settings.group_id if group else None,
                client_id=client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # bounded fetches keep a poll's records (and the consumer's memory) small
                max_partition_fetch_bytes=4 * 1024 * 1024,
                fetch_max_bytes=16 * 1024 * 1024,
                fetch_max_wait_ms=100,
                max_poll_records=2000,
                max_poll_interval_ms=600000,
                session_timeout_ms=20000,
                heartbeat_interval_ms=3000,
                receive_buffer_bytes=4 * 1024 * 1024,
            )
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_display}: {exc}") from exc
        self._watchdog = StallWatchdog(self._consumer, self.lag, group=group, stall_limit_s=stall_limit_s)
        if group:
            # Load the topic's metadata before joining: a group leader without it assigns nobody anything.
            deadline = time.monotonic() + 30
            while not self._consumer.partitions_for_topic(self.topic):
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"topic {self.topic!r} has no partitions (does it exist? `metricfold topics`)")
                time.sleep(0.2)
            self._consumer.subscribe([self.topic], listener=_Listener(self))
            # Fetch metadata once more, now that we are subscribed: kafka-python's coordinator takes its snapshot
            # of the topic's partitions from a metadata update, and without one before the first join it assigns
            # from an empty snapshot, sees the partitions right after, and rebalances again at once. That second,
            # needless rebalance is where kafka-python 3.0.12 sometimes stalls (see stall_watchdog.UNSETTLED_LIMIT_S).
            try:
                self._consumer.topics()
            except KafkaError as exc:
                raise BrokerUnavailable(f"cannot read the topic metadata from Kafka at {settings.kafka_display}: {exc}") from exc
        else:
            partitions = sorted(self._consumer.partitions_for_topic(self.topic) or [])
            if not partitions:
                raise BrokerUnavailable(f"topic {self.topic!r} has no partitions (does it exist? `metricfold topics`)")
            self._consumer.assign([TopicPartition(self.topic, p) for p in partitions])
            self._assigned(partitions)

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def _assigned(self, partitions: list[int]) -> None:
        known = self._on_assigned(partitions)
        fresh = [self._tp(p) for p in partitions if p not in known]
        for partition in partitions:
            if partition in known:
                self._consumer.seek(self._tp(partition), known[partition])
        if fresh:
            self._consumer.seek_to_beginning(*fresh)
        log.info("assigned partitions %s (resuming from Redis checkpoints %s)", partitions, known)

    def _revoked(self, partitions: list[int]) -> None:
        log.info("partitions %s revoked", partitions)
        for partition in partitions:  # never commit (at close) for a partition another member may own now
            self._last_commit.pop(self._tp(partition), None)
        self._on_revoked(partitions)

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._consumer.assignment() if tp.topic == self.topic)

    def poll(self, timeout_ms: int = 500, max_records: int = 2000) -> list[Record]:
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise BrokerUnavailable(f"polling {self.topic!r} failed: {exc}") from exc
        if polled:
            self._watchdog.fetched()
        else:
            self._watchdog.fetched_nothing()
        records: list[Record] = []
        for tp, batch in sorted(polled.items(), key=lambda item: item[0].partition):
            records.extend(Record(tp.partition, r.offset, r.key, r.value, r.timestamp if isinstance(r.timestamp, int) else -1)
                           for r in batch)
        return records

    def seek(self, offsets: dict[int, int]) -> None:
        """Read each partition again from the given next offset (after a Redis failure, from its checkpoint)."""
        assigned = set(self.assignment())
        for partition, offset in offsets.items():
            if partition in assigned:
                self._consumer.seek(self._tp(partition), offset)
        rest = [self._tp(p) for p in assigned - offsets.keys()]
        if rest:
            self._consumer.seek_to_beginning(*rest)

    def commit(self, next_offsets: dict[int, int]) -> bool:
        """Commit to the group (informational: Redis holds the real checkpoint). Asynchronous, so a busy broker
        does not hold up the loop; a failure is logged when its reply comes. False when it could not be sent.
        At most one commit request per COMMIT_EVERY_S (a live consumer makes many small batches; each request is
        work for the broker too): the offsets of the batches in between go with the next one, or at close."""
        if not next_offsets or not self.group:
            return True
        self._last_commit.update({self._tp(p): OffsetAndMetadata(o, "", -1) for p, o in next_offsets.items()})
        now = time.monotonic()
        if now < self._next_commit_at:
            return True
        self._next_commit_at = now + COMMIT_EVERY_S
        offsets = dict(self._last_commit)
        try:
            self._consumer.commit_async(offsets, callback=_log_commit_failure)
            return True
        except (KafkaError, OSError) as exc:
            _log_commit_failure(offsets, exc)
            return False

    def lag(self, timeout_s: float | None = None) -> int | None:
        """Records between our position and the end of every assigned partition; None when nothing is assigned.
        *timeout_s*: how long the brokers have to answer (default: the client's request timeout, 30 s)."""
        partitions = [self._tp(p) for p in self.assignment()]
        if not partitions:
            return None
        try:
            ends = self._consumer.end_offsets(partitions, None if timeout_s is None else int(timeout_s * 1000))
            return int(sum(max(0, ends[tp] - self._consumer.position(tp)) for tp in partitions))
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read the end offsets of {self.topic!r}: {exc}") from exc

    def partition_lag(self, timeout_s: float | None = None) -> dict[int, int]:
        """Per assigned partition, the records between our position and its end offset (the metrics' lag gauge);
        empty when nothing is assigned. *timeout_s*: how long the brokers have to answer."""
        partitions = [self._tp(p) for p in self.assignment()]
        if not partitions:
            return {}
        try:
            timeout_ms = None if timeout_s is None else int(timeout_s * 1000)
            ends = self._consumer.end_offsets(partitions, timeout_ms)
            positions = {tp: self._consumer.position(tp, timeout_ms) for tp in partitions}
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read the end offsets of {self.topic!r}: {exc}") from exc
        # a partition whose position is not known yet (being reset) has no lag to show
        return {tp.partition: max(0, ends[tp] - position) for tp, position in positions.items() if position is not None}

    def reached(self, stop_at: dict[int, int]) -> bool:
        """True when every assigned partition's position is at or past its stop offset."""
        try:
            return all(self._consumer.position(self._tp(p)) >= stop_at.get(p, 0) for p in self.assignment())
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read positions on {self.topic!r}: {exc}") from exc

    def positions(self) -> dict[int, int]:
        return {p: self._consumer.position(self._tp(p)) for p in self.assignment()}

    def topic_end_offsets(self) -> dict[int, int]:
        """The end offset of every partition of the topic, assigned to us or not."""
        try:
            partitions = [self._tp(p) for p in sorted(self._consumer.partitions_for_topic(self.topic) or [])]
            return {tp.partition: off for tp, off in self._consumer.end_offsets(partitions).items()}
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read the end offsets of {self.topic!r}: {exc}") from exc

    def close(self) -> None:
        """Commit the last offsets synchronously (best effort), then leave the group."""
        if self.group and self._last_commit:
            try:
                self._consumer.commit(dict(self._last_commit))
            except (KafkaError, OSError) as exc:
                log.info("the last offset commit failed (%s); Redis holds the checkpoint", exc)
        self._consumer.close(autocommit=False)
