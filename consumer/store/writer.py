"""The consumer's writes: a batch's run writes (views, indexes, applied offsets, fold states) and partition
checkpoints, through the `apply_runs` and `checkpoint` scripts (consumer/store/lua/): one `apply_runs` call per
project and chunk (calls.py), sent in one pipeline per Redis node (nodes.py); then the checkpoints. And what a
consumer reads to resume (checkpoints, lag sets, stored states)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis

from consumer.resume import held_by_state, resume_points
from consumer.store.calls import RUNS_PER_CALL, ApplyCall, RunWrite, apply_calls, checkpoint_rows, merge_checkpoints
from consumer.store.client import _mapped, _script_error, _text
from consumer.store.generations import Generations
from consumer.store.indexes import INDEX_VERSION, INDEXED_FIELDS, backfill_call
from consumer.store.keys import split_run_path
from consumer.store.nodes import Nodes
from schemas.errors import ConfigError, StoreUnavailable, WriteRefused

__all__ = ["APPLIED", "CONFLICT", "MOVED", "SKIPPED", "RunWrite", "StoredRun", "Writer"]

log = logging.getLogger(__name__)
APPLIED, SKIPPED, CONFLICT, MOVED = 1, 0, -1, -2
#: how often a project is added to the `projects` set again (writer.py, Writer._announce)
ANNOUNCE_AGAIN_S = 30.0


class StoredRun(NamedTuple):
    """What Redis holds of one run for the consumer (`Store.load_runs`)."""

    state: bytes | None  #: the stored fold state (None: none yet)
    applied: dict[int, int]  #: partition -> offset of the last record applied to the views
    state_at: dict[int, int]  #: partition -> offset of the last record the stored state holds


class Writer(Generations):
    """The consumer's side of the store (a part of `Store`)."""

    _apply: Any  # the registered scripts (redis-py Script objects)
    _checkpoint: Any
    _index_runs: Any
    nodes: Nodes  # where each call goes (one node, or the cluster's masters)
    _announced: set[tuple[str, str]]  # (generation, project) this store added to the `projects` set
    _announced_at: float  # when that set was emptied last (time.monotonic())

    def check_layout(self, topic: str) -> None:
        """Refuse a generation written in the layout before one hash tag per project (ConfigError): this version
        would fold beside it into keys no reader of that generation knows."""
        keys = self.keys
        with _mapped(self.settings):
            old = [key for key in keys.before_project_tags(topic) if _text(self.client.type(key)) != "none"]
        if old:
            raise ConfigError(
                f"generation {keys.generation} of namespace {self.settings.namespace!r} was written by a metricfold "
                "before the per-project key layout: stop its consumers and rebuild it with this version's "
                "`metricfold replay --switch` (README, 'Moving an existing deployment to this layout')")

    def ensure_indexes(self) -> int:
        """Put every run of the generation that is in none of the filter index sets (folded before they existed)
        into them, once: the generation's `indexes` key then holds INDEX_VERSION (a fresh generation gets it at once).
        A run whose meta changes meanwhile is left to apply_runs, which moves it (index_runs.lua checks). Safe to run
        from several consumers at once; returns how many runs this call put in their sets."""
        keys = self.keys
        done = 0
        with _mapped(self.settings):
            if _text(self.client.get(keys.indexes) or b"") == INDEX_VERSION:
                return 0
            for project in sorted(_text(p) for p in self.client.smembers(keys.projects)):
                members = self.client.zrange(keys.project(project, "runs"), 0, -1)
                run_ids = [_text(r) for r in members if isinstance(r, bytes | str)]
                for start in range(0, len(run_ids), RUNS_PER_CALL):
                    chunk = run_ids[start : start + RUNS_PER_CALL]
                    pipe = self.client.pipeline(transaction=False)
                    for run_id in chunk:
                        pipe.hmget(keys.run(f"{project}/{run_id}", "meta"), list(INDEXED_FIELDS))
                    metas = [[None if v is None else _text(v) for v in meta] for meta in pipe.execute()]
                    declared, rows = backfill_call(keys, project, list(zip(chunk, metas, strict=True)))
                    (reply,) = self.nodes.run([(self._index_runs, declared, [rows])])
                    if isinstance(reply, Exception):
                        raise StoreUnavailable(f"could not put the runs of {project} in the filter index sets: {reply}")
                    done += int(reply)
            self.client.set(keys.indexes, INDEX_VERSION)
        if done:
            log.info("put %d runs folded by an earlier version into the filter index sets of generation %s", done,
                     keys.generation)
        return done

    def checkpoints(self, topic: str) -> dict[int, int]:
        with _mapped(self.settings):
            raw = self.client.hgetall(self.keys.checkpoint(topic))
        return {int(p): int(o) for p, o in raw.items()}

    def resume_points(self, topic: str, checkpoints: dict[int, int] | None = None, *,
                      lost: Sequence[str] = ()) -> dict[int, int]:
        """Where a consumer starts reading each partition: its checkpoint, or the first offset a run's stored
        state lacks if that is lower (the lowest of every project's lag set), so that every state can be folded up
        to its views again. *checkpoints*: the ones the caller just read (`checkpoints()`), not read again.

        *lost*: run paths whose writes Redis lost after acknowledging them. On a cluster the master that lost them
        may not be the one holding the checkpoints, which then say nothing of the loss: every project on the
        master(s) of those runs is read again from its `seen` offsets (each partition from the lowest), which may
        go far back for a project idle since; a standalone Redis lost its checkpoints with the rest."""
        keys = self.keys
        if checkpoints is None:
            checkpoints = self.checkpoints(topic)
        with _mapped(self.settings):
            projects = [_text(p) for p in self.client.smembers(keys.projects)]
            pipe = self.client.pipeline(transaction=False)
            asked = [(p, project) for project in projects for p in checkpoints]
            for partition, project in asked:
                pipe.zrange(keys.lag(project, topic, partition), 0, 0, withscores=True)
            again = self.nodes.neighbours([keys.project(split_run_path(path)[0], "runs") for path in lost],
                                          {project: keys.project(project, "runs") for project in projects})
            for project in again:
                pipe.hgetall(keys.seen(project, topic))
            replies = pipe.execute() if asked or again else []
        lacking: dict[int, int | None] = dict.fromkeys(checkpoints)

        def lower(partition: int, offset: int) -> None:
            if partition in lacking:
                known = lacking[partition]
                lacking[partition] = offset if known is None else min(known, offset)

        for (partition, _), first in zip(asked, replies, strict=False):
            if first:
                lower(partition, int(first[0][1]))
        for seen in replies[len(asked):]:
            for partition, offset in seen.items():
                lower(int(partition), int(offset))
        return resume_points(checkpoints, lacking)

    def load_runs(self, run_paths: Sequence[str]) -> dict[str, StoredRun]:
        """The stored fold state of each run with the offsets it holds and the views' applied offsets (one round
        trip per node). A state stored before `stateat` existed holds exactly what the views do."""
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
            held = held_by_state(views, {int(p): int(o) for p, o in state_at.items()}, bool(state))
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
        caller; MOVED means a replay made another generation active), and only after the nodes' replicas
        acknowledged the writes (nodes.py, WAIT). With *live*, a write lands only while this store's generation is
        not retired; a replay writes with live=False into its new generation. *known* (partition -> checkpoint) is
        what the caller knows Redis held; a checkpoint below it means Redis lost acknowledged writes, and raises
        StoreUnavailable instead of moving the checkpoint over the gap.
        """
        keys = self.keys
        topic = self.settings.topic
        rows = checkpoint_rows(checkpoints, undecodable, known)
        results = [APPLIED] * len(writes)
        advanced: list[Any] | None = None
        with _mapped(self.settings):
            self.nodes.confirm()  # no batch while a failed WAIT's writes are not on the replicas yet
            if writes:
                calls = apply_calls(keys, topic, writes, live)
                if self._announce([c.project for c in calls], live):
                    return [MOVED] * len(writes)
                # one call (a standalone Redis without replicas to wait for): it advances the checkpoints too, so
                # the batch takes one round trip
                merged = bool(rows) and len(calls) == 1 and not self.nodes.cluster and not self.nodes.waits(self.client)
                if merged:
                    merge_checkpoints(calls[0], keys, topic, rows)
                replied = self.nodes.run([(self._apply, c.keys, c.args) for c in calls])
                self._refused(calls, writes, replied)
                for call, reply in zip(calls, replied, strict=True):
                    if reply == MOVED:
                        for i in call.indexes:
                            results[i] = MOVED
                        continue
                    if merged:
                        reply, advanced = reply
                    for i, result in zip(call.indexes, reply, strict=True):
                        results[i] = int(result)
            if advanced is None and CONFLICT not in results and MOVED not in results and rows:
                where = [keys.checkpoint(topic), keys.topic_stats(topic)]
                advanced = self.nodes.run([(self._checkpoint, where, row) for row in rows])
                failed = [r for r in advanced if isinstance(r, Exception)]
                if failed:  # no run's data is in these calls: nothing to dead-letter, and nothing to advance
                    self._unavailable(failed[0])
                    raise StoreUnavailable(f"Redis refused to advance the checkpoints: {failed[0]}")
            if advanced is not None and -1 in (int(r) for r in advanced):
                raise StoreUnavailable(f"Redis at {self.settings.redis_display} holds older checkpoints than it acknowledged: "
                                       "it lost writes (restarted without its last fsync?)")
        return results

    def _announce(self, projects: list[str], live: bool) -> bool:
        """Add the projects this store has not written yet to the generation's `projects` set, before their runs
        (a reader lists the projects from it). A live write then checks that its generation is still the active
        one (True: it is not, a replay switched): the switch retires the projects it finds in the set after it
        made another generation active, so a project added here before that is retired, and one added after is
        refused here. Each project is added again every ANNOUNCE_AGAIN_S: on a cluster the set lives on another
        master than the project, whose failover could lose the SADD and nothing else the consumer would notice."""
        keys = self.keys
        if time.monotonic() - self._announced_at > ANNOUNCE_AGAIN_S:
            self.forget_announced()
        new = [p for p in dict.fromkeys(projects) if (keys.generation, p) not in self._announced]
        if not new:
            return False
        self.client.sadd(keys.projects, *new)
        if live and _text(self.client.get(keys.active) or b"") != keys.generation:
            return True
        self._announced.update((keys.generation, p) for p in new)
        return False

    def forget_announced(self) -> None:
        """Add every project to the `projects` set again before its next write: after Redis lost writes (the
        consumer starts over), the SADD may be among them."""
        self._announced.clear()
        self._announced_at = time.monotonic()

    def _refused(self, calls: list[ApplyCall], writes: Sequence[RunWrite], replied: list[Any]) -> None:
        """A script error on a call's data: those runs' records are at fault (WriteRefused names them); any other
        error reply is Redis unable to take writes now (StoreUnavailable: the consumer retries)."""
        refused = [(call, reply) for call, reply in zip(calls, replied, strict=True) if isinstance(reply, Exception)]
        for _, reply in refused:
            self._unavailable(reply)
        if refused:
            raise WriteRefused(f"Redis refused a write: {refused[0][1]}",
                               [writes[i].run_path for call, _ in refused for i in call.indexes])

    @staticmethod
    def _unavailable(error: BaseException) -> None:
        if isinstance(error, redis.exceptions.ResponseError) and not _script_error(error):
            raise StoreUnavailable(f"Redis cannot take the writes now: {error}") from error
