"""What the pages and the JSON API show, read through the store's public read interface, as plain JSON-able dicts."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any
from urllib.parse import quote, urlencode

from consumer.store import StoreReader, TablePage
from consumer.tables import runs_csv
from consumer.web.params import MAX_LIMIT, BadRequest, TableQuery
from schemas.filters import Condition, Filter

__all__ = ["DEFAULT_COLUMNS", "json_safe", "project_list", "run_document", "runs_csv_text", "runs_table", "tensor_url"]

DEFAULT_COLUMNS = 5
_PREFERRED = (".min", ".best", ".max", ".mean", ".last")


def json_safe(value: Any) -> Any:
    """Non-finite floats as the strings "NaN", "Infinity", "-Infinity" (plain JSON has no tokens for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def _json_field(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _tested_paths(f: Filter | Condition | None) -> list[str]:
    """The numeric summary paths a filter tests, in order."""
    if f is None:
        return []
    if isinstance(f, Condition):
        return [f.path] if f.field == "summary" else []
    return [p for part in f.parts for p in _tested_paths(part)]


def _default_columns(paths: list[str], sort: str | None, where: Filter | None = None) -> list[str]:
    """The sort path, the numeric paths the filters test (`acc.best > 0.9` shows acc.best), then a few others."""
    chosen = [sort] if sort else []
    known = set(paths)
    for tested in _tested_paths(where):
        if tested in known and tested not in chosen:
            chosen.append(tested)
    visible = [p for p in paths if not p.startswith("_") and p not in chosen]
    ranked = sorted(visible, key=lambda p: (not p.endswith(_PREFERRED), p))
    return chosen + ranked[: max(0, DEFAULT_COLUMNS - len(chosen))]


def _read(store: StoreReader, project: str, query: TableQuery, columns: list[str], offset: int, limit: int) -> TablePage:
    try:
        return store.read_table(
            project, sort=query.sort, descending=query.descending, offset=offset, limit=limit, columns=columns,
            where=query.filter,
        )
    except ValueError as exc:
        if query.sort is None or "to sort by" not in str(exc):  # not the sort path: say what the store said
            raise BadRequest(str(exc)) from None
        raise BadRequest(
            f"cannot sort by {query.sort!r}: project {project} has no numeric summary path of that name "
            f"(sortable paths: GET /api/projects/{project}/paths)"
        ) from None


def _table_page(
    store: StoreReader, project: str, query: TableQuery, chunk: int = MAX_LIMIT
) -> tuple[TablePage, list[str]]:
    """The page (at most *chunk* runs) and its columns: at most two round trips (a second one only to read the
    default columns)."""
    columns = list(query.columns) or ([query.sort] if query.sort else [])
    limit = min(query.limit, chunk)
    page = _read(store, project, query, columns, query.offset, limit)
    if not query.columns:
        defaults = _default_columns(page.paths, query.sort, query.filter)
        if defaults != columns:
            columns = defaults
            page = _read(store, project, query, columns, query.offset, limit)
    return page, columns


def runs_table(store: StoreReader, project: str, query: TableQuery) -> dict[str, Any]:
    """One page of the runs table, filtered by the query's where=... (total: the runs that pass, in this order)."""
    page, columns = _table_page(store, project, query)
    return {
        "project": project,
        "generation": page.generation,
        "sort": query.sort or "updated",
        "order": query.order,
        "where": list(query.where),
        "limit": query.limit,
        "offset": query.offset,
        "total": page.total,
        "project_runs": page.project_runs,
        "columns": columns,
        "paths": page.paths,
        "runs": page.rows,
    }


def runs_csv_text(store: StoreReader, project: str, query: TableQuery, *, chunk: int = MAX_LIMIT) -> str:
    """The runs of the query (filters, order, columns; *limit* rows from *offset*, by default all of them) as CSV:
    read in pages of *chunk* runs (each one atomic), written by consumer.tables.runs_csv."""
    first, columns = _table_page(store, project, query, chunk)
    rows = list(first.rows)
    seen = {row["run_id"] for row in rows}
    wanted = min(query.limit, max(0, first.total - query.offset))
    read = len(rows)
    while read < wanted:
        more = _read(store, project, query, columns, query.offset + read, min(chunk, wanted - read))
        if not more.rows or more.generation != first.generation:  # the set shrank, or a replay switched: stop here
            break
        read += len(more.rows)
        rows += [row for row in more.rows if row["run_id"] not in seen]  # a run that moved up meanwhile: once
        seen.update(row["run_id"] for row in more.rows)
    return runs_csv(dataclasses.replace(first, rows=rows[:wanted]), columns)


def tensor_url(run_path: str, path: str) -> str:
    return f"/api/runs/{quote(run_path)}/tensor?{urlencode({'path': path})}"


def run_document(store: StoreReader, run_path: str) -> dict[str, Any]:
    """Everything about one run (one atomic read): meta, config, tags, summary (nested), flat view, tensors."""
    run = store.read_run(run_path)
    meta = run["meta"]
    entity, project, run_id = run_path.split("/")
    return {
        "run": run_path,
        "entity": entity,
        "project": project,
        "run_id": run_id,
        "generation": run["generation"],
        "name": meta.get("name") or "",
        "state": meta.get("state") or "",
        "exit_code": int(meta["exit_code"]) if meta.get("exit_code") else None,
        "created": int(meta.get("created") or 0),
        "updated": int(meta.get("updated") or 0),
        "events": int(meta.get("events") or 0),
        "config": _json_field(meta.get("config"), {}),
        "tags": _json_field(meta.get("tags"), []),
        "notes": meta.get("notes"),  # notes, group, job_type: init's, None when never given
        "group": meta.get("group"),
        "job_type": meta.get("job_type"),
        "definitions": _json_field(meta.get("definitions"), []),
        "summary": run["summary"],
        "flat": run["flat"],
        "tensors": {p: {"sha256": sha, "url": tensor_url(run_path, p)} for p, sha in sorted(run["tensors"].items())},
    }


def project_list(store: StoreReader) -> dict[str, Any]:
    generation, projects, stats = store.read_projects()
    return {
        "namespace": store.settings.namespace,
        "generation": generation,
        "stats": stats,
        "projects": [{"project": p, "runs": n} for p, n in projects.items()],
    }
