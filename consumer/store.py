"""The Redis store: the only module in metricfold that imports `redis`.

Key layout (SPEC §5; `<ns>` = namespace, `<gen>` = generation, `<run>` = entity/project/run_id,
`<proj>` = entity/project). A run's keys share the hash tag `{<run>}`:

    <ns>:active                              string  the generation readers use
    <ns>:<gen>:run:{<run>}:summary           hash    top-level summary key -> JSON of its value
    <ns>:<gen>:run:{<run>}:flat              hash    display path (loss.min, grad.norm) -> JSON scalar
    <ns>:<gen>:run:{<run>}:meta              hash    state, created, updated, name, config, tags, events, ...
    <ns>:<gen>:run:{<run>}:tensors           hash    display path of a tensor -> sha256 of its .npy bytes
    <ns>:<gen>:run:{<run>}:blob:<sha256>     string  .npy bytes
    <ns>:<gen>:run:{<run>}:state             string  the fold state (consumer-private; stored every few seconds)
    <ns>:<gen>:run:{<run>}:stateat           hash    partition -> offset of the last record the stored state holds
    <ns>:<gen>:run:{<run>}:applied           hash    partition -> offset of the last record applied to the views
    <ns>:<gen>:project:{<proj>}:runs         zset    run_id by last update (ms)
    <ns>:<gen>:project:{<proj>}:by:<path>    zset    run_id by the numeric flat value at <path>
    <ns>:<gen>:project:{<proj>}:paths        set     flat paths seen in the project (the column picker)
    <ns>:<gen>:projects                      set     entity/project of every project
    <ns>:<gen>:checkpoint:<topic>            hash    partition -> next offset to read (everything before is applied)
    <ns>:<gen>:lag:<topic>:<partition>       zset    run path by the first offset its stored state lacks: the runs
                                                     whose state is older than their views (a consumer seeks to
                                                     the lowest, or to the checkpoint when the set is empty)
    <ns>:<gen>:stats                         hash    events, dead_letters, undecodable (counted exactly once)
    channel <ns>:<gen>:changes:<proj>                pub/sub: the run_id of each run that changed

Writes go through two Lua scripts (consumer/lua.py), sent together in one pipeline per consumer batch: `apply_runs` writes
the views, indexes and applied offset of up to RUNS_PER_CALL runs (and the state of those the consumer stores this
time), each run in one atomic step, and skips a run's batch it has already applied; `checkpoint` advances a
partition's checkpoint only forwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import redis
import redis.asyncio

from consumer.fold import Changes
from consumer.lua import APPLY_RUNS, CHECKPOINT, READ_PROJECTS, READ_RUN, READ_TABLE
from schemas.errors import RunNotFound, StoreUnavailable
from schemas.settings import Settings

__all__ = [
    "APPLIED", "CONFLICT", "MOVED", "SKIPPED",
    "ChangeFeed", "Keys", "RunWrite", "Store", "StoredRun", "TablePage", "redis_client",
]

APPLIED, SKIPPED, CONFLICT, MOVED = 1, 0, -1, -2


@dataclasses.dataclass(frozen=True)
class Keys:
    """Key names for one namespace and generation."""

    namespace: str
    generation: str

    @property
    def active(self) -> str:
        return f"{self.namespace}:active"

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:{self.generation}"

    def run(self, run_path: str, part: str) -> str:
        return f"{self.prefix}:run:{{{run_path}}}:{part}"

    def blob(self, run_path: str, sha: str) -> str:
        return self.run(run_path, f"blob:{sha}")

    def project(self, project_path: str, part: str) -> str:
        return f"{self.prefix}:project:{{{project_path}}}:{part}"

    def by_path(self, project_path: str, flat_path: str) -> str:
        return self.project(project_path, f"by:{flat_path}")

    def checkpoint(self, topic: str) -> str:
        return f"{self.prefix}:checkpoint:{topic}"

    def lag(self, topic: str, partition: int | str = "") -> str:
        """The partition's lag set (with no partition: the prefix the Lua script completes)."""
        return f"{self.prefix}:lag:{topic}:{partition}"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    def channel(self, project_path: str) -> str:
        return f"{self.prefix}:changes:{project_path}"


@dataclasses.dataclass(frozen=True)
class TablePage:
    """One page of a project's runs table (Store.read_table)."""

    generation: str
    total: int  # runs in the sort index (every run when sorting by last update; those with a number at the path otherwise)
    project_runs: int  # runs in the project
    rows: list[dict[str, Any]]  # run_id, name, state, updated, created (ms), values: {path: JSON value or None}
    paths: list[str]  # the project's numeric flat paths, sorted (sortable; the column picker)


class StoredRun(NamedTuple):
    """What Redis holds of one run for the consumer (`Store.load_runs`)."""

    state: bytes | None  #: the stored fold state (None: none yet)
    applied: dict[int, int]  #: partition -> offset of the last record applied to the views
    state_at: dict[int, int]  #: partition -> offset of the last record the stored state holds


@dataclasses.dataclass
class RunWrite:
    """Everything one consumer batch changed for one run, applied atomically by `apply_runs`."""

    run_path: str
    partition: int
    offset: int  # offset of the last record of the batch for this run
    expected_prev: int | None  # the applied offset the views were built on (None: a new run)
    state: bytes  # the fold state to store, b"" to store none this time
    updated_ms: int
    changes: Changes = dataclasses.field(default_factory=Changes)  # the views' changes (consumer.fold)
    events: int = 0
    dead_letters: int = 0
    #: without a state: the first offset of the run's records that the stored state lacks (None: Redis knows it
    #: already, from an earlier write since the state was last stored)
    lacks_from: int | None = None
    state_at: dict[int, int] = dataclasses.field(default_factory=dict)  # with a state: partition -> last offset in it


def _client_options(settings: Settings) -> dict[str, Any]:
    """Credentials and TLS from Settings (never from code); the TLS options only for rediss:// URLs."""
    options: dict[str, Any] = {"username": settings.redis_username, "password": settings.redis_password}
    if settings.redis.startswith("rediss://"):
        if settings.redis_ca_cert:
            options["ssl_ca_certs"] = settings.redis_ca_cert
        if settings.redis_client_cert:
            options["ssl_certfile"] = settings.redis_client_cert
            options["ssl_keyfile"] = settings.redis_client_key
    return options


def redis_client(settings: Settings, *, decode: bool = False) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis,
        **_client_options(settings),
        decode_responses=decode,
        socket_timeout=30,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[bytes]) -> dict[str, str]:
    """HGETALL as a Lua reply (field, value, field, value, ...) -> dict."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


@contextmanager
def _mapped(settings: Settings) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
        raise StoreUnavailable(f"cannot reach Redis at {settings.redis}: {exc}") from exc


#: run writes per APPLY_RUNS call, and roughly the bytes (one call is one atomic step: readers wait for it)
RUNS_PER_CALL = 200
BYTES_PER_CALL = 4 * 1024 * 1024


def _chunks(writes: Sequence[RunWrite]) -> Iterator[Sequence[RunWrite]]:
    start, size = 0, 0
    for i, write in enumerate(writes):
        size += len(write.state) + sum(map(len, write.changes.blobs.values()))
        if i + 1 - start >= RUNS_PER_CALL or size >= BYTES_PER_CALL:
            yield writes[start : i + 1]
            start, size = i + 1, 0
    if start < len(writes):
        yield writes[start:]


def _apply_args(keys: Keys, topic: str, writes: Sequence[RunWrite], live: bool, checkpoints: str = "") -> list[str | bytes]:
    """APPLY_RUNS's arguments for *writes* (see consumer/lua.py): the runs' changes as one JSON document (json's
    C encoder, and one Redis argument instead of ~60 per run: packing those cost more than the Lua call itself),
    then the states and the tensor blobs as binary arguments. The numeric paths go by name only: their sort score
    is their text in flat_set (the JSON of a finite int or float, which Redis reads as the same double)."""
    runs: list[list[Any]] = []
    blobs: list[bytes] = []
    first_blob = 6 + len(writes)  # ARGV index of the first blob in Lua (1-based, after the states)
    for w in writes:
        c = w.changes
        project_path, _, run_id = w.run_path.rpartition("/")
        named = {}
        for sha, data in c.blobs.items():
            named[sha] = str(first_blob + len(blobs))
            blobs.append(data)
        runs.append([
            w.run_path, project_path, run_id, str(w.partition), str(w.offset),
            "" if w.expected_prev is None else str(w.expected_prev), str(w.updated_ms), str(w.events),
            str(w.dead_letters), c.summary_set, c.summary_del, c.flat_set, c.flat_del, c.meta, c.meta_del,
            c.tensors_set, c.tensors_del, list(c.numeric_set), c.numeric_del,
            named, "" if w.lacks_from is None else str(w.lacks_from),
            {str(p): str(o) for p, o in (w.state_at or {w.partition: w.offset}).items()} if w.state else {},
        ])
    document = json.dumps(runs, ensure_ascii=False, separators=(",", ":"))
    return [keys.generation if live else "", keys.prefix, document, keys.lag(topic), checkpoints,
            *(w.state for w in writes), *blobs]


class Store:
    """Writes (consumer) and reads (read API, CLI, web page) of one namespace's Redis state."""

    def __init__(self, settings: Settings, *, generation: str | None = None, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.client = client or redis_client(settings)
        self._generation = generation
        self._apply = self.client.register_script(APPLY_RUNS)
        self._checkpoint = self.client.register_script(CHECKPOINT)
        self._read_run = self.client.register_script(READ_RUN)
        self._read_table = self.client.register_script(READ_TABLE)
        self._read_projects = self.client.register_script(READ_PROJECTS)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ generations
    def active_generation(self) -> str | None:
        with _mapped(self.settings):
            value = self.client.get(f"{self.settings.namespace}:active")
        return value.decode() if isinstance(value, bytes) else value

    def set_active(self, generation: str) -> None:
        """Make *generation* the one every reader and the live consumer use, in one step."""
        with _mapped(self.settings):
            self.client.set(f"{self.settings.namespace}:active", generation)

    def generation_has_keys(self, generation: str) -> bool:
        with _mapped(self.settings):
            keys = self.client.scan_iter(match=f"{self.settings.namespace}:{generation}:*", count=1000)
            return next(iter(keys), None) is not None

    def delete_generation(self, generation: str) -> int:
        """Delete every key of a generation (never the active one); returns how many."""
        if generation == self.active_generation():
            raise ValueError(f"refusing to delete the active generation {generation!r}")
        deleted = 0
        with _mapped(self.settings):
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=f"{self.settings.namespace}:{generation}:*", count=2000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += self.client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += self.client.unlink(*batch)
        return deleted

    def use_generation(self, generation: str) -> None:
        """Write to (and read from) *generation* from now on (the live consumer after a replay's switch)."""
        self._generation = generation

    def ensure_generation(self, initial: str = "g1") -> str:
        """The generation to write: the given one, else the active one (made `initial` if none is)."""
        if self._generation is None:
            with _mapped(self.settings):
                self.client.set(f"{self.settings.namespace}:active", initial, nx=True)
            self._generation = self.active_generation() or initial
        return self._generation

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.namespace, self.ensure_generation())

    # ------------------------------------------------------------------ consumer side
    def checkpoints(self, topic: str) -> dict[int, int]:
        with _mapped(self.settings):
            raw = self.client.hgetall(self.keys.checkpoint(topic))
        return {int(p): int(o) for p, o in raw.items()}

    def resume_points(self, topic: str, checkpoints: dict[int, int] | None = None) -> dict[int, int]:
        """Where a consumer starts reading each partition: its checkpoint, or the first offset a run's stored
        state lacks if that is lower (the lag set), so that every state can be folded up to its views again.
        *checkpoints*: the ones the caller just read (`checkpoints()`), not read again."""
        keys = self.keys
        if checkpoints is None:
            checkpoints = self.checkpoints(topic)
        with _mapped(self.settings):
            pipe = self.client.pipeline(transaction=False)
            for partition in checkpoints:
                pipe.zrange(keys.lag(topic, partition), 0, 0, withscores=True)
            lowest = pipe.execute()
        return {
            p: min([o, *(int(score) for _, score in first)]) for (p, o), first in zip(checkpoints.items(), lowest, strict=True)
        }

    def load_runs(self, run_paths: Sequence[str]) -> dict[str, StoredRun]:
        """The stored fold state of each run with the offsets it holds and the views' applied offsets (one round
        trip). A state stored before `stateat` existed holds exactly what the views do."""
        keys = self.keys
        with _mapped(self.settings):
            pipe = self.client.pipeline(transaction=False)
            for path in run_paths:
                pipe.get(keys.run(path, "state"))
                pipe.hgetall(keys.run(path, "applied"))
                pipe.hgetall(keys.run(path, "stateat"))
            replies = pipe.execute()
        result: dict[str, StoredRun] = {}
        for i, path in enumerate(run_paths):
            state, applied, state_at = replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]
            views = {int(p): int(o) for p, o in applied.items()}
            held = {int(p): int(o) for p, o in state_at.items()} if state_at else (dict(views) if state else {})
            result[path] = StoredRun(state, views, held)
        return result

    def apply(
        self,
        writes: Sequence[RunWrite],
        checkpoints: dict[int, int],
        undecodable: dict[int, int] | None = None,
        *,
        live: bool = True,
        known: dict[int, int] | None = None,
    ) -> list[int]:
        """Apply every run's write, then advance the checkpoints. Returns APPLIED/SKIPPED/CONFLICT/MOVED per write.

        Checkpoints are advanced only when every write applied or skipped (a conflicting run is refolded by the
        caller; MOVED means a replay made another generation active). With *live*, a write lands only while
        this store's generation is the active one; a replay writes with live=False into its new generation.
        *known* (partition -> checkpoint) is what the caller knows Redis held; a checkpoint below it means Redis
        lost acknowledged writes, and raises StoreUnavailable instead of moving the checkpoint over the gap.
        """
        keys = self.keys
        topic = self.settings.topic
        rows = [
            [str(p), str(o), str((undecodable or {}).get(p, 0)), "" if known is None or p not in known else str(known[p])]
            for p, o in checkpoints.items()
        ]
        with _mapped(self.settings):
            results: list[int] = []
            advanced: list[int] | None = None
            calls: list[tuple[Any, list[str], list[Any]]]
            if writes:
                chunks = list(_chunks(writes))
                # one call (most batches): it advances the checkpoints too, so the batch takes one round trip
                merged = json.dumps([keys.checkpoint(topic), keys.stats, rows]) if rows and len(chunks) == 1 else ""
                calls = [(self._apply, [keys.active], _apply_args(keys, topic, chunk, live, merged)) for chunk in chunks]
                for chunk, replies in zip(chunks, self._evalsha_all(calls), strict=True):
                    if replies == MOVED:
                        results += [MOVED] * len(chunk)
                        continue
                    if merged:
                        replies, advanced = replies
                    results += [int(r) for r in replies]
            if advanced is None and CONFLICT not in results and MOVED not in results and rows:
                calls = [(self._checkpoint, [keys.checkpoint(topic), keys.stats], row) for row in rows]
                advanced = self._evalsha_all(calls)
            if advanced is not None and -1 in (int(r) for r in advanced):
                raise StoreUnavailable(f"Redis at {self.settings.redis} holds older checkpoints than it acknowledged: "
                                       "it lost writes (restarted without its last fsync?)")
        return results

    def _evalsha_all(self, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """EVALSHA each (script, keys, args) in one pipeline: one round trip. redis-py's own script calls in a
        pipeline first ask SCRIPT EXISTS, a second round trip per batch; here a script Redis does not hold (it
        restarted, or SCRIPT FLUSH) is loaded when Redis says NOSCRIPT, and the calls are sent again (a call that
        got NOSCRIPT did not run; a write that ran is skipped the second time, as already applied)."""
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                for script in {script for script, _, _ in calls}:
                    script.sha = self.client.script_load(script.script)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ read side
    def _read_only(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a read-only script with EVALSHA_RO (EVAL_RO the first time), so a read-only ACL user may run it."""
        try:
            return self.client.evalsha_ro(script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self.client.eval_ro(script.script, len(keys), *keys, *args)

    def _read_generation(self) -> str:
        """Readers always resolve the active generation (unless one was given explicitly)."""
        if self._generation is not None:
            return self._generation
        active = self.active_generation()
        if active is None:
            raise RunNotFound(f"namespace {self.settings.namespace!r} has no active generation yet: nothing was folded")
        return active

    def read_run(self, run_path: str) -> dict[str, Any]:
        """summary, flat, meta and tensors of one run, with the generation resolved in the same atomic step."""
        ns = self.settings.namespace
        with _mapped(self.settings):
            reply = self._read_only(self._read_run, [f"{ns}:active"], [ns, run_path, self._generation or ""])
        if not reply or not reply[0]:
            raise RunNotFound(f"namespace {ns!r} has no active generation yet: nothing was folded")
        generation = _text(reply[0])
        summary, flat, meta, tensors = (_pairs(r) for r in reply[1:])
        if not meta and not summary:
            raise RunNotFound(f"run {run_path!r} is not in namespace {ns!r} (generation {generation})")
        return {
            "generation": generation,
            "summary": {k: json.loads(v) for k, v in summary.items()},
            "flat": {k: json.loads(v) for k, v in flat.items()},
            "meta": meta,
            "tensors": tensors,
        }

    def read_blob(self, run_path: str, sha: str, *, generation: str | None = None) -> bytes | None:
        keys = Keys(self.settings.namespace, generation or self._read_generation())
        with _mapped(self.settings):
            value = self.client.get(keys.blob(run_path, sha))
        return value if isinstance(value, bytes) else None

    def list_runs(
        self, project_path: str, *, sort: str | None = None, descending: bool = True, limit: int = 50, offset: int = 0
    ) -> tuple[list[str], int]:
        """run_ids of a project sorted by last update or by a numeric flat path, from the sorted sets; and the total."""
        keys = Keys(self.settings.namespace, self._read_generation())
        zkey = keys.project(project_path, "runs") if sort in (None, "updated") else keys.by_path(project_path, sort)
        with _mapped(self.settings):
            pipe = self.client.pipeline(transaction=True)
            if descending:
                pipe.zrevrange(zkey, offset, offset + limit - 1)
            else:
                pipe.zrange(zkey, offset, offset + limit - 1)
            pipe.zcard(zkey)
            ids, total = pipe.execute()
        return [_text(i) for i in ids], int(total)

    def project_paths(self, project_path: str) -> list[str]:
        keys = Keys(self.settings.namespace, self._read_generation())
        with _mapped(self.settings):
            return sorted(_text(p) for p in self.client.smembers(keys.project(project_path, "paths")))

    def stats(self) -> dict[str, int]:
        keys = Keys(self.settings.namespace, self._read_generation())
        with _mapped(self.settings):
            return {_text(k): int(v) for k, v in self.client.hgetall(keys.stats).items()}

    def read_table(
        self,
        project_path: str,
        *,
        sort: str | None = None,
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        columns: Sequence[str] = (),
    ) -> TablePage:
        """A page of the runs table in ONE atomic round trip: ids from the sorted set, then each run's meta and
        the *columns* of its flat view. Raises RunNotFound for an unknown project, ValueError for an unknown sort path."""
        ns = self.settings.namespace
        args: list[Any] = [ns, project_path, self._generation or "", sort or "", "1" if descending else "0", offset, limit]
        with _mapped(self.settings):
            reply = self._read_only(self._read_table, [f"{ns}:active"], [*args, *columns])
        if not reply or not reply[0]:
            raise RunNotFound(f"namespace {ns!r} has no active generation yet: nothing was folded")
        generation = _text(reply[0])
        if reply[1] == -1:
            raise RunNotFound(f"project {project_path!r} is not in namespace {ns!r} (generation {generation})")
        if reply[1] == -2:
            raise ValueError(f"project {project_path!r} has no numeric summary path {sort!r} to sort by")
        rows = []
        for run_id, meta, values in reply[3]:
            name, state, updated, created = (None if m is None else _text(m) for m in meta)
            rows.append(
                {
                    "run_id": _text(run_id),
                    "name": name or "",
                    "state": state or "",
                    "updated": int(updated or 0),
                    "created": int(created or 0),
                    "values": {c: None if v is None else json.loads(v) for c, v in zip(columns, values, strict=False)},
                }
            )
        paths = sorted(_text(p) for p in reply[4])
        return TablePage(generation=generation, total=int(reply[1]), project_runs=int(reply[2]), rows=rows, paths=paths)

    def read_projects(self) -> tuple[str | None, dict[str, int], dict[str, int]]:
        """(generation, {entity/project: number of runs}, stats) in one atomic round trip."""
        ns = self.settings.namespace
        with _mapped(self.settings):
            reply = self._read_only(self._read_projects, [f"{ns}:active"], [ns])
        if not reply or not reply[0]:
            return None, {}, {}
        projects = {_text(p): int(n) for p, n in reply[1]}
        return _text(reply[0]), dict(sorted(projects.items())), {k: int(v) for k, v in _pairs(reply[2]).items()}


class ChangeFeed:
    """Asynchronous pub/sub notices of a project's changed runs (for live pages), following generation switches.

    Read-only: SUBSCRIBE, UNSUBSCRIBE and GET of `<ns>:active` only. One Redis connection per open watch.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = redis.asyncio.Redis.from_url(
            settings.redis, **_client_options(settings), socket_connect_timeout=5, health_check_interval=30
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _active(self) -> str | None:
        try:
            value = await self.client.get(f"{self.settings.namespace}:active")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"cannot reach Redis at {self.settings.redis}: {exc}") from exc
        return None if value is None else _text(value)

    async def watch(self, project_path: str, *, tick: float = 1.0, recheck: float = 2.0) -> AsyncIterator[str | None]:
        """Yield the run_id of each changed run of the project; None at least every *tick* seconds (a chance to stop
        or send a heartbeat), and "*" after a generation switch (everything may have changed)."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        generation: str | None = None
        loop = asyncio.get_running_loop()
        checked = 0.0
        try:
            while True:
                if loop.time() - checked >= recheck:
                    checked = loop.time()
                    active = await self._active()
                    if active != generation:
                        if generation is not None:
                            await pubsub.unsubscribe()
                        if active is not None:
                            await pubsub.subscribe(Keys(self.settings.namespace, active).channel(project_path))
                        if generation is not None or active is not None:
                            yield "*" if generation is not None else None
                        generation = active
                if generation is None:
                    await asyncio.sleep(tick)
                    yield None
                    continue
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=tick)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    raise StoreUnavailable(f"lost the Redis subscription at {self.settings.redis}: {exc}") from exc
                yield None if message is None else _text(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
