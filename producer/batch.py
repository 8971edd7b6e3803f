"""The batch being filled: events of one producer in order, consecutive logs packed as one LogBlock.

Run.log() appends straight into the columns of the open LogBlockBuilder (see docs/ARCHITECTURE.md
"Wire format"); any other event closes the block and is appended whole. The sender thread seals a
PendingBatch (by count, bytes or age) and encodes it as one ``metricfold.Batch`` record.
"""

from __future__ import annotations

from typing import Any

from schemas.events import LOG_BLOCK
from schemas.paths import PathKey

__all__ = ["BATCH_OVERHEAD_BYTES", "EVENT_OVERHEAD_BYTES", "FLOAT_BYTES", "LogBlockBuilder", "PendingBatch"]

#: Upper estimates of encoded sizes, used to cut batches below the Kafka record limit.
BATCH_OVERHEAD_BYTES = 4096  # header, run path, producer id, array framing
EVENT_OVERHEAD_BYTES = 32  # step, ts_ms, count (three varints) and framing
FLOAT_BYTES = 14  # 8-byte double + path index varint
EXTRA_OVERHEAD_BYTES = 16  # event and path indexes, union branch


class LogBlockBuilder:
    """Columns of consecutive log events (the ``metricfold.LogBlock`` record) being appended to."""

    __slots__ = ("counts", "extras", "first_seq", "index", "path_idx", "paths", "steps", "ts_ms", "values")

    def __init__(self, first_seq: int) -> None:
        self.first_seq = first_seq
        self.steps: list[int] = []
        self.ts_ms: list[int] = []
        self.counts: list[int] = []
        self.paths: list[list[str]] = []
        self.index: dict[PathKey, int] = {}  #: leaf path -> index into paths
        self.path_idx: list[int] = []
        self.values: list[float] = []
        self.extras: list[dict[str, Any]] = []

    def path_index(self, path: PathKey) -> tuple[int, int]:
        """(index of *path*, bytes it added to the block: 0 if it was already there)."""
        i = self.index.get(path)
        if i is not None:
            return i, 0
        i = self.index[path] = len(self.paths)
        parts = [path] if isinstance(path, str) else list(path)
        self.paths.append(parts)
        return i, sum(4 * len(p) + 6 for p in parts) + 2

    def datum(self) -> dict[str, Any]:
        return {
            "first_seq": self.first_seq,
            "steps": self.steps,
            "ts_ms": self.ts_ms,
            "paths": self.paths,
            "counts": self.counts,
            "path_idx": self.path_idx,
            "values": self.values,
            "extras": self.extras,
        }


class PendingBatch:
    """Events not yet handed to the sender: complete items plus the open LogBlock, with size estimates."""

    __slots__ = ("block", "due", "events", "items", "nbytes", "seq_end")

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.block: LogBlockBuilder | None = None
        self.nbytes = BATCH_OVERHEAD_BYTES  #: upper estimate of the encoded Batch
        self.events = 0
        self.due = 0.0  #: time.monotonic() when the sender seals it (set with its first event)
        self.seq_end = 0  #: seq after its last event

    def open_block(self, first_seq: int) -> LogBlockBuilder:
        block = self.block = LogBlockBuilder(first_seq)
        return block

    def add_event(self, name: str, datum: dict[str, Any], nbytes: int) -> None:
        """Append a whole event (closing the open LogBlock, so order is kept)."""
        self.close_block()
        self.items.append((name, datum))
        self.events += 1
        self.nbytes += nbytes
        self.seq_end = datum["seq"] + 1

    def close_block(self) -> None:
        if self.block is not None:
            self.items.append((LOG_BLOCK, self.block.datum()))
            self.block = None

    def batch_items(self) -> list[tuple[str, dict[str, Any]]]:
        self.close_block()
        return self.items
