"""The read side: one run, a page of a project's runs table, the projects; each resolving the active generation
and reading in one atomic step (the read functions of consumer/store/lua/, FCALL_RO), for the CLI, `Api()`, the
web page and Grafana's users alike."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, NoReturn

import redis

from consumer.store.client import _mapped, _pairs, _text
from consumer.store.generations import Generations
from consumer.store.keys import Keys, active_key
from consumer.store.scripts import FunctionLibrary
from schemas.errors import ConfigError, RunNotFound, StoreUnavailable, ValidationError
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



class Reader(Generations):
    """The read side of the store (a part of `Store`)."""

    _reads: FunctionLibrary
    _read_run: str
    _read_table: str
    _read_projects: str

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
            reply = self._read_only(self._read_run, [active_key(ns)], [ns, run_path, self._generation or ""])
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
            reply = self._read_only(self._read_table, [active_key(ns)], [*args, *columns])
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
        """(generation, {entity/project: number of runs}, stats) in one atomic round trip."""
        ns = self.settings.namespace
        with _mapped(self.settings):
            reply = self._read_only(self._read_projects, [active_key(ns)], [ns])
        if not reply or not reply[0]:
            return None, {}, {}
        projects = {_text(p): int(n) for p, n in reply[1]}
        return _text(reply[0]), dict(sorted(projects.items())), {k: int(v) for k, v in _pairs(reply[2]).items()}

