"""What a consumer knows of its partitions' Redis checkpoints (the next offset to read: every record before it is
in the views), and the seeks back to the Redis resume points (consumer/resume.py) when it starts over."""

from __future__ import annotations

from collections.abc import Sequence

from consumer.kafka_io import GroupConsumer
from consumer.store import Store

__all__ = ["Checkpoints"]


class Checkpoints:
    """The checkpoints of *topic* this consumer knows Redis holds, and the runs whose writes Redis lost."""

    def __init__(self, store: Store, topic: str) -> None:
        self.store = store
        self.topic = topic
        # partition -> the checkpoint we know Redis holds (read at a seek, or written by us): Redis holding less
        # later means it lost acknowledged writes
        self.known: dict[int, int] = {}
        self.lost: list[str] = []  # runs whose writes Redis lost, for the next resume points (LostWrites)

    def assigned(self, partitions: list[int]) -> dict[int, int]:
        """Where to read the newly assigned *partitions* from: their resume points (those Redis has any for)."""
        checkpoints = self.store.checkpoints(self.topic)
        resume = self.store.resume_points(self.topic, checkpoints, lost=self.lost)
        self.lost = []
        self.known.update({p: checkpoints[p] for p in partitions if p in checkpoints})
        return {p: resume[p] for p in partitions if p in resume}

    def revoked(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.known.pop(partition, None)

    def forget(self, lost: Sequence[str]) -> None:
        """Starting over: trust no checkpoint until it is read again; *lost*: runs whose writes Redis lost."""
        self.lost = [*self.lost, *lost]  # until a seek used them (a new Kafka client's assignment, if not this one)
        self.known.clear()

    def seek_back(self, kafka: GroupConsumer) -> None:
        """Read *kafka*'s partitions again from the Redis resume points."""
        checkpoints = self.store.checkpoints(self.topic)
        kafka.seek(self.store.resume_points(self.topic, checkpoints, lost=self.lost))
        self.lost = []
        self.known.update(checkpoints)

    def reach(self, ends: dict[int, int]) -> bool:
        """True when the resume points in Redis reach *ends* (partition -> end offset): Redis holds every record
        before them, in the views and in the stored states."""
        resume = self.store.resume_points(self.topic)
        return all(resume.get(p, 0) >= end for p, end in ends.items())

    def written(self, next_offsets: dict[int, int]) -> None:
        """A batch up to *next_offsets* is written: Redis holds those checkpoints now."""
        for partition, offset in next_offsets.items():
            self.known[partition] = max(offset, self.known.get(partition, offset))
