"""What the pages and the JSON API show, read through the store's public read interface, as plain JSON-able dicts."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote, urlencode

from consumer.store import StoreReader
from consumer.web.params import BadRequest, TableQuery

__all__ = ["DEFAULT_COLUMNS", "json_safe", "project_list", "run_document", "runs_table", "tensor_url"]

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


def _default_columns(paths: list[str], sort: str | None) -> list[str]:
    chosen = [sort] if sort else []
    visible = [p for p in paths if not p.startswith("_") and p not in chosen]
    ranked = sorted(visible, key=lambda p: (not p.endswith(_PREFERRED), p))
    return chosen + ranked[: max(0, DEFAULT_COLUMNS - len(chosen))]


def runs_table(store: StoreReader, project: str, query: TableQuery) -> dict[str, Any]:
    """One page of the runs table: at most two round trips (a second one only to read the default columns)."""
    columns = list(query.columns) or ([query.sort] if query.sort else [])
    try:
        page = store.read_table(
            project, sort=query.sort, descending=query.descending, offset=query.offset, limit=query.limit, columns=columns
        )
        if not query.columns:
            defaults = _default_columns(page.paths, query.sort)
            if defaults != columns:
                columns = defaults
                page = store.read_table(
                    project, sort=query.sort, descending=query.descending, offset=query.offset, limit=query.limit,
                    columns=columns,
                )
    except ValueError:
        raise BadRequest(
            f"cannot sort by {query.sort!r}: project {project} has no numeric summary path of that name "
            f"(sortable paths: GET /api/projects/{project}/paths)"
        ) from None
    return {
        "project": project,
        "generation": page.generation,
        "sort": query.sort or "updated",
        "order": query.order,
        "limit": query.limit,
        "offset": query.offset,
        "total": page.total,
        "project_runs": page.project_runs,
        "columns": columns,
        "paths": page.paths,
        "runs": page.rows,
    }


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
