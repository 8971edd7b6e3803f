"""The JSON API's OpenAPI 3.1 document (written by hand; served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

from consumer.web.params import CSV_MAX_ROWS, DEFAULT_LIMIT, MAX_COLUMNS, MAX_LIMIT, MAX_WHERE

__all__ = ["openapi"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _path_param(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": what,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"},
    }


def _responses(ok: dict[str, Any], *, not_found: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": ok,
        "400": {
            "description": "a bad parameter; `message` says which and why",
            "content": {"application/json": {"schema": _ERROR}},
        },
    }
    if not_found:
        out["404"] = {"description": "unknown project, run or tensor path", "content": {"application/json": {"schema": _ERROR}}}
    out["401"] = {
        "description": "the server needs a bearer token (`metricfold serve --token-file`)",
        "content": {"application/json": {"schema": _ERROR}},
    }
    out["503"] = {"description": "Redis cannot be reached", "content": {"application/json": {"schema": _ERROR}}}
    return out


def _json(ref: str) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_PROJECT = [_path_param("entity", "entity"), _path_param("project", "project")]
_RUN = [*_PROJECT, _path_param("run_id", "run id")]
_WHERE_HELP = (
    "a filter, repeatable (the filters are ANDed): `path op value`, e.g. `acc.best > 0.9`, `state = finished`, "
    '`tags in ["a","b"]`, `config.optimizer = adam`; one text may join conditions with ` or `. Operators '
    "`> >= < <= = != in nin` (`in`/`nin` take a JSON list). A path is a numeric flat summary path (see /paths), "
    "`state`, `tags`, `group`, `job_type` or `config.<top-level key>` (=, !=, in, nin only). A numeric condition "
    "holds only for runs with a number at the path: a path the project does not have matches no run (an empty "
    "page, `total` 0). A malformed filter is a 400 whose message names it."
)
_TABLE: list[dict[str, Any]] = [
    {
        "name": "sort",
        "in": "query",
        "schema": {"type": "string", "default": "updated"},
        "description": "`updated`, or a numeric flat summary path such as `loss.min` (see /paths). "
        "Runs without a number at that path are not listed in that order.",
    },
    {"name": "order", "in": "query", "schema": {"enum": ["desc", "asc"], "default": "desc"}},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {
        "name": "col",
        "in": "query",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "maxItems": MAX_COLUMNS, "items": {"type": "string"}},
        "description": "flat summary paths to return per run (repeat the parameter); "
        "default: the sort path, the paths the filters test and a few of the project's paths",
    },
    {
        "name": "where",
        "in": "query",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "maxItems": MAX_WHERE, "items": {"type": "string"}},
        "description": _WHERE_HELP,
    },
]
_LIMIT_CSV = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": CSV_MAX_ROWS},
    "description": "at most this many runs (default: every matching run)",
}
_VALUE = {"description": 'a JSON summary value; non-finite floats are the strings "NaN", "Infinity", "-Infinity"'}


def openapi() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "metricfold read API",
            "version": "1",
            "description": "Read-only views of the summaries the consumer folded into Redis (the active generation). "
            "When the server was started with a token, send `Authorization: Bearer <token>`.",
        },
        "paths": {
            "/api/projects": {
                "get": {
                    "summary": "every project with its number of runs, and the namespace's counters",
                    "responses": _responses(_json("Projects"), not_found=False),
                }
            },
            "/api/projects/{entity}/{project}/runs": {
                "get": {
                    "summary": "one page of the runs table, sorted by last update or by a numeric summary path "
                    "(from the project's sorted sets)",
                    "parameters": [*_PROJECT, *_TABLE],
                    "responses": _responses(_json("RunsPage")),
                }
            },
            "/api/projects/{entity}/{project}/runs.csv": {
                "get": {
                    "summary": "the runs of a query as CSV: a header (run_id, name, state, updated in ms, then the "
                    "columns), one row per run; with the same sort, order, col and where as /runs, and every matching "
                    f"run unless limit is given (at most {CSV_MAX_ROWS:,}): `pandas.read_csv(url)`",
                    "parameters": [*_PROJECT, *_TABLE[:2], _LIMIT_CSV, *_TABLE[3:]],
                    "responses": _responses(
                        {"description": "CSV (RFC 4180)", "content": {"text/csv": {"schema": {"type": "string"}}}}
                    ),
                }
            },
            "/api/projects/{entity}/{project}/paths": {
                "get": {
                    "summary": "the project's numeric flat summary paths (sortable; the column picker)",
                    "parameters": _PROJECT,
                    "responses": _responses(_json("Paths")),
                }
            },
            "/api/projects/{entity}/{project}/changes": {
                "get": {
                    "summary": "server-sent events: `event: change` with `data: <run_id>` for each run the consumer folded "
                    "(`*` after a generation switch)",
                    "parameters": _PROJECT,
                    "responses": _responses(
                        {
                            "description": "an endless text/event-stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        }
                    ),
                }
            },
            "/api/runs/{entity}/{project}/{run_id}": {
                "get": {
                    "summary": "one run: state, counts, config, tags, nested summary, flat view, tensors",
                    "parameters": _RUN,
                    "responses": _responses(_json("Run")),
                }
            },
            "/api/runs/{entity}/{project}/{run_id}/tensor": {
                "get": {
                    "summary": "the full tensor logged at a summary path, as .npy bytes (numpy.load(..., allow_pickle=False))",
                    "parameters": [
                        *_RUN,
                        {
                            "name": "path",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                            "description": "display path of the tensor, e.g. `weights`",
                        },
                    ],
                    "responses": _responses(
                        {
                            "description": "the .npy file",
                            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                        }
                    ),
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "Projects": {
                    "type": "object",
                    "properties": {
                        "namespace": {"type": "string"},
                        "generation": {"type": ["string", "null"]},
                        "stats": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "projects": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"project": {"type": "string"}, "runs": {"type": "integer"}},
                            },
                        },
                    },
                },
                "Paths": {
                    "type": "object",
                    "properties": {"project": {"type": "string"}, "paths": {"type": "array", "items": {"type": "string"}}},
                },
                "RunsPage": {
                    "type": "object",
                    "properties": {
                        "project": {"type": "string"},
                        "generation": {"type": "string"},
                        "sort": {"type": "string"},
                        "order": {"enum": ["desc", "asc"]},
                        "where": {"type": "array", "items": {"type": "string"}, "description": "the filters, canonical"},
                        "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                        "total": {
                            "type": "integer",
                            "description": "runs in this order that pass the filters (all runs when sorting by "
                            "`updated` without filters)",
                        },
                        "project_runs": {"type": "integer"},
                        "columns": {"type": "array", "items": {"type": "string"}},
                        "paths": {"type": "array", "items": {"type": "string"}},
                        "runs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "run_id": {"type": "string"},
                                    "name": {"type": "string"},
                                    "state": {"enum": ["running", "finished", "crashed", ""]},
                                    "updated": {"type": "integer", "description": "ms since the epoch"},
                                    "created": {"type": "integer"},
                                    "values": {
                                        "type": "object",
                                        "additionalProperties": _VALUE,
                                        "description": "column path -> value (null when the run has none)",
                                    },
                                },
                            },
                        },
                    },
                },
                "Run": {
                    "type": "object",
                    "properties": {
                        "run": {"type": "string"},
                        "entity": {"type": "string"},
                        "project": {"type": "string"},
                        "run_id": {"type": "string"},
                        "generation": {"type": "string"},
                        "name": {"type": "string"},
                        "state": {"type": "string"},
                        "exit_code": {"type": ["integer", "null"]},
                        "created": {"type": "integer"},
                        "updated": {"type": "integer"},
                        "events": {"type": "integer", "description": "events folded into the run"},
                        "config": {"type": "object"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "notes": {"type": ["string", "null"], "description": "init(notes=); null when never given"},
                        "group": {"type": ["string", "null"], "description": "init(group=)"},
                        "job_type": {"type": ["string", "null"], "description": "init(job_type=)"},
                        "definitions": {"type": "array"},
                        "summary": {
                            "type": "object",
                            "additionalProperties": _VALUE,
                            "description": "top-level key -> value, nested as logged",
                        },
                        "flat": {
                            "type": "object",
                            "additionalProperties": _VALUE,
                            "description": "display path -> scalar (the Grafana view)",
                        },
                        "tensors": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {"sha256": {"type": "string"}, "url": {"type": "string"}},
                            },
                        },
                    },
                },
            }
        },
    }
