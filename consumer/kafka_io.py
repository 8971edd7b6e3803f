"""The consumer side's only door to Kafka: topic administration (and, in the runner, the group consumer).

kafka-python's exceptions are mapped to ours (BrokerUnavailable, ConfigError) here, so nothing else in
`consumer` imports `kafka`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import AuthorizationError, KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from schemas.errors import BrokerUnavailable, ConfigError
from schemas.limits import Limits
from schemas.settings import Settings
from schemas.text import printable

__all__ = [
    "DeadLetterProducer",
    "GroupConsumer",
    "Record",
    "delete_topics",
    "ensure_topics",
    "event_topic_config",
    "first_offsets",
    "offsets_for_time",
    "replication_plan",
    "topic_config",
    "topic_partitions",
]

log = logging.getLogger(__name__)


class _MaskSaslPassword(logging.Filter):
    """kafka-python's admin client logs its whole configuration at DEBUG, the SASL password with it: masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping) and record.args.get("sasl_plain_password"):
            record.args = {**record.args, "sasl_plain_password": "***"}
        return True


logging.getLogger("kafka.admin.client").addFilter(_MaskSaslPassword())

#: Dead letters are kept for 30 days: long enough to look at them, short enough not to grow forever.
DEAD_LETTER_RETENTION_MS = 30 * 24 * 3600 * 1000


def event_topic_config(limits: Limits) -> dict[str, str]:
    """The event topic is the source of truth: never deleted by time or size; fits the largest tensor."""
    return {
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "cleanup.policy": "delete",
        "max.message.bytes": str(limits.kafka_max_record_bytes),
    }


def dead_letter_topic_config(limits: Limits) -> dict[str, str]:
    return {
        "retention.ms": str(DEAD_LETTER_RETENTION_MS),
        "cleanup.policy": "delete",
        # a dead letter carries the original record's bytes plus headers
        "max.message.bytes": str(limits.kafka_max_record_bytes + 1024 * 1024),
    }


def replication_plan(brokers: int, wanted: int | None = None) -> tuple[int, dict[str, str]]:
    """The replication factor of a new topic on a cluster of *brokers* brokers, and the topic settings that go
    with it. *wanted* (METRICFOLD_REPLICATION_FACTOR) wins; by default min(3, brokers). With 3 replicas or more a
    write needs 2 of them in sync (acks=all), so one broker can be lost without losing an acknowledged record or
    refusing writes; below that, 1. An out-of-sync replica never becomes leader (no unclean election)."""
    if wanted is not None and wanted > brokers:
        raise ConfigError(
            f"replication factor {wanted} (METRICFOLD_REPLICATION_FACTOR) needs {wanted} Kafka brokers, but the cluster "
            f"has {brokers}: set it to {brokers} or less, or unset it to follow the cluster"
        )
    factor = wanted if wanted is not None else max(1, min(3, brokers))
    return factor, {
        "min.insync.replicas": "2" if factor >= 3 else "1",
        "unclean.leader.election.enable": "false",
    }


@contextmanager
def _admin(settings: Settings) -> Iterator[KafkaAdminClient]:
    try:
        admin = KafkaAdminClient(**settings.kafka_options(), client_id="metricfold-admin", request_timeout_ms=30000)
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_display}: {exc}") from exc
    try:
        yield admin
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {settings.kafka_display} refused an admin request: {exc}") from exc
    finally:
        admin.close()


def ensure_topics(settings: Settings, limits: Limits | None = None) -> list[str]:
    """Create the event topic and its dead-letter topic if missing; return the names created. Their replication
    follows the cluster (replication_plan) unless settings.replication_factor says otherwise."""
    limits = limits or Limits.from_env()
    created: list[str] = []
    with _admin(settings) as admin:
        existing = set(admin.list_topics())
        if {settings.topic, settings.dead_letter_topic} <= existing:
            return created
        factor, replication = replication_plan(len(admin.describe_cluster()["brokers"]), settings.replication_factor)
        wanted = [
            NewTopic(settings.topic, settings.partitions, factor, topic_configs={**event_topic_config(limits), **replication}),
            NewTopic(
                settings.dead_letter_topic,
                min(settings.partitions, 3),
                factor,
                topic_configs={**dead_letter_topic_config(limits), **replication},
            ),
        ]
        for topic in wanted:
            if topic.name in existing:
                continue
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:  # another process won the race
                continue
            created.append(topic.name)
            log.info("created topic %s (%d partitions, replication factor %d)", topic.name, topic.num_partitions, factor)
        if created:
            admin.wait_for_topics(created, timeout_ms=30000)
    return created


def topic_config(settings: Settings, topic: str) -> dict[str, str]:
    """The topic's non-default settings, as the broker reports them."""
    with _admin(settings) as admin:
        described: dict[str, Any] = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return {key: entry["value"] for key, entry in described["topic"][topic].items()}


def topic_partitions(settings: Settings, topic: str) -> int:
    with _admin(settings) as admin:
        (description,) = admin.describe_topics([topic])
    return len(description["partitions"])


def delete_topics(settings: Settings, topics: list[str]) -> None:
    with _admin(settings) as admin:
        existing = set(admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            admin.delete_topics(doomed)


class Record(NamedTuple):
    """One Kafka record as the runner sees it (no kafka-python types leak out of this module)."""

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


class ConsumerStalled(BrokerUnavailable):
    """The group membership did not settle in time: the client must be closed and made anew."""


#: kafka-python 3.0.12 can stop midway through a rebalance (joined, then never handles the SyncGroup reply),
#: spinning without error and never fetching again (seen under load and in chaos runs). A member that has
#: not been stable for this long (the session timeout is 20 s) gives up its client and starts over.
UNSETTLED_LIMIT_S = 30.0
#: a member that holds partitions with records to read but fetches nothing for this long (its broker stopped
#: answering, or the client stopped asking) gives up its client and starts over from the Redis checkpoints;
#: `metricfold consume --stall-timeout` sets it
STALL_LIMIT_S = 30.0
#: how often a member that fetches nothing asks for the end offsets (is there anything to read?) past the limit,
#: and how long the brokers have to answer that
STALL_CHECK_EVERY_S = 5.0
STALL_CHECK_TIMEOUT_S = 10.0
#: at most one (informational) offset commit request per this many seconds
COMMIT_EVERY_S = 1.0


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
        self._unsettled_since: float | None = None
        self.stall_limit_s = stall_limit_s
        self._idle_since: float | None = None  # monotonic time since which polls returned nothing
        self._waiting_since: float | None = None  # ... and since which records were seen waiting
        self._next_stall_check = 0.0
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
            # needless rebalance is where kafka-python 3.0.12 sometimes stalls (see UNSETTLED_LIMIT_S).
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
            self._idle_since = self._waiting_since = None
        else:
            if self.group:
                self._check_settled()
            self._check_fetching()
        records: list[Record] = []
        for tp, batch in sorted(polled.items(), key=lambda item: item[0].partition):
            records.extend(Record(tp.partition, r.offset, r.key, r.value, r.timestamp if isinstance(r.timestamp, int) else -1)
                           for r in batch)
        return records

    def _check_settled(self) -> None:
        """Raise ConsumerStalled when the group membership has not been stable for UNSETTLED_LIMIT_S."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        stable = getattr(coordinator, "stable", None)
        if not callable(stable):  # another kafka-python: nothing to watch
            return
        if stable() and not getattr(coordinator, "rejoin_needed", False):
            self._unsettled_since = None
            return
        now = time.monotonic()
        if self._unsettled_since is None:
            self._unsettled_since = now
        elif now - self._unsettled_since > UNSETTLED_LIMIT_S:
            self._unsettled_since = None
            raise ConsumerStalled(
                f"the consumer group membership has not settled for {UNSETTLED_LIMIT_S:.0f} s (a stalled rebalance); "
                "starting over with a new Kafka client"
            )

    def _check_fetching(self) -> None:
        """Raise ConsumerStalled when polls have returned nothing for stall_limit_s and either the brokers do not
        answer an end-offsets request within STALL_CHECK_TIMEOUT_S, or records have waited in the assigned
        partitions (end offset past our position) for STALL_CHECK_EVERY_S without one being fetched."""
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
            return
        idle = now - self._idle_since
        if idle < self.stall_limit_s or now < self._next_stall_check:
            return
        try:
            lag = self.lag(timeout_s=STALL_CHECK_TIMEOUT_S)
        except BrokerUnavailable as exc:
            idle = time.monotonic() - self._idle_since
            self._idle_since = self._waiting_since = None
            raise ConsumerStalled(f"fetched nothing for {idle:.0f} s and the brokers do not answer ({exc}); "
                                  "starting over with a new Kafka client") from exc
        now = time.monotonic()
        self._next_stall_check = now + STALL_CHECK_EVERY_S
        if not lag:
            self._waiting_since = None
        elif self._waiting_since is None:  # seen once: it may be on its way; if it still waits next time, it is not
            self._waiting_since = now
        else:
            waited, idle = now - self._waiting_since, now - self._idle_since
            self._idle_since = self._waiting_since = None
            raise ConsumerStalled(f"fetched nothing for {idle:.0f} s although {lag} records have waited in the assigned "
                                  f"partitions for {waited:.0f} s; starting over with a new Kafka client")

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


def first_offsets(settings: Settings) -> dict[int, tuple[int, int]]:
    """(first available offset, end offset) of every partition of the event topic."""
    consumer = KafkaConsumer(**settings.kafka_options(), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in sorted(consumer.partitions_for_topic(settings.topic) or [])]
        starts = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
        return {tp.partition: (starts[tp], ends[tp]) for tp in partitions}
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read the offsets of {settings.topic!r}: {exc}") from exc
    finally:
        consumer.close()


def offsets_for_time(settings: Settings, timestamp_ms: int) -> dict[int, int]:
    """Per partition, the offset of the first record at or after *timestamp_ms* (the end offset if none)."""
    consumer = KafkaConsumer(**settings.kafka_options(), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in sorted(consumer.partitions_for_topic(settings.topic) or [])]
        found = consumer.offsets_for_times({tp: timestamp_ms for tp in partitions})
        ends = consumer.end_offsets(partitions)
        return {tp.partition: (found[tp].offset if found.get(tp) else ends[tp]) for tp in partitions}
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot look up offsets by time on {settings.topic!r}: {exc}") from exc
    finally:
        consumer.close()


class DeadLetterProducer:
    """Sends refused records, with their original bytes and the reason in headers, to `<topic>.dlq`.

    A broker that refuses the writes (no ACL lets this Kafka user WRITE the dead-letter topic) is a setting to
    fix, not an outage to wait out: that raises ConfigError, which stops the consumer with the reason, instead of
    the retries from the Redis checkpoint that BrokerUnavailable gets.

    *publish=False* (a replay) sends nothing and only logs each refused record: the live consumer dead-lettered
    those records when it folded them, so a replay, which reads the same topic again, would send them twice, and
    its Kafka user may only read (the replay role)."""

    def __init__(self, settings: Settings, limits: Limits | None = None, *, publish: bool = True) -> None:
        self.topic = settings.dead_letter_topic
        self.source_topic = settings.topic
        self.user = settings.kafka_sasl_username
        self._pending: list[Any] = []
        self._producer: KafkaProducer | None = None
        if not publish:
            return
        limit = (limits or Limits()).kafka_max_record_bytes + 1024 * 1024
        try:
            self._producer = KafkaProducer(
                **settings.kafka_options(),
                acks="all",
                linger_ms=5,
                max_request_size=limit,
                compression_type="gzip",
                client_id="metricfold-dead-letters",
            )
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"cannot reach Kafka at {settings.kafka_display}: {exc}") from exc

    def send(self, record: Record, reason: str, extra: dict[str, str] | None = None) -> None:
        if self._producer is None:
            log.info("record %d of partition %d is refused (%s); not sent again to %s", record.offset, record.partition,
                     printable(reason[:300]), self.topic)
            return
        headers = [
            ("reason", reason.encode("utf-8", "replace")[:4000]),
            ("source.topic", self.source_topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        headers += [(k, v.encode("utf-8", "replace")) for k, v in (extra or {}).items()]
        try:
            self._pending.append(self._producer.send(self.topic, key=record.key, value=record.value or b"", headers=headers))
        except AuthorizationError as exc:
            raise self._refused(exc) from exc

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every dead letter sent so far is acknowledged; raise BrokerUnavailable if one is not, or
        ConfigError if the broker refused them (see the class)."""
        if not self._pending or self._producer is None:
            return
        try:
            self._producer.flush(timeout=timeout_s)
            for future in self._pending:
                future.get(timeout=timeout_s)
        except AuthorizationError as exc:
            raise self._refused(exc) from exc
        except KafkaError as exc:
            raise BrokerUnavailable(f"dead letters could not be written to {self.topic!r}: {exc}") from exc
        finally:
            self._pending.clear()

    def _refused(self, exc: AuthorizationError) -> ConfigError:
        who = f"the Kafka user {self.user!r}" if self.user else "this Kafka client"
        return ConfigError(f"the broker refused {who} the dead-letter topic {self.topic!r} ({exc}): a consumer needs an "
                           f"ACL that allows it to WRITE that topic (the consumer role of README's \"Running it "
                           f"secured\"); it stopped rather than skip a record it could not fold")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
