"""The dead-letter topic's producer: refused records, with their original bytes and the reason in headers."""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaProducer
from kafka.errors import AuthorizationError, KafkaError

from consumer.kafka_io.group import Record
from schemas.errors import BrokerUnavailable, ConfigError
from schemas.limits import Limits
from schemas.settings import Settings
from schemas.text import printable

__all__ = ["DeadLetterProducer"]

log = logging.getLogger("consumer.kafka_io")  # the package's lines keep the name they have always had


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
