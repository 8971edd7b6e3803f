"""The Redis store: the only package in metricfold that imports `redis`.

    keys.py         every key and channel name (the layout is in its docstring)
    client.py       the connection (credentials, TLS, handshake) and what Redis's errors mean
    generations.py  the active generation, making and switching generations
    writer.py       the consumer's batch writes and checkpoints, and what it reads to resume
    calls.py        a batch's run writes (RunWrite) as one `apply_runs` call per project (KEYS declared)
    nodes.py        sending calls to the node of their slot (standalone: the one server), WAIT for replicas
    reader.py       the reads of the CLI, Api() and the web page (TablePage)
    reads.py        the public read interface (StoreReader) that Api() and the web page use, from open_reader()
    changefeed.py   the live pages' pub/sub notices
    scripts.py      the Lua scripts and the read functions' library, from lua/*.lua

Writes go through two Lua scripts: `apply_runs` writes the views, indexes and applied offset of up to RUNS_PER_CALL
runs of one project (and the state of those the consumer stores this time), each run in one atomic step, and skips
a run's batch it has already applied; the calls of a batch go in one pipeline per node. Then `checkpoint` advances
each partition's checkpoint, only forwards, once every call succeeded (and the nodes' replicas acknowledged them).
On a standalone Redis without replicas, a batch of one call advances the checkpoints in that call.
"""

from __future__ import annotations

import redis

from consumer.store.calls import RUNS_PER_CALL, RunWrite
from consumer.store.changefeed import ChangeFeed
from consumer.store.client import redis_client
from consumer.store.keys import Keys
from consumer.store.nodes import Nodes
from consumer.store.reader import Reader, TablePage
from consumer.store.reads import StoreReader
from consumer.store.scripts import APPLY_RUNS, CHECKPOINT, INDEX_RUNS, READ_LIBRARY
from consumer.store.writer import APPLIED, CONFLICT, MOVED, SKIPPED, StoredRun, Writer
from schemas.settings import Settings

__all__ = [
    "APPLIED", "CONFLICT", "MOVED", "RUNS_PER_CALL", "SKIPPED",
    "ChangeFeed", "Keys", "RunWrite", "Store", "StoreReader", "StoredRun", "TablePage", "open_reader", "redis_client",
]


class Store(Writer, Reader):
    """Writes (consumer) and reads (read API, CLI, web page) of one namespace's Redis state."""

    def __init__(self, settings: Settings, *, generation: str | None = None, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.client = client or redis_client(settings)
        self._generation = generation
        self.nodes = Nodes(self.client, settings)
        self._announced = set()
        self._announced_at = 0.0
        self._apply = self.client.register_script(APPLY_RUNS)
        self._checkpoint = self.client.register_script(CHECKPOINT)
        self._index_runs = self.client.register_script(INDEX_RUNS)
        # the reads are functions of one library (FCALL_RO: the read-only ACL user may run them, and no other Lua)
        self._reads = READ_LIBRARY
        self._read_run, self._read_page = (self._reads.functions[f] for f in ("read_run", "read_page"))

    def close(self) -> None:
        self.nodes.close()
        self.client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_reader(settings: Settings) -> StoreReader:
    """The store's public read interface over *settings*' namespace, for `producer.Api` and the web page."""
    return Store(settings)
