"""The Starlette application of `metricfold serve`: pages, JSON API, live updates. Read-only: GET routes only.

    GET /                                            projects (HTML)
    GET /projects/{entity}/{project}                 the runs table: pinned, sortable columns, filters (where=) (HTML)
    GET /projects/{entity}/{project}/table           the same table alone (fetched again by the page on changes)
    GET /runs/{entity}/{project}/{run_id}            one run (HTML);  .../live: its live part alone
    GET /api/...                                     the JSON API (see consumer/web/openapi.py, /api/openapi.json)
    GET /api/projects/{entity}/{project}/runs.csv    the runs of a query (filters, order, columns) as CSV
    GET /metrics                                     request metrics, Prometheus text format (needs the token too)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from consumer.metrics import CONTENT_TYPE, ServeMetrics
from consumer.store import ChangeFeed, StoreReader, open_reader
from consumer.web import pages
from consumer.web.assets import APP_CSS, APP_JS
from consumer.web.data import json_safe, project_list, run_document, runs_csv_text, runs_table
from consumer.web.instrument import RequestMetrics
from consumer.web.openapi import openapi
from consumer.web.params import (
    CSV_MAX_ROWS,
    BadRequest,
    TableQuery,
    parse_project,
    parse_run,
    parse_table_query,
    parse_tensor_path,
)
from consumer.web.security import Guard
from consumer.web.sse import changes
from schemas.errors import ConfigError, RunNotFound, StoreUnavailable
from schemas.settings import Settings
from schemas.text import printable

__all__ = ["create_app"]


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(json_safe(data), status_code=status)


def _store(request: Request) -> StoreReader:
    store: StoreReader = request.app.state.store
    return store


def _table_args(request: Request, **limits: int) -> tuple[str, TableQuery]:
    project = parse_project(request.path_params["entity"], request.path_params["project"])
    params = request.query_params
    return project, parse_table_query(params, params.getlist("col"), params.getlist("where"), **limits)


# ---------------------------------------------------------------- JSON API
def api_projects(request: Request) -> Response:
    return _json(project_list(_store(request)))


def api_runs(request: Request) -> Response:
    project, query = _table_args(request)
    return _json(runs_table(_store(request), project, query))


def api_runs_csv(request: Request) -> Response:
    """The runs of the query (its filters, order and pinned columns; every matching run unless limit=...) as CSV."""
    project, query = _table_args(request, max_limit=CSV_MAX_ROWS, default_limit=CSV_MAX_ROWS)
    name = project.replace("/", "_")  # entity and project are [A-Za-z0-9_.-]: safe in the header as they are
    return Response(
        runs_csv_text(_store(request), project, query),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'inline; filename="{name}_runs.csv"', "cache-control": "no-store"},
    )


def api_paths(request: Request) -> Response:
    project = parse_project(request.path_params["entity"], request.path_params["project"])
    page = _store(request).read_table(project, limit=1)
    return _json({"project": project, "generation": page.generation, "paths": page.paths})


def api_run(request: Request) -> Response:
    p = request.path_params
    return _json(run_document(_store(request), parse_run(p["entity"], p["project"], p["run_id"])))


def api_tensor(request: Request) -> Response:
    p = request.path_params
    run_path = parse_run(p["entity"], p["project"], p["run_id"])
    path = parse_tensor_path(request.query_params)
    store = _store(request)
    run = store.read_run(run_path)
    sha = run["tensors"].get(path)
    if sha is None:
        known = ", ".join(sorted(run["tensors"])) or "none"
        raise RunNotFound(f"run {run_path} has no tensor at {path!r} (tensors: {known})")
    data = store.read_blob(run_path, sha, generation=run["generation"])
    if data is None:
        raise RunNotFound(f"the .npy bytes of {run_path} {path!r} are gone (a replay switched generations); try again")
    filename = (re.sub(r"[^A-Za-z0-9._-]+", "_", path).strip("._") or "tensor")[:100] + ".npy"
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"content-disposition": f'attachment; filename="{filename}"', "x-sha256": sha},
    )


def api_openapi(request: Request) -> Response:
    return _json(openapi())


def metrics(request: Request) -> Response:
    served: ServeMetrics = request.app.state.metrics
    return Response(served.render(), media_type=CONTENT_TYPE)


# ---------------------------------------------------------------- pages
def page_index(request: Request) -> Response:
    return HTMLResponse(pages.index_page(project_list(_store(request))))


def page_project(request: Request) -> Response:
    project, query = _table_args(request)
    doc = runs_table(_store(request), project, query)
    fragment = f"{request.url.path}/table?{request.url.query}" if request.url.query else f"{request.url.path}/table"
    return HTMLResponse(pages.project_page(doc, query, fragment))


def page_table(request: Request) -> Response:
    project, query = _table_args(request)
    return HTMLResponse(pages.table_fragment(runs_table(_store(request), project, query), query))


def page_run(request: Request) -> Response:
    p = request.path_params
    doc = run_document(_store(request), parse_run(p["entity"], p["project"], p["run_id"]))
    return HTMLResponse(pages.run_page(doc, f"{request.url.path}/live"))


def page_run_live(request: Request) -> Response:
    p = request.path_params
    doc = run_document(_store(request), parse_run(p["entity"], p["project"], p["run_id"]))
    return HTMLResponse(pages.run_summary_fragment(doc))


def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name == "app.js":
        return Response(APP_JS, media_type="text/javascript; charset=utf-8", headers={"cache-control": "max-age=300"})
    if name == "app.css":
        return Response(APP_CSS, media_type="text/css; charset=utf-8", headers={"cache-control": "max-age=300"})
    raise HTTPException(404, f"no static file {name!r}")


# ---------------------------------------------------------------- errors
def _error(request: Request, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    response: Response
    if request.url.path.startswith("/api/") or request.url.path.endswith(("/table", "/live")):
        # a message may quote a path or key someone logged: shown escaped, as the pages and the CLI show it
        response = _json({"error": kind, "message": printable(message)}, status)
    else:
        response = HTMLResponse(pages.error_page(status, message), status_code=status)
    response.headers.update(headers or {})
    return response


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, 400, "bad_request", str(exc))


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, "not_found", str(exc))


async def _unavailable(request: Request, exc: Exception) -> Response:
    return _error(request, 503, "unavailable", str(exc))


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else f"no page at {request.url.path}"
    return _error(request, exc.status_code, "http_error", message, exc.headers)  # 405: Allow: GET, HEAD


ROUTES = [
    Route("/", page_index),
    Route("/projects/{entity}/{project}", page_project),
    Route("/projects/{entity}/{project}/table", page_table),
    Route("/runs/{entity}/{project}/{run_id}", page_run),
    Route("/runs/{entity}/{project}/{run_id}/live", page_run_live),
    Route("/static/{name}", static),
    Route("/api/openapi.json", api_openapi),
    Route("/api/projects", api_projects),
    Route("/api/projects/{entity}/{project}/runs", api_runs),
    Route("/api/projects/{entity}/{project}/runs.csv", api_runs_csv),
    Route("/api/projects/{entity}/{project}/paths", api_paths),
    Route("/api/projects/{entity}/{project}/changes", changes),
    Route("/api/runs/{entity}/{project}/{run_id}", api_run),
    Route("/api/runs/{entity}/{project}/{run_id}/tensor", api_tensor),
    Route("/metrics", metrics),
]


def create_app(settings: Settings, *, token: str | None = None) -> Starlette:
    """The read-only web app over *settings*' Redis namespace; with *token*, every request needs it (/metrics
    included: Prometheus sends it with `authorization: {credentials_file: ...}` in its scrape config)."""
    served = ServeMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.store = open_reader(settings)
        app.state.feed = ChangeFeed(settings)
        try:
            yield
        finally:
            app.state.store.close()
            await app.state.feed.aclose()

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(RequestMetrics, metrics=served, routes=ROUTES), Middleware(Guard, token=token)],
        exception_handlers={
            BadRequest: _bad_request,
            RunNotFound: _not_found,
            StoreUnavailable: _unavailable,
            ConfigError: _unavailable,  # e.g. Redis refusing this ACL user a command: named, not a 500
            HTTPException: _http,
        },
        lifespan=lifespan,
    )
    app.state.metrics = served
    return app
