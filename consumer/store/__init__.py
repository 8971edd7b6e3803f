"""The Redis store: the only package in metricfold that imports `redis`.

    keys.py         every key and channel name (the layout is in its docstring)
    client.py       the connection (credentials, TLS, handshake) and what Redis's errors mean
    generations.py  the active generation, making and switching generations
    writer.py       the consumer's batch writes and checkpoints (RunWrite), and what it reads to resume
    reader.py       the reads of the CLI, Api() and the web page (TablePage)
    changefeed.py   the live pages' pub/sub notices
    scripts.py      the Lua scripts and the read functions' library, from lua/*.lua

Writes go through two Lua scripts, sent together in one pipeline per consumer batch: `apply_runs` writes the views,
indexes and applied offset of up to RUNS_PER_CALL runs (and the state of those the consumer stores this time), each
run in one atomic step, and skips a run's batch it has already applied; `checkpoint` advances a partition's
checkpoint only forwards.
"""

from __future__ import annotations

import redis

from consumer.store.changefeed import ChangeFeed
from consumer.store.client import redis_client
from consumer.store.keys import Keys
from consumer.store.reader import Reader, TablePage
from consumer.store.scripts import APPLY_RUNS, CHECKPOINT, READ_LIBRARY
from consumer.store.writer import APPLIED, CONFLICT, MOVED, RUNS_PER_CALL, SKIPPED, RunWrite, StoredRun, Writer
from schemas.settings import Settings

__all__ = [
    "APPLIED", "CONFLICT", "MOVED", "RUNS_PER_CALL", "SKIPPED",
    "ChangeFeed", "Keys", "RunWrite", "Store", "StoredRun", "TablePage", "redis_client",
]


class Store(Writer, Reader):
    """Writes (consumer) and reads (read API, CLI, web page) of one namespace's Redis state."""

    def __init__(self, settings: Settings, *, generation: str | None = None, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.client = client or redis_client(settings)
        self._generation = generation
        self._apply = self.client.register_script(APPLY_RUNS)
        self._checkpoint = self.client.register_script(CHECKPOINT)
        # the reads are functions of one library (FCALL_RO: the read-only ACL user may run them, and no other Lua)
        self._reads = READ_LIBRARY
        self._read_run, self._read_table, self._read_projects = (
            self._reads.functions[f] for f in ("read_run", "read_table", "read_projects"))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
