"""Request parameters of the pages and the JSON API, checked with messages that say what is wrong (HTTP 400)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from schemas.errors import ValidationError
from schemas.limits import check_run_part

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_COLUMNS",
    "MAX_LIMIT",
    "BadRequest",
    "TableQuery",
    "parse_project",
    "parse_run",
    "parse_table_query",
    "parse_tensor_path",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_OFFSET = 100_000_000
MAX_COLUMNS = 40
MAX_PATH_LENGTH = 1024


class BadRequest(Exception):
    """Raised when a request parameter is invalid; the message is shown to the user (HTTP 400)."""


@dataclasses.dataclass(frozen=True)
class TableQuery:
    """What the runs table shows: the sort path (None = last update), direction, page and pinned columns."""

    sort: str | None = None
    descending: bool = True
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    columns: tuple[str, ...] = ()  # empty: the sort path and a few of the project's paths

    @property
    def order(self) -> str:
        return "desc" if self.descending else "asc"


def _part(what: str, value: str) -> str:
    try:
        return check_run_part(what, value)
    except ValidationError as exc:
        raise BadRequest(str(exc)) from None


def parse_project(entity: str, project: str) -> str:
    return f"{_part('entity', entity)}/{_part('project', project)}"


def parse_run(entity: str, project: str, run_id: str) -> str:
    return f"{parse_project(entity, project)}/{_part('run_id', run_id)}"


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {value}")
    return value


def _path(name: str, value: str) -> str:
    """A summary path as folded: any text (a key may hold characters the page shows escaped), 1 to 1024 characters;
    whether the project has it is the store's answer (a 400 or 404 that names it)."""
    if not value or len(value) > MAX_PATH_LENGTH:
        raise BadRequest(f"{name} must be a summary path of 1 to {MAX_PATH_LENGTH} characters, got {value[:80]!r}")
    return value


def parse_table_query(params: Mapping[str, str], columns: Sequence[str]) -> TableQuery:
    """sort=PATH|updated, order=desc|asc, limit=1..500, offset>=0, col=PATH (repeatable; paths may hold commas)."""
    unknown = sorted(set(params) - {"sort", "order", "limit", "offset", "col"})
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}: use sort, order, limit, offset and col")
    sort_raw = params.get("sort") or "updated"
    sort = None if sort_raw == "updated" else _path("sort", sort_raw)
    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise BadRequest(f"order must be 'asc' or 'desc', got {order!r}")
    chosen: list[str] = []
    for column in columns:
        if _path("col", column) not in chosen:
            chosen.append(column)
    if len(chosen) > MAX_COLUMNS:
        raise BadRequest(f"at most {MAX_COLUMNS} columns (col=...) at once, got {len(chosen)}")
    return TableQuery(
        sort=sort,
        descending=order == "desc",
        limit=_int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_int(params, "offset", 0, 0, MAX_OFFSET),
        columns=tuple(chosen),
    )


def parse_tensor_path(params: Mapping[str, str]) -> str:
    raw = params.get("path")
    if raw is None:
        raise BadRequest("path is required: the summary path of the tensor, e.g. ?path=weights")
    return _path("path", raw)
