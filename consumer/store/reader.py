"""The read side: one run, a page of a project's runs table, the projects; for the CLI, `Api()`, the web page and
Grafana's users alike.

A read resolves the active generation (GET `<ns>:active`), then reads that generation's keys of one project with a
read function (consumer/store/lua/, FCALL_RO: one atomic step on the project's hash slot), so a read never mixes
two generations. A replay's switch may delete the generation between the two: a read that finds nothing while
another generation became active reads again from it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, NoReturn

import redis

from consumer.store.client import _mapped, _pairs, _text
from consumer.store.generations import Generations
from consumer.store.indexes import compile_filter
from consumer.store.keys import Keys
from consumer.store.scripts import FunctionLibrary
from schemas.errors import ConfigError, RunNotFound, StoreUnavailable, ValidationError
from schemas.filters import BY_UPDATE, Condition, Filter
from schemas.names import run_name

__all__ = ["Reader", "TablePage"]


@dataclasses.dataclass(frozen=True)
class TablePage:
    """One page of a project's runs table (Store.read_table)."""

    generation: str
    total: int  # runs in the sort index (every run when sorting by last update; those with a number at the path otherwise)
    project_runs: int  # runs in the project
    rows: list[dict[str, Any]]  # run_id, name, state, updated, created (ms), values: {path: JSON value or None}
    paths: list[str]  # the project's numeric flat paths, sorted (sortable; the column picker)



def _listed(names: Sequence[str], shown: int = 12) -> str:
    """``a, b, c`` or ``a, b, c, ... (40 in all)``: what exists, in an error message."""
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _shown_name(name: str | None, run_id: str) -> str:
    """The run's name for every reader: the one it was given, else the one made up from its run id (as the SDK's
    ``run.name`` shows it; W&B's adjective-noun-N). Never stored: the fold and the digests do not see it."""
    return name or run_name(run_id)



def _needs_path(where: Filter, path: str) -> bool:
    """Whether every run that passes *where* has a number at *path* (an AND holding a condition on it)."""
    return not where.any_of and any((isinstance(p, Condition) and p.field == "summary" and p.path == path) or
                                    (isinstance(p, Filter) and _needs_path(p, path)) for p in where.parts)


class Reader(Generations):
    """The read side of the store (a part of `Store`)."""

    _reads: FunctionLibrary
    _read_run: str
    _read_page: str

    def load_read_functions(self) -> None:
        """FUNCTION LOAD the read functions' library (consumer/store/scripts.py) unless Redis has it. The consumer does this
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
        self.client.function_load(self._reads.code, replace=True)  # on every master of a cluster

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
        """summary, flat, meta and tensors of one run, of one generation, read in one atomic step."""
        ns = self.settings.namespace
        with _mapped(self.settings):
            generation = self._read_generation()
            keys = Keys(ns, generation)
            parts = [keys.run(run_path, part) for part in ("summary", "flat", "meta", "tensors")]
            reply = self._read_only(self._read_run, parts, [])
            if not reply[0] and not reply[2] and self._generation is None and self._read_generation() != generation:
                return self.read_run(run_path)  # a switch deleted that generation meanwhile
        summary, flat, meta, tensors = (_pairs(r) for r in reply)
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
        page = self.read_table(project_path, sort=sort, descending=descending, offset=offset, limit=limit)
        return [row["run_id"] for row in page.rows], page.total

    def project_paths(self, project_path: str) -> list[str]:
        keys = Keys(self.settings.namespace, self._read_generation())
        with _mapped(self.settings):
            return sorted(_text(p) for p in self.client.smembers(keys.project(project_path, "paths")))

    def stats(self) -> dict[str, int]:
        """events and dead_letters applied (every project's), undecodable records of the topic."""
        return self.read_projects()[2]

    def read_table(
        self,
        project_path: str,
        *,
        sort: str | None = None,
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        columns: Sequence[str] = (),
        where: Filter | None = None,
    ) -> TablePage:
        """A page of the runs table in ONE atomic round trip: ids from the sorted set, then each run's meta and
        the *columns* of its flat view. Raises RunNotFound for an unknown project, ValidationError (a ValueError) for an
        unknown sort path: the web's 404 and 400, the CLI's and Api's errors. With *where*, only the runs that pass
        it (read_where.lua; `total` counts them): a path the project does not have matches no run."""
        if sort == BY_UPDATE:
            sort = None
        ns = self.settings.namespace
        with _mapped(self.settings):
            generation = self._read_generation()
            keys = Keys(ns, generation)
            index = [keys.project(project_path, "runs"), keys.project(project_path, "paths")]
            if sort:
                index.append(keys.by_path(project_path, sort))
            args = ["1" if descending else "0", offset, limit, sort or ""]
            if where is None:
                reply = self._read_only(self._read_page, index, args)
            else:
                index = index[:3] if sort else [*index, index[0]]
                filter_keys, tree = compile_filter(keys, project_path, where, len(index) + 1)
                args += [tree, "1" if sort and _needs_path(where, sort) else ""]
                reply = self._read_only(self._reads.functions["read_where"], [*index, *filter_keys], args)
            if reply == -1 and self._generation is None and self._read_generation() != generation:
                return self.read_table(project_path, sort=sort, descending=descending, offset=offset, limit=limit,
                                       columns=columns, where=where)  # a switch deleted that generation meanwhile
            if reply in (-1, -2):
                self._refuse_table(project_path, sort, generation, unknown_project=reply == -1)
            total, project_runs, ids, paths = reply
            ids = [_text(i) for i in ids]
            pipe = self.client.pipeline(transaction=False)  # the rows: one round trip to the project's node
            for run_id in ids:
                run_path = f"{project_path}/{run_id}"
                pipe.hmget(keys.run(run_path, "meta"), "name", "state", "updated", "created")
                if columns:
                    pipe.hmget(keys.run(run_path, "flat"), *columns)
            replies = pipe.execute() if ids else []
        step = 2 if columns else 1
        rows = []
        for n, run_id in enumerate(ids):
            name, state, updated, created = (None if m is None else _text(m) for m in replies[step * n])
            values = replies[step * n + 1] if columns else []
            rows.append(
                {
                    "run_id": run_id,
                    "name": _shown_name(name, run_id),
                    "state": state or "",
                    "updated": int(updated or 0),
                    "created": int(created or 0),
                    "values": {c: None if v is None else json.loads(v) for c, v in zip(columns, values, strict=False)},
                }
            )
        return TablePage(generation=generation, total=int(total), project_runs=int(project_runs), rows=rows,
                         paths=sorted(_text(p) for p in paths))

    def _refuse_table(self, project_path: str, sort: str | None, generation: str, *, unknown_project: bool) -> NoReturn:
        """Raise RunNotFound for a project the generation does not have, ValidationError (a ValueError) for a sort
        path the project has no number at; each message says what there is instead (one more round trip)."""
        keys = Keys(self.settings.namespace, generation)
        where = f"namespace {self.settings.namespace!r} (generation {generation})"
        with _mapped(self.settings):
            if unknown_project:
                known = sorted(_text(p) for p in self.client.smembers(keys.projects))
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
        """(generation, {entity/project: number of runs}, stats): the `projects` set, then every project's run
        count and stats, and the topic's, in one pipeline (one round trip per node)."""
        with _mapped(self.settings):
            try:
                generation = self._read_generation()
            except RunNotFound:
                return None, {}, {}
            keys = Keys(self.settings.namespace, generation)
            projects = sorted(_text(p) for p in self.client.smembers(keys.projects))
            pipe = self.client.pipeline(transaction=False)
            for project in projects:
                pipe.zcard(keys.project(project, "runs"))
                pipe.hgetall(keys.project_stats(project))
            pipe.hgetall(keys.topic_stats(self.settings.topic))
            replies = pipe.execute()
        counts: dict[str, int] = {}
        stats: dict[str, int] = {}
        for n, project in enumerate(projects):
            if replies[2 * n]:  # a project with no run yet (its first write did not land) is not listed
                counts[project] = int(replies[2 * n])
            for field, value in replies[2 * n + 1].items():
                stats[_text(field)] = stats.get(_text(field), 0) + int(value)
        for field, value in replies[-1].items():
            stats[_text(field)] = stats.get(_text(field), 0) + int(value)
        return generation, counts, stats
