"""Request parameters of the pages and the JSON API, checked with messages that say what is wrong (HTTP 400)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from schemas.errors import ValidationError
from schemas.filters import BY_UPDATE, Filter, parse_where, where_texts
from schemas.limits import check_run_part

__all__ = [
    "CSV_MAX_ROWS",
    "DEFAULT_LIMIT",
    "MAX_COLUMNS",
    "MAX_LIMIT",
    "MAX_WHERE",
    "BadRequest",
    "TableQuery",
    "parse_project",
    "parse_run",
    "parse_table_query",
    "parse_tensor_path",
    "parse_where_texts",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_OFFSET = 100_000_000
MAX_COLUMNS = 40
MAX_PATH_LENGTH = 1024
MAX_WHERE = 20  # where=... filters at once (ANDed)
MAX_WHERE_LENGTH = 4096  # characters of one where=... text (an `in` list may be long)
CSV_MAX_ROWS = 100_000  # rows of one runs.csv (read from the store in pages of MAX_LIMIT)


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
    where: tuple[str, ...] = ()  # the filters, canonical text (schemas.filters.where_texts), ANDed
    filter: Filter | None = None  # the same, parsed: what the store reads with

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


def parse_where_texts(texts: Sequence[str]) -> tuple[Filter | None, tuple[str, ...]]:
    """where=TEXT (repeatable, ANDed), e.g. `acc.best > 0.9`, `state = "finished"`, `tags in ["a", "b"]`: parsed
    (schemas.filters.parse_where), a malformed one a 400 that names it and says why; the texts come back canonical."""
    given = [text for text in texts if text.strip()]  # an empty box of the page's filter bar is no filter
    if len(given) > MAX_WHERE:
        raise BadRequest(f"at most {MAX_WHERE} filters (where=...) at once, got {len(given)}")
    for text in given:
        if len(text) > MAX_WHERE_LENGTH:
            raise BadRequest(f"a filter (where=...) has at most {MAX_WHERE_LENGTH} characters, got {len(text)}: {text[:80]!r}...")
    try:
        parsed = parse_where(given)
    except ValidationError as exc:
        raise BadRequest(f"bad filter (where=...): {exc}") from None
    return parsed, tuple(where_texts(parsed)) if parsed is not None else ()


def parse_table_query(
    params: Mapping[str, str],
    columns: Sequence[str],
    where: Sequence[str] = (),
    *,
    max_limit: int = MAX_LIMIT,
    default_limit: int = DEFAULT_LIMIT,
) -> TableQuery:
    """sort=PATH|updated, order=desc|asc, limit=1..500, offset>=0, col=PATH (repeatable; paths may hold commas),
    where=FILTER (repeatable, ANDed; see parse_where_texts)."""
    unknown = sorted(set(params) - {"sort", "order", "limit", "offset", "col", "where"})
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}: use sort, order, limit, offset, col and where")
    sort_raw = params.get("sort") or BY_UPDATE
    sort = None if sort_raw == BY_UPDATE else _path("sort", sort_raw)
    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise BadRequest(f"order must be 'asc' or 'desc', got {order!r}")
    chosen: list[str] = []
    for column in columns:
        if _path("col", column) not in chosen:
            chosen.append(column)
    if len(chosen) > MAX_COLUMNS:
        raise BadRequest(f"at most {MAX_COLUMNS} columns (col=...) at once, got {len(chosen)}")
    parsed, texts = parse_where_texts(where)
    return TableQuery(
        sort=sort,
        descending=order == "desc",
        limit=_int(params, "limit", default_limit, 1, max_limit),
        offset=_int(params, "offset", 0, 0, MAX_OFFSET),
        columns=tuple(chosen),
        where=texts,
        filter=parsed,
    )


def parse_tensor_path(params: Mapping[str, str]) -> str:
    raw = params.get("path")
    if raw is None:
        raise BadRequest("path is required: the summary path of the tensor, e.g. ?path=weights")
    return _path("path", raw)
