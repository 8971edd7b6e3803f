"""The SDK's only Kafka adapter: an idempotent, acks=all KafkaProducer keyed by run path.

kafka-python's exceptions never leave this module: connecting raises BrokerUnavailable, and a send whose
delivery failed reports the error through ``Delivery.error``.

Compression: none by default. kafka-python compresses gzip at level 9, which on our float columns costs
~38 µs per event (measured; more than the whole log() budget) for a ~20% saving; lz4/zstd/snappy need
extra packages. Set ``METRICFOLD_KAFKA_COMPRESSION`` (gzip|lz4|zstd|snappy) to trade CPU for bytes.
kafka-python also computes CRC-32C of each record batch in pure Python unless the ``crc32c`` package is
installed (12 ms per MB without it).

One KafkaProducer serves every open run of a process that has the same settings (a sweep may hold 50 runs
open at once; a producer each would mean 50 I/O threads and 50 sets of broker connections). Each run keeps
its own producer id and seq; the shared producer is closed when its last run closes its transport.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import time
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError, UnknownTopicOrPartitionError
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.producer.future import FutureRecordMetadata

from schemas.errors import BrokerUnavailable, ConfigError
from schemas.limits import Limits
from schemas.settings import Settings

__all__ = ["Delivery", "KafkaTransport"]

_COMPRESSIONS = ("gzip", "lz4", "zstd", "snappy")


@dataclasses.dataclass
class _Shared:
    producer: KafkaProducer
    users: int


#: (pid, options) -> the process's producer for those options; the pid keeps a forked child off its parent's
_SHARED: dict[tuple[int, str], _Shared] = {}
_SHARED_LOCK = threading.Lock()
#: (pid, options) -> (when, why) the brokers last could not be reached. One thread delivers for every run of
#: a process (producer/sender.py), so without this each run of a process whose brokers do not answer would
#: wait its own connect timeout in turn; for one connect timeout after a failure the others fail at once.
_UNREACHABLE: dict[tuple[int, str], tuple[float, str]] = {}


class _RunPartitioner(DefaultPartitioner):  # type: ignore[misc]  # kafka-python has no type hints
    """kafka-python's default partitioner (murmur2 of the key, as the Java client: a run's partition is the
    same from any client), with each key's hash remembered: a process sends the same few run paths all the
    time, and murmur2 in pure Python was ~5% of a trainer's CPU under load."""

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any,
                  cluster: Any) -> int:
        partitions = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if not partitions:  # no key, or no metadata for the topic: the default's behaviour and errors
            return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
        assert serialized_key is not None
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= 65536:  # run paths come and go: start over rather than grow
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        ordered = sorted(partitions)
        return int(ordered[hashed % len(ordered)])


_PARTITIONER = _RunPartitioner()  # one object, so the options (and the shared producer) stay the same


#: what to do when the topic is missing (Kafka here never creates topics on first use)
_CREATE_TOPIC = "create it with `metricfold topics` (with the same --kafka and --topic, or METRICFOLD_TOPIC)"


class Delivery:
    """One record handed to Kafka: ``done`` once acknowledged or failed; ``error`` says why it failed."""

    __slots__ = ("_future", "_refused", "_too_large")

    def __init__(self, future: FutureRecordMetadata | None, refused: str | None = None, too_large: bool = False) -> None:
        self._future = future
        self._refused = refused  #: why the record was not even handed over (future None)
        self._too_large = too_large

    @property
    def record_too_large(self) -> bool:
        """Whether this record failed for its size (the client's or the broker's limit), not for Kafka's state."""
        if self._future is None or not self._future.is_done:
            return self._too_large
        return isinstance(self._future.exception, (MessageSizeTooLargeError, RecordListTooLargeError))

    @property
    def done(self) -> bool:
        return self._future is None or bool(self._future.is_done)

    @property
    def error(self) -> str | None:
        if self._future is None:
            return self._refused or "not sent"
        if not self._future.is_done:
            return None
        exc = self._future.exception
        if isinstance(exc, UnknownTopicOrPartitionError):
            return f"{type(exc).__name__}: {exc}: the topic does not exist (any more); {_CREATE_TOPIC}"
        return None if exc is None else f"{type(exc).__name__}: {exc}"

    @property
    def ok(self) -> bool:
        return self._future is not None and bool(self._future.is_done) and self._future.exception is None


class KafkaTransport:
    """Sends (key, value) records to the settings' topic; connect() blocks up to ``connect_timeout_s``."""

    def __init__(self, settings: Settings, limits: Limits, *, connect_timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.limits = limits
        self.connect_timeout_s = connect_timeout_s
        self._producer: KafkaProducer | None = None
        self._shared_key: tuple[int, str] | None = None

    def options(self) -> dict[str, Any]:
        compression = os.environ.get("METRICFOLD_KAFKA_COMPRESSION", "").strip().lower() or None
        if compression not in (None, "none", *_COMPRESSIONS):
            raise ConfigError(f"METRICFOLD_KAFKA_COMPRESSION must be one of none, {', '.join(_COMPRESSIONS)}")
        record_limit = self.limits.kafka_max_record_bytes
        return {
            **self.settings.kafka_options(),
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": None if compression == "none" else compression,
            "linger_ms": 5,  # the runs of a process seal on the same tick: one request for all
            "batch_size": 1024 * 1024,
            "max_request_size": record_limit,
            "bootstrap_timeout_ms": int(self.connect_timeout_s * 1000),
            "max_block_ms": 10_000,
            "request_timeout_ms": 10_000,
            "delivery_timeout_ms": 30_000,
            "reconnect_backoff_max_ms": 2_000,
            "metrics_enabled": False,
            "partitioner": _PARTITIONER,
        }

    def connect(self) -> None:
        """Connect to the brokers; raise BrokerUnavailable if none answers in time."""
        if self._producer is not None:
            return
        options = self.options()
        key = (os.getpid(), repr(sorted(options.items())))
        with _SHARED_LOCK:
            shared = _SHARED.get(key)
            if shared is not None:
                shared.users += 1
                self._producer, self._shared_key = shared.producer, key
                return
            failed = _UNREACHABLE.get(key)
        if failed is not None and time.monotonic() - failed[0] < self.connect_timeout_s:
            raise BrokerUnavailable(f"{failed[1]} (found {time.monotonic() - failed[0]:.0f} s ago)")
        try:
            self._probe()
            try:
                producer = KafkaProducer(**options)
            except KafkaError as exc:
                raise BrokerUnavailable(f"Kafka at {self.settings.kafka_display} is unreachable: {exc}") from exc
            except OSError as exc:  # pragma: no cover - DNS and socket errors outside kafka-python's mapping
                raise BrokerUnavailable(f"Kafka at {self.settings.kafka_display} is unreachable: {exc}") from exc
        except BrokerUnavailable as exc:
            with _SHARED_LOCK:
                _UNREACHABLE[key] = (time.monotonic(), str(exc))
            raise
        with _SHARED_LOCK:
            _UNREACHABLE.pop(key, None)
        # kafka-python closes every producer at exit with a 1 s timeout, in an atexit hook registered after
        # ours (so it would run first): we close ours ourselves, after finishing the open runs.
        unregister = getattr(producer, "_unregister_cleanup", None)
        if callable(unregister):
            unregister()
        with _SHARED_LOCK:
            shared = _SHARED.get(key)
            if shared is None:
                _SHARED[key] = _Shared(producer, 1)
            else:  # another run connected meanwhile: use its producer
                shared.users += 1
                with contextlib.suppress(KafkaError):
                    producer.close(timeout=0, null_logger=True)
                producer = shared.producer
        self._producer, self._shared_key = producer, key

    def _probe(self) -> None:
        """Fail fast (and without kafka-python, which leaks a socket pair when its bootstrap fails) if no
        bootstrap server accepts a TCP connection."""
        errors = []
        for server in self.settings.kafka.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "localhost", int(port)), self.connect_timeout_s):
                    return
            except (OSError, ValueError) as exc:
                errors.append(f"{server.strip()}: {exc}")
        raise BrokerUnavailable(f"Kafka at {self.settings.kafka_display} is unreachable ({'; '.join(errors)})")

    def send(self, key: bytes, value: bytes) -> Delivery:
        """Hand one record to the producer; the returned Delivery tells whether it was acknowledged."""
        if self._producer is None:
            self.connect()
        assert self._producer is not None
        try:
            return Delivery(self._producer.send(self.settings.topic, key=key, value=value))
        except KafkaError as exc:
            return Delivery(None, self._not_sent(exc), isinstance(exc, MessageSizeTooLargeError))

    def _not_sent(self, exc: KafkaError) -> str:
        """Why send() refused a record: most often (a KafkaTimeoutError after max_block_ms) because the brokers
        answer but their metadata has no such topic."""
        if self._topic_missing():
            return f"topic {self.settings.topic!r} does not exist on Kafka at {self.settings.kafka_display}: {_CREATE_TOPIC}"
        return f"not sent: {type(exc).__name__}: {exc}"

    def _topic_missing(self) -> bool:
        """Whether the brokers answered metadata requests that lack the topic (kafka-python keeps no public
        record of that: its cluster metadata has brokers, and no partitions for the topic)."""
        metadata = getattr(self._producer, "_metadata", None)
        try:
            return bool(metadata.brokers()) and metadata.partitions_for_topic(self.settings.topic) is None  # type: ignore[union-attr]
        except AttributeError:  # pragma: no cover - another kafka-python layout: say only what we know
            return False

    def flush(self, timeout_s: float | None) -> None:
        """Wait until every record handed over so far is acknowledged or failed (or the timeout passes)."""
        if self._producer is None:
            return
        with contextlib.suppress(KafkaError):  # the Deliveries say which records did not make it
            self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 0.0) -> None:
        """Let go of the shared producer; the last run to let go closes it (waiting up to *timeout_s*)."""
        producer, self._producer = self._producer, None
        key, self._shared_key = self._shared_key, None
        if producer is None or key is None:
            return
        with _SHARED_LOCK:
            shared = _SHARED.get(key)
            if shared is not None and shared.producer is producer:
                shared.users -= 1
                if shared.users > 0:
                    return
                del _SHARED[key]
        if producer is not None:
            with contextlib.suppress(KafkaError):  # closing is best effort
                producer.close(timeout=timeout_s, null_logger=True)
