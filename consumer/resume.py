"""The decisions behind exactly-once, as pure functions: where a consumer resumes reading, what Redis holds of a
run, and what a refused write means. The consumer (runner.py) and the store (store/writer.py) act on them;
tests/test_resume.py tests each decision without a server (the integration and chaos tests run them for real).

The records they decide on (README, "Guarantees"): per partition a checkpoint (the next offset to read: every
record before it is in the views), per run the applied offset of each partition (the last record in its views,
written in the same atomic step as the views), the offsets its stored fold state holds (`stateat`), and the lag
set of the runs whose stored state is older than their views.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["first_delivery", "held_by_state", "lagging_partitions", "lost_writes", "resume_points"]


def resume_points(checkpoints: Mapping[int, int], lowest_lacking: Mapping[int, int | None]) -> dict[int, int]:
    """Where to read each partition from: its checkpoint, or the first offset a run's stored state lacks when that
    is lower (the lowest score of the partition's lag set; None: the set is empty), so that every stored state can
    be folded up to its views again. Only the partitions with a checkpoint: the others start where Kafka's group
    offsets (or the start of the topic) say."""
    resume = {}
    for partition, checkpoint in checkpoints.items():
        lacking = lowest_lacking.get(partition)
        resume[partition] = checkpoint if lacking is None else min(checkpoint, lacking)
    return resume


def held_by_state(applied: Mapping[int, int], state_at: Mapping[int, int], has_state: bool) -> dict[int, int]:
    """Per partition, the offset of the last record a run's stored state holds. A state stored before `stateat`
    was written with it holds exactly what the views do; no state holds nothing."""
    if state_at:
        return dict(state_at)
    return dict(applied) if has_state else {}


def lagging_partitions(applied: Mapping[int, int], held: Mapping[int, int]) -> set[int]:
    """The partitions in which a run's views are ahead of its stored state (the state must be refolded up to them
    before it is stored again: it is in those partitions' lag sets)."""
    return {partition for partition, offset in applied.items() if held.get(partition, -1) < offset}


def lost_writes(expected_prev: int | None, applied_now: int | None) -> bool:
    """A run's write was refused because Redis's applied offset is not the one the write was built on. When Redis
    holds less than that offset (or nothing), it lost writes it had acknowledged (restarted without its last
    fsync, or a failover to a replica that had not got them): refolding this batch alone would leave a gap, and
    the consumer must start over from what Redis holds. When it holds more, another writer got there first:
    refolding the batch on top of that is enough. A new run's write (no expected offset) loses nothing."""
    return expected_prev is not None and (applied_now is None or applied_now < expected_prev)


def first_delivery(offset: int, known_checkpoint: int) -> bool:
    """Whether a record is read for the first time: at or past the checkpoint Redis held when the consumer
    (re)started. A record below it was read, dead-lettered and counted before (a replay of the batch after a
    failure), and is not sent or counted again."""
    return offset >= known_checkpoint
