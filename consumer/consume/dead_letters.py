"""The dead-letter path: refused records go to the dead-letter topic once each, and records that fail for a
reason of their own (BadRecords) are isolated: one is dead-lettered when it is read again, the records of a
failed batch are read again one at a time until the one at fault shows itself (RULES.md §6)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from consumer.kafka_io import DeadLetterProducer, Record

__all__ = ["BadRecords", "DeadLetters", "describe"]

log = logging.getLogger("consumer.runner")  # the consume loop's lines keep the name they have always had


class BadRecords(Exception):
    """Records failed for a reason of their own while being folded or written (an exception from the fold, a
    value that cannot be encoded for Redis, a write script failing on them), not because Kafka or Redis is away.

    *spans* are (partition, first offset, last offset): one record, which is then dead-lettered, or several
    (a batch), which are then read again one record at a time to find the one at fault."""

    def __init__(self, reason: str, spans: list[tuple[int, int, int]]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.spans = spans


def describe(exc: BaseException) -> str:
    """An exception in one line of a few hundred characters at most (a UnicodeError's repr holds its whole
    text: a run's state)."""
    if isinstance(exc, UnicodeError):
        reason, start = getattr(exc, "reason", ""), getattr(exc, "start", "?")
        return f"{type(exc).__name__}: {reason} at position {start}"
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


class DeadLetters:
    """What this consumer dead-letters, and the records it isolates after a BadRecords.

    *on_sent(kind)* is called for each dead letter sent (the metrics' reason: refused, poisoned)."""

    def __init__(self, dead_letter_topic: str, on_sent: Callable[[str], None]) -> None:
        self.dead_letter_topic = dead_letter_topic
        self.on_sent = on_sent
        # records that failed on their own (BadRecords): (partition, offset) -> reason, dead-lettered when read
        # again; and partition -> last offset of a failed batch, read again one record at a time up to it
        self.poison: dict[tuple[int, int], str] = {}
        self.suspect: dict[int, int] = {}
        # dead letters sent for records whose batch has not been written yet: a batch that fails and is read
        # again does not send them twice (the run writes count them once either way)
        self.sent: set[tuple[int, int, str | None, str | None]] = set()

    def send(self, dead: DeadLetterProducer, record: Record, reason: str,
             extra: dict[str, str] | None = None, *, kind: str = "refused") -> None:
        """Send a refused record (or one event of it) to the dead letters, unless this process sent it already
        for a batch that then failed and is being read again. *kind*: the metrics' reason (refused, poisoned)."""
        key = (record.partition, record.offset, (extra or {}).get("item.index"), (extra or {}).get("seq"))
        if key not in self.sent:
            self.sent.add(key)
            dead.send(record, reason, extra)
            self.on_sent(kind)

    def batch_written(self, next_offsets: dict[int, int]) -> None:
        """Forget what a batch written up to *next_offsets* settled: its poisoned records were dead-lettered with
        it (Redis holds that now), and its dead letters will not be sent again."""
        if self.poison:
            for done in [k for k in self.poison if k[1] < next_offsets.get(k[0], -1)]:
                del self.poison[done]
        if self.sent:
            self.sent = {k for k in self.sent if k[1] >= next_offsets.get(k[0], -1)}

    def isolate(self, exc: BadRecords) -> None:
        """Remember what failed: one record is dead-lettered when it is read again; the records of a failed batch
        are read again one at a time, each written alone, so that the one at fault shows itself."""
        if len(exc.spans) == 1 and exc.spans[0][1] == exc.spans[0][2]:
            partition, offset, _ = exc.spans[0]
            self.poison[(partition, offset)] = f"refused: {exc.reason}"
            log.warning("record %d of partition %d cannot be folded or written (%s); it goes to %s and the stream "
                        "goes on", offset, partition, exc.reason, self.dead_letter_topic)
            return
        for partition, _, last in exc.spans:
            self.suspect[partition] = max(last, self.suspect.get(partition, last))
        log.warning("a batch failed for its records' sake (%s); reading partitions %s again one record at a time to "
                    "find the one at fault", exc.reason, sorted(p for p, _, _ in exc.spans))

    def process_one_by_one(self, records: list[Record], process_alone: Callable[[Record], None]) -> list[Record]:
        """Fold and write alone (*process_alone*) each record of a partition read again after a batch failed for
        its records' sake (up to that batch's last offset); return the other records, for a batch as usual."""
        rest: list[Record] = []
        for record in records:
            last = self.suspect.get(record.partition)
            if last is None or record.offset > last:
                rest.append(record)
                continue
            process_alone(record)
            if record.offset == last:
                del self.suspect[record.partition]
        return rest
