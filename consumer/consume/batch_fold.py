"""Folding a batch: its records are grouped by run and partition (their key is the run path), decoded one at a
time and folded into the run's cached state, and each group becomes that run's write (its changed views, events
and dead letters, offsets).

A record the stored state holds is skipped; one the views hold but the cached state does not (read again after a
restart, the state being stored less often than the views) is folded into the state only. A record found at fault
before (DeadLetters.poison) is dead-lettered instead of folded, and the run's write moves its applied offset over
it, so that it is counted once. An exception from the fold other than a refusal raises BadRecords: the state may
be half-changed, so the consumer starts over from Redis.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from typing import Any

from consumer.consume.dead_letters import BadRecords, DeadLetters, describe
from consumer.consume.run_cache import CachedRun, Pending, RunCache
from consumer.consume.run_paths import joined_path, key_path, run_path_of
from consumer.fold import events_applied, fold_record, take_changes
from consumer.fold.merge import merge_log_records
from consumer.kafka_io import DeadLetterProducer, Record
from consumer.resume import first_delivery
from consumer.store import RunWrite
from schemas import codec
from schemas.errors import CodecError, MetricfoldError, ValidationError
from schemas.limits import Limits

__all__ = ["BatchFolder", "Groups", "ResumeNeeded", "group_by_run"]

#: a batch's records by (run path, partition), each list in offset order
Groups = OrderedDict[tuple[str, int], list[Record]]
_Units = list[tuple[list[Record], tuple[str, Any]]]  # (records, decoded): one record, or LogBlocks merged


class ResumeNeeded(MetricfoldError):
    """A run's stored state lacks records that are behind the read position: read again from the resume point."""


def group_by_run(records: list[Record], dead: DeadLetterProducer, known: dict[int, int]
                 ) -> tuple[Groups, dict[int, int], dict[int, int]]:
    """(the records by run path and partition, the next offset to read per partition, the undecodable records
    per partition): a record whose key is not a run path is sent to the dead letters and counted, unless it was
    before (it is below the checkpoint Redis is *known* to hold)."""
    groups: Groups = OrderedDict()
    next_offsets: dict[int, int] = {}
    undecodable: dict[int, int] = {}
    for record in records:
        next_offsets[record.partition] = record.offset + 1
        path = key_path(record.key)
        if path is None:
            if first_delivery(record.offset, known.get(record.partition, 0)):
                dead.send(record, f"undecodable: the record key {record.key!r} is not a run path entity/project/run_id")
                undecodable[record.partition] = undecodable.get(record.partition, 0) + 1
            continue
        groups.setdefault((path, record.partition), []).append(record)
    return groups, next_offsets, undecodable


class BatchFolder:
    """Folds batches into the states of *cache*; refusals go to *dead_letters*."""

    def __init__(self, cache: RunCache, dead_letters: DeadLetters, limits: Limits) -> None:
        self.cache = cache
        self.dead_letters = dead_letters
        self.limits = limits

    def fold(self, groups: Groups, dead: DeadLetterProducer, undecodable: dict[int, int] | None,
             known: dict[int, int], *, strict: bool = False) -> tuple[list[RunWrite], Pending]:
        """Fold each run's records into its write; *undecodable* (None on a retry) collects the records that are
        not events, those at or past the checkpoint Redis is *known* to hold (partition -> next offset) being
        dead-lettered and counted. *strict*: check after each record that the state can still be stored."""
        cache = self.cache
        cache.load(list(dict.fromkeys(path for path, _ in groups)))
        runs, partition_of = cache.runs, cache.partition_of
        poison, dead_letter = self.dead_letters.poison, self.dead_letters.send
        writes: list[RunWrite] = []
        pending: Pending = []
        now = time.monotonic()
        for (path, partition), records in groups.items():
            cached = runs[path]
            runs.move_to_end(path)
            partition_of[path] = partition
            applied = cached.applied.get(partition)
            folded = cached.folded.get(partition)
            checkpoint = known.get(partition, 0)
            rejected = 0
            last_offset = None
            again: _Units = []  # in the views already
            units: _Units = []
            for record in records:
                if folded is not None and record.offset <= folded:  # in the state already
                    continue
                poisoned = poison.get((partition, record.offset)) if poison else None
                if poisoned is not None:
                    if partition not in cached.stored and partition not in cached.first_unstored:
                        cached.first_unstored[partition] = record.offset
                    if applied is None or record.offset > applied:  # else it went with an earlier write
                        dead_letter(dead, record, poisoned, kind="poisoned")
                        rejected += 1
                        last_offset = record.offset
                    continue
                try:
                    decoded = codec.decode(record.value or b"")
                    if joined_path(decoded) != path:  # equal to the checked key path: valid, no need to check again
                        inside = run_path_of(decoded)
                        raise ValidationError(f"the record key {path!r} is not the run path of its events ({inside!r})")
                except Exception as exc:  # CodecError, ValidationError, or anything a malformed body makes fastavro raise
                    if isinstance(exc, MetricfoldError) and not isinstance(exc, (CodecError, ValidationError)):
                        raise
                    if undecodable is not None and record.offset >= checkpoint:  # counted with the checkpoint: once
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
                cache.mark_dirty(path, cached, now)
                if folded == applied:  # the state holds what the views hold again: what they show is published
                    take_changes(cached.state)
                    cached.events = events_applied(cached.state)
                    cached.updated_ms = int(cached.state.updated or cached.updated_ms)
            if units and folded != applied:
                raise ResumeNeeded(f"the stored state of run {path} lacks records of partition {partition} before "
                                   f"offset {units[0][0][0].offset}")
            for unit_records, decoded in _merged(path, partition, units):
                last_offset = unit_records[-1].offset
                try:
                    refused = self._fold_unit(path, partition, cached, unit_records, decoded, strict)
                except MetricfoldError as exc:  # a record the fold could not take at all
                    refused = []
                    for record in unit_records:
                        dead_letter(dead, record, f"refused: {exc}")
                    rejected += len(unit_records)
                for r in refused:
                    extra = {"item.index": str(r.index)}
                    if r.producer_id is not None:
                        extra["producer.id"] = r.producer_id
                    if r.seq is not None:
                        extra["seq"] = str(r.seq)
                    dead_letter(dead, _source_of(unit_records, r.seq), r.reason, extra)
                rejected += len(refused)
            if last_offset is None:
                continue
            try:
                changes = take_changes(cached.state)
                events = events_applied(cached.state)
            except Exception as exc:  # a fault of this run's data (or a bug): find the record behind it
                raise BadRecords(f"the changes of run {path} cannot be taken: {describe(exc)}",
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
            cache.mark_dirty(path, cached, now)
        return writes, pending

    def _fold_unit(self, path: str, partition: int, cached: CachedRun, unit_records: list[Record],
                   decoded: tuple[str, Any], strict: bool) -> list[Any]:
        """fold_record for the records of one unit (one record, or consecutive LogBlocks merged); a refusal
        (MetricfoldError) passes through, any other exception becomes BadRecords naming the unit's records.
        *strict*: also check that the state can still be stored."""
        try:
            refused = fold_record(cached.state, decoded, limits=self.limits)
        except MetricfoldError:
            raise
        except Exception as exc:
            raise BadRecords(f"the fold failed on run {path}: {describe(exc)}",
                             [(partition, unit_records[0].offset, unit_records[-1].offset)]) from exc
        if strict:
            self.cache.state_bytes(path, cached, unit_records)
        return refused


def _merged(path: str, partition: int, units: _Units) -> _Units:
    """merge_log_records, with a failure on odd (but decodable) records turned into BadRecords."""
    try:
        return merge_log_records(units)
    except Exception as exc:
        raise BadRecords(f"merging the log records of run {path} failed: {describe(exc)}",
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
