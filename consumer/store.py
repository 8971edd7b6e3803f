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
import inspect
import json
import logging
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, NoReturn

import redis
import redis.asyncio

from consumer.fold import Changes
from consumer.lua import APPLY_RUNS, CHECKPOINT, READ_LIBRARY
from schemas.errors import ConfigError, RunNotFound, StoreUnavailable, ValidationError, WriteRefused
from schemas.names import run_name
from schemas.settings import Settings
from schemas.text import printable

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


#: redis-py's options that turn CLIENT SETINFO off: driver_info=None where redis-py has it (lib_name is deprecated
#: there), lib_name / lib_version=None before
_NO_SETINFO: dict[str, None] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def _client_options(settings: Settings) -> dict[str, Any]:
    """Credentials and TLS from Settings (never from code); the TLS options only for rediss:// URLs. No CLIENT SETINFO
    on connect (redis-py sends it by default to Redis 7.2+): our ACL users may not run it, and each refusal would be an
    entry in the server's ACL LOG, burying the refusals an operator looks there for."""
    options: dict[str, Any] = {"username": settings.redis_username, "password": settings.redis_password,
                               **_NO_SETINFO}
    if settings.redis.startswith("rediss://"):
        if settings.redis_ca_cert:
            options["ssl_ca_certs"] = settings.redis_ca_cert
        if settings.redis_client_cert:
            options["ssl_certfile"] = settings.redis_client_cert
            options["ssl_keyfile"] = settings.redis_client_key
    return options


class _HandshakeFailed(redis.ConnectionError):
    """A new connection's handshake failed: the server is not Redis, refused the credentials or has no such database."""


class _ClusterRefused(_HandshakeFailed):
    """The server is a Redis Cluster node, which the store cannot write to yet: a setup error, not an outage."""


def _shown(exc: BaseException) -> str:
    """An error's text as it may be shown: what a server that is not Redis sent may hold anything."""
    return printable(str(exc)[:200])


def _handshake(connection: Any) -> None:
    """redis-py's setup of each new connection (AUTH or HELLO, SELECT), then PING: a server that does not answer
    like Redis fails here, before any command of ours, with the reason (`redis_connect_func` of redis-py)."""
    try:
        connection.on_connect()
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise _HandshakeFailed(f"Redis refused the credentials ({_shown(exc)}): check the URL's user:password@ or "
                               "METRICFOLD_REDIS_USERNAME / METRICFOLD_REDIS_PASSWORD (or _PASSWORD_FILE)") from exc
    except redis.ResponseError as exc:
        if connection.db and "DB index" in str(exc):
            raise _HandshakeFailed(f"Redis has no database {connection.db} ({_shown(exc)}; its `databases` setting says "
                                   "how many it has, 16 by default: numbered from 0)") from exc
        if "unknown command" in str(exc):  # Redis knows every command redis-py sends there (or redis-py ignores it)
            raise _HandshakeFailed(f"the server there does not speak the Redis protocol (it answered: {_shown(exc)})") from exc
        raise _HandshakeFailed(f"Redis refused to set up the connection: {_shown(exc)}") from exc
    except redis.BusyLoadingError:
        raise  # Redis, loading its data: unavailable for now
    except (redis.exceptions.InvalidResponse, redis.ConnectionError) as exc:
        raise _HandshakeFailed(
            f"the server there does not speak the Redis protocol ({_shown(exc)}); if it is a TLS port, use rediss://"
        ) from exc
    try:
        connection.send_command("PING", check_health=False)
        reply = connection.read_response()
    except redis.exceptions.NoPermissionError:
        return  # an ACL user without PING: the server is Redis
    except (redis.ResponseError, redis.exceptions.InvalidResponse, redis.ConnectionError) as exc:
        raise _HandshakeFailed(f"the server there does not speak the Redis protocol ({_shown(exc)})") from exc
    if reply not in (b"PONG", "PONG"):
        raise _HandshakeFailed(f"the server there does not speak the Redis protocol (it answered PING with {reply!r:.60})")
    if _server_mode(connection) == "cluster":
        raise _ClusterRefused(
            "it is a Redis Cluster node, and metricfold does not run on Redis Cluster yet: a batch's write is one "
            "script over keys of many hash slots, which a cluster refuses (README, 'Redis Cluster'). Point "
            "METRICFOLD_REDIS at a standalone Redis")


def _server_mode(connection: Any) -> str:
    """`mode` of HELLO's reply: standalone, sentinel or cluster. redis-py keeps the reply when it set the connection
    up with HELLO (RESP3); else HELLO is sent here with the connection's own protocol version, which leaves the
    connection as it was (HELLO needs no ACL permission). "" when the server does not say (a Redis before 6 has no
    HELLO, and no cluster to refuse)."""
    reply = getattr(connection, "handshake_metadata", None)
    if not reply:
        try:
            connection.send_command("HELLO", str(getattr(connection, "protocol", None) or 2), check_health=False)
            reply = connection.read_response()
        except (redis.ResponseError, redis.exceptions.InvalidResponse):
            return ""
    if isinstance(reply, list):  # RESP2: field, value, field, value, ...
        reply = {reply[i]: reply[i + 1] for i in range(0, len(reply) - 1, 2)}
    if not isinstance(reply, dict):
        return ""
    fields = {_text(key): value for key, value in reply.items() if isinstance(key, bytes | str)}
    mode = fields.get("mode", "")
    return _text(mode) if isinstance(mode, bytes | str) else ""


def redis_client(settings: Settings, *, decode: bool = False) -> redis.Redis:
    try:
        return redis.Redis.from_url(
            settings.redis,
            **_client_options(settings),
            decode_responses=decode,
            socket_timeout=30,
            socket_connect_timeout=5,
            health_check_interval=30,
            redis_connect_func=_handshake,
        )
    except ValueError as exc:  # redis-py's URL parser: "Invalid value for 'socket_timeout' in connection URL."
        raise ConfigError(f"Redis URL {settings.redis_display!r}: {exc}") from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _listed(names: Sequence[str], shown: int = 12) -> str:
    """``a, b, c`` or ``a, b, c, ... (40 in all)``: what exists, in an error message."""
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _shown_name(name: str | None, run_id: str) -> str:
    """The run's name for every reader: the one it was given, else the one made up from its run id (as the SDK's
    ``run.name`` shows it; W&B's adjective-noun-N). Never stored: the fold and the digests do not see it."""
    return name or run_name(run_id)


def _pairs(flat: list[bytes]) -> dict[str, str]:
    """HGETALL as a Lua reply (field, value, field, value, ...) -> dict."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


@contextmanager
def _mapped(settings: Settings) -> Iterator[None]:
    try:
        yield
    except _ClusterRefused as exc:
        raise ConfigError(f"Redis at {settings.redis_display}: {exc}") from None
    except _HandshakeFailed as exc:
        raise StoreUnavailable(f"cannot talk to Redis at {settings.redis_display}: {exc}") from exc
    except redis.exceptions.NoPermissionError as exc:  # the setup's fault, not an outage to wait out
        who = settings.redis_username or "default"
        raise ConfigError(f"Redis user {who!r} was refused ({_shown(exc)}): `metricfold consume`, `replay` and "
                          "`digest` log in as the writer (metricfold-consumer), the reads as metricfold-reader; "
                          "see deploy/redis/README.md") from None
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
        raise StoreUnavailable(f"cannot reach Redis at {settings.redis_display}: {exc}") from exc


#: error replies of Redis itself (not of a script's data) that redis-py leaves as a plain ResponseError; the
#: others (OOM, READONLY, NOPERM, LOADING, NOSCRIPT, auth) have classes of their own
_SERVER_ERRORS = ("BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK", "NOREPLICAS", "MISCONF")


def _script_error(error: redis.exceptions.ResponseError) -> bool:
    """True for an error raised inside a script by the data it was given (a Lua runtime error, a command
    refusing an argument), False for Redis refusing to run it at all (out of memory, read-only, no permission,
    busy, loading, ...), which the consumer waits out instead of dead-lettering records."""
    text = str(error)
    if "can't run this command" in text or "No permissions" in text:  # an ACL refusal inside the script: the setup's fault
        return False
    return type(error) is redis.exceptions.ResponseError and "script" in text and not text.startswith(_SERVER_ERRORS)


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
    return [keys.generation if live else "", keys.prefix, _encode_runs(runs, writes), keys.lag(topic), checkpoints,
            *(w.state for w in writes), *blobs]


def _encode_runs(runs: list[list[Any]], writes: Sequence[RunWrite]) -> bytes:
    """The runs' changes as one UTF-8 JSON document. Text that UTF-8 cannot carry (a lone surrogate) or a value
    JSON cannot write is the fault of the runs holding it: WriteRefused names them (the consumer dead-letters
    their records), where hiredis would raise deep inside the pipeline for the whole batch."""
    try:
        return json.dumps(runs, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        bad: list[str] = []
        for run, write in zip(runs, writes, strict=True):
            try:
                json.dumps(run, ensure_ascii=False).encode("utf-8")
            except (TypeError, ValueError):
                bad.append(write.run_path)
        what = f"{exc.reason} at position {exc.start}" if isinstance(exc, UnicodeEncodeError) else str(exc)[:300]
        raise WriteRefused(f"the changes cannot be encoded for Redis: {what}", bad or [w.run_path for w in writes]) from exc


class Store:
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
                replied = self._evalsha_all(calls)
                refused = [(chunk, reply) for chunk, reply in zip(chunks, replied, strict=True) if isinstance(reply, Exception)]
                if refused:  # a script error on a call's data: those runs' records are at fault, not Redis
                    raise WriteRefused(f"Redis refused a write: {refused[0][1]}",
                                       [w.run_path for chunk, _ in refused for w in chunk])
                for chunk, replies in zip(chunks, replied, strict=True):
                    if replies == MOVED:
                        results += [MOVED] * len(chunk)
                        continue
                    if merged:
                        replies, advanced = replies
                    results += [int(r) for r in replies]
            if advanced is None and CONFLICT not in results and MOVED not in results and rows:
                calls = [(self._checkpoint, [keys.checkpoint(topic), keys.stats], row) for row in rows]
                advanced = self._evalsha_all(calls)
                failed = [r for r in advanced if isinstance(r, Exception)]
                if failed:  # no run's data is in these calls: nothing to dead-letter, and nothing to advance
                    raise StoreUnavailable(f"Redis refused to advance the checkpoints: {failed[0]}")
            if advanced is not None and -1 in (int(r) for r in advanced):
                raise StoreUnavailable(f"Redis at {self.settings.redis_display} holds older checkpoints than it acknowledged: "
                                       "it lost writes (restarted without its last fsync?)")
        return results

    def _evalsha_all(self, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """EVALSHA each (script, keys, args) in one pipeline: one round trip. redis-py's own script calls in a
        pipeline first ask SCRIPT EXISTS, a second round trip per batch; here a script Redis does not hold (it
        restarted, or SCRIPT FLUSH) is loaded when Redis says NOSCRIPT, and the calls are sent again (a call that
        got NOSCRIPT did not run; a write that ran is skipped the second time, as already applied).

        A call that failed inside its script (an error about its data) is returned as its exception, for the
        caller to name the runs; any other error reply (out of memory, read-only replica, no permission, busy,
        loading) is Redis being unable to take writes now: StoreUnavailable, and the consumer retries."""
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies = list(pipe.execute(raise_on_error=False))
            errors = [r for r in replies if isinstance(r, redis.exceptions.ResponseError)]
            if not errors:
                return replies
            if any(isinstance(e, redis.exceptions.NoScriptError) for e in errors) and attempt == 1:
                for script in {script for script, _, _ in calls}:
                    script.sha = self.client.script_load(script.script)
                continue
            for error in errors:
                if not _script_error(error):
                    raise StoreUnavailable(f"Redis cannot take the writes now: {error}") from error
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ read side
    def load_read_functions(self) -> None:
        """FUNCTION LOAD the read functions' library (consumer/lua.py) unless Redis has it. The consumer does this
        when it starts; a read that finds the library missing does it too when its user may (the read-only ACL
        user may not: it is told to start the consumer). Loading survives Redis restarts (AOF or RDB) but not a
        FUNCTION FLUSH or a Redis that lost its data."""
        with _mapped(self.settings):
            try:
                self._load_reads()
            except redis.exceptions.NoPermissionError:
                who = self.settings.redis_username or "default"
                raise ConfigError(
                    f"Redis user {who!r} may not load metricfold's read functions (FUNCTION LOAD): give the "
                    "consumer's user the rules of `python -m consumer.acl` (deploy/redis/README.md)"
                ) from None

    def _load_reads(self) -> None:
        try:
            self.client.function_load(self._reads.code)
        except redis.exceptions.ResponseError as exc:
            if "already exists" not in str(exc):
                raise

    def _read_only(self, function: str, keys: list[str], args: list[Any]) -> Any:
        """Call a read function with FCALL_RO. When Redis does not have the library (a new Redis, FUNCTION FLUSH),
        load it and call again if this user may; else say who loads it."""
        try:
            return self.client.fcall_ro(function, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
        try:
            self._load_reads()
        except redis.exceptions.NoPermissionError:
            raise StoreUnavailable(
                f"Redis at {self.settings.redis_display} does not have metricfold's read functions "
                f"({self._reads.name}) and this user may not load them: start `metricfold consume` once (the "
                "consumer loads them when it starts)"
            ) from None
        return self.client.fcall_ro(function, len(keys), *keys, *args)

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
        meta["name"] = _shown_name(meta.get("name"), run_path.rpartition("/")[2])
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
        """run_ids of a project sorted by last update or by a numeric flat path, from the sorted sets; and the total.
        An unknown project or sort path raises as `read_table` does (its read: the web's 404 and 400 decision)."""
        page = self.read_table(
            project_path, sort=None if sort == "updated" else sort, descending=descending, offset=offset, limit=limit
        )
        return [row["run_id"] for row in page.rows], page.total

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
        the *columns* of its flat view. Raises RunNotFound for an unknown project, ValidationError (a ValueError) for an
        unknown sort path: the web's 404 and 400, the CLI's and Api's errors."""
        ns = self.settings.namespace
        args: list[Any] = [ns, project_path, self._generation or "", sort or "", "1" if descending else "0", offset, limit]
        with _mapped(self.settings):
            reply = self._read_only(self._read_table, [f"{ns}:active"], [*args, *columns])
        if not reply or not reply[0]:
            raise RunNotFound(f"namespace {ns!r} has no active generation yet: nothing was folded")
        generation = _text(reply[0])
        if reply[1] in (-1, -2):
            self._refuse_table(project_path, sort, generation, unknown_project=reply[1] == -1)
        rows = []
        for run_id, meta, values in reply[3]:
            name, state, updated, created = (None if m is None else _text(m) for m in meta)
            rows.append(
                {
                    "run_id": _text(run_id),
                    "name": _shown_name(name, _text(run_id)),
                    "state": state or "",
                    "updated": int(updated or 0),
                    "created": int(created or 0),
                    "values": {c: None if v is None else json.loads(v) for c, v in zip(columns, values, strict=False)},
                }
            )
        paths = sorted(_text(p) for p in reply[4])
        return TablePage(generation=generation, total=int(reply[1]), project_runs=int(reply[2]), rows=rows, paths=paths)

    def _refuse_table(self, project_path: str, sort: str | None, generation: str, *, unknown_project: bool) -> NoReturn:
        """Raise RunNotFound for a project the generation does not have, ValidationError (a ValueError) for a sort
        path the project has no number at; each message says what there is instead (one more round trip)."""
        keys = Keys(self.settings.namespace, generation)
        where = f"namespace {self.settings.namespace!r} (generation {generation})"
        with _mapped(self.settings):
            if unknown_project:
                known = sorted(_text(p) for p in self.client.smembers(f"{keys.prefix}:projects"))
                raise RunNotFound(f"project {project_path!r} is not in {where}: "
                                  + (f"its projects are {_listed(known)}" if known else "it has no projects yet"))
            paths = sorted(_text(p) for p in self.client.smembers(keys.project(project_path, "paths")))
        raise ValidationError(
            f"project {project_path!r} has no numeric summary path {sort!r} to sort by: "
            + (f"its numeric paths are {_listed(paths)}" if paths else "it has no numeric summary values yet")
            + " (or sort by last update)",
            key="sort",
            value=sort,
        )

    def read_projects(self) -> tuple[str | None, dict[str, int], dict[str, int]]:
        """(generation, {entity/project: number of runs}, stats) in one atomic round trip."""
        ns = self.settings.namespace
        with _mapped(self.settings):
            reply = self._read_only(self._read_projects, [f"{ns}:active"], [ns])
        if not reply or not reply[0]:
            return None, {}, {}
        projects = {_text(p): int(n) for p, n in reply[1]}
        return _text(reply[0]), dict(sorted(projects.items())), {k: int(v) for k, v in _pairs(reply[2]).items()}


_FEED_POLL_S = 0.05  # the fan-out task's read timeout: how soon it takes up a new watch's subscription
_FEED_PING_S = 15.0  # a PING on the pub/sub connection this often; no answer within _FEED_PING_TIMEOUT_S: lost
_FEED_PING_TIMEOUT_S = 10.0
_FEED_SUBSCRIBE_TIMEOUT_S = 10.0
_FEED_QUEUE = 256  # notices waiting per watch; beyond that they collapse into one "*" (refetch everything)
_feed_log = logging.getLogger("metricfold.serve")


@dataclasses.dataclass(eq=False)
class _Watch:
    """One open watch of a ChangeFeed: its notices, whether its subscription stands, the error that ended it."""

    queue: asyncio.Queue[str] = dataclasses.field(default_factory=lambda: asyncio.Queue(_FEED_QUEUE))
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    error: StoreUnavailable | None = None

    def put(self, notice: str) -> None:
        try:
            self.queue.put_nowait(notice)
        except asyncio.QueueFull:  # a stream that does not keep up refetches everything instead
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait("*")

    def fail(self, error: StoreUnavailable) -> None:
        self.error = error
        self.ready.set()
        self.put("")  # wakes the watch, which raises the error


class ChangeFeed:
    """Asynchronous pub/sub notices of projects' changed runs (for live pages), following generation switches.

    One pub/sub connection however many watches are open (`metricfold serve` shares one ChangeFeed among all its
    `/changes` streams): one task reads it, subscribes to the channel of every watched project, checks
    `<ns>:active` every *recheck* seconds and hands each notice to the watches of its project; it ends when no
    watch is left. Read-only: SUBSCRIBE, UNSUBSCRIBE, PING and GET of `<ns>:active` only.
    """

    def __init__(self, settings: Settings, *, recheck: float = 2.0) -> None:
        self.settings = settings
        self.recheck = recheck
        # no health_check_interval: redis-py's PING check reads from the connection, and only the fan-out task may
        # read the pub/sub one; that task PINGs it itself
        self.client = redis.asyncio.Redis.from_url(
            settings.redis, **_client_options(settings), socket_connect_timeout=5, socket_timeout=10
        )
        self._watches: dict[str, set[_Watch]] = {}
        self._dirty = False  # a watch came or went: the fan-out task (un)subscribes
        self._hub: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.cancel()
            await asyncio.gather(hub, return_exceptions=True)
        await self.client.aclose()

    async def _active(self) -> str | None:
        try:
            value = await self.client.get(f"{self.settings.namespace}:active")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"cannot reach Redis at {self.settings.redis_display}: {_shown(exc)}") from exc
        return None if value is None else _text(value)

    async def watch(self, project_path: str, *, tick: float = 1.0) -> AsyncGenerator[str | None, None]:
        """Yield None once subscribed (from then on no change of the project is missed), then the run_id of each
        changed run of the project; None at least every *tick* seconds (a chance to stop or send a heartbeat), and
        "*" after a generation switch (everything may have changed). StoreUnavailable when Redis is lost."""
        watch = _Watch()
        self._watches.setdefault(project_path, set()).add(watch)
        self._dirty = True
        try:
            if self._hub is None or self._hub.done():
                self._hub = asyncio.get_running_loop().create_task(self._fan_out())
            try:
                await asyncio.wait_for(watch.ready.wait(), _FEED_SUBSCRIBE_TIMEOUT_S)
            except TimeoutError:
                raise StoreUnavailable(
                    f"Redis at {self.settings.redis_display} did not confirm the subscription to the changes of "
                    f"{project_path} within {_FEED_SUBSCRIBE_TIMEOUT_S:.0f} s"
                ) from None
            notice: str | None = None
            while True:
                if watch.error is not None:
                    raise StoreUnavailable(str(watch.error))
                yield notice
                try:
                    notice = await asyncio.wait_for(watch.queue.get(), tick)
                except TimeoutError:
                    notice = None
        finally:
            watches = self._watches.get(project_path)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[project_path]
                self._dirty = True

    def _notify(self, project: str | None, notice: str) -> None:
        """Hand *notice* to every watch of *project* (None: of every project)."""
        groups = list(self._watches.values()) if project is None else [self._watches.get(project, set())]
        for watches in groups:
            for watch in watches:
                watch.put(notice)

    def _stop(self, error: StoreUnavailable | None) -> None:
        """The fan-out task ends (no await from here until it has): a new watch starts a new one; *error* ends the
        open watches."""
        if self._hub is asyncio.current_task():
            self._hub = None
        if error is not None:
            for watches in self._watches.values():
                for watch in watches:
                    watch.fail(error)

    async def _fan_out(self) -> None:
        """The one reader of the pub/sub connection: (un)subscribes as watches come and go, follows generation
        switches, dispatches notices; ends once no watch is left for *recheck* seconds, or with an error for all."""
        pubsub = self.client.pubsub()
        loop = asyncio.get_running_loop()
        namespace = self.settings.namespace
        generation: str | None = None
        channels: dict[str, str] = {}  # channel -> project: SUBSCRIBE sent in this generation
        confirmed: set[str] = set()  # ... and answered by Redis
        switched: set[str] = set()  # channels subscribed after a switch: "*" to their watches once confirmed
        checked = pinged = answered = idle = loop.time()
        first = True
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]
            while True:
                now = loop.time()
                if first or now - checked >= self.recheck:
                    checked = now
                    active = await self._active()
                    if not first and active != generation:
                        if channels:
                            await pubsub.unsubscribe(*channels)
                        channels.clear()
                        confirmed.clear()
                        switched = {Keys(namespace, active).channel(p) for p in self._watches} if active else set()
                        if active is None:
                            self._notify(None, "*")
                        self._dirty = True
                    generation, first = active, False
                if pinged > answered and now - pinged > _FEED_PING_TIMEOUT_S:
                    raise redis.ConnectionError(f"no answer to PING within {_FEED_PING_TIMEOUT_S:.0f} s")
                if now - pinged >= _FEED_PING_S:
                    pinged = now
                    await pubsub.ping()
                if not self._watches and now - idle >= self.recheck:
                    self._stop(None)
                    return
                if self._watches:
                    idle = now
                if self._dirty:
                    self._dirty = False
                    wanted = {Keys(namespace, generation).channel(p): p for p in self._watches} if generation else {}
                    gone = [c for c in channels if c not in wanted]
                    new = [c for c in wanted if c not in channels]
                    if gone:
                        await pubsub.unsubscribe(*gone)
                        for channel in gone:
                            del channels[channel]
                            confirmed.discard(channel)
                    if new:
                        await pubsub.subscribe(*new)
                        channels.update((c, wanted[c]) for c in new)
                    for project, watches in self._watches.items():
                        if generation is None or Keys(namespace, generation).channel(project) in confirmed:
                            for watch in watches:
                                watch.ready.set()
                message = await pubsub.get_message(timeout=_FEED_POLL_S)
                if message is None:
                    continue
                answered = loop.time()
                channel = _text(message["channel"]) if message["channel"] is not None else ""
                owner = channels.get(channel)
                if owner is None:  # a PONG, or a channel of the generation before
                    continue
                if message["type"] == "subscribe":
                    if channel in confirmed or channel in switched:  # again after a reconnect, or after a switch
                        self._notify(owner, "*")
                    confirmed.add(channel)
                    switched.discard(channel)
                    for watch in self._watches.get(owner, ()):
                        watch.ready.set()
                elif message["type"] == "message":
                    self._notify(owner, _text(message["data"]))
        except StoreUnavailable as exc:
            self._stop(exc)
        except (redis.RedisError, OSError) as exc:
            self._stop(StoreUnavailable(f"lost the Redis subscription at {self.settings.redis_display}: {_shown(exc)}"))
        except asyncio.CancelledError:
            self._stop(StoreUnavailable("the server is stopping"))
            raise
        except Exception:
            _feed_log.exception("the live updates' fan-out failed")
            self._stop(StoreUnavailable("live updates failed (see the server log)"))
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
