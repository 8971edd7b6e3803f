"""Server-rendered HTML: every string from Redis (metric names, values, names, tags, config) goes through `e()`.

Shown as text, it goes through `t()`: unprintable characters escaped as on the terminal (`schemas.text.printable`:
ESC, NUL, CR/LF, bidi overrides become `\\x1b`, `\\u202e`, ...) and the direction isolated in `<bdi>`, so that right-to-
left text cannot reorder what stands around it. Attributes (`data-col`, the column picker's values) carry the text
as folded, HTML-escaped.
"""

from __future__ import annotations

import datetime
import html
import math
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

from consumer.tables import format_value
from consumer.web.params import TableQuery
from consumer.web.widgets import filter_bar, nested_table, percentile_bar
from schemas.paths import escape_segment
from schemas.text import printable

__all__ = ["error_page", "index_page", "project_page", "run_page", "run_summary_fragment", "table_fragment"]


_STATS = ("min", "10%", "25%", "50%", "75%", "90%", "max", "mean", "var", "size")
_TENSOR_HEAD = ("_type", "dtype", "shape")


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def t(value: object) -> str:
    """User text as element content: unprintable characters escaped, HTML-escaped, its direction isolated."""
    return f"<bdi>{html.escape(printable(str(value)), quote=True)}</bdi>"


def when(ms: int) -> str:
    if not ms:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _layout(title: str, body: str, *, live: dict[str, str] | None = None) -> str:
    data = "".join(f' data-{k}="{e(v)}"' for k, v in (live or {}).items())
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(printable(title))} · metricfold</title>"
        '<link rel="stylesheet" href="/static/app.css"><script src="/static/app.js" defer></script></head>'
        f"<body{data}><header><a class=\"brand\" href=\"/\">metricfold</a>"
        '<span id="live" data-state="off" title="live updates"></span></header>'
        f"<main>{body}</main></body></html>\n"
    )


def error_page(status: int, message: str) -> str:
    body = f'<h1>{status}</h1><p class="error">{e(printable(message))}</p><p><a href="/">all projects</a></p>'
    return _layout(f"{status}", body)


def index_page(doc: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td><a href="/projects/{e(quote(p["project"]))}">{e(p["project"])}</a></td><td class="num">{p["runs"]:,}</td></tr>'
        for p in doc["projects"]
    )
    stats = ", ".join(f"{e(k)} {v:,}" for k, v in sorted(doc["stats"].items())) or "no events folded yet"
    table = f"<table><thead><tr><th>project</th><th>runs</th></tr></thead><tbody>{rows}</tbody></table>" if rows else ""
    return _layout(
        "projects",
        f"<h1>Projects</h1><p class=\"muted\">namespace {e(doc['namespace'])}, generation {e(doc['generation'] or '-')}: "
        f"{stats}</p>{table or '<p>No projects yet: nothing was folded.</p>'}",
    )


def _query(q: TableQuery, **changes: Any) -> str:
    sort = changes.get("sort", q.sort) or "updated"
    pairs: list[tuple[str, str]] = [("sort", sort), ("order", changes.get("order", q.order))]
    pairs += [("limit", str(changes.get("limit", q.limit))), ("offset", str(changes.get("offset", q.offset)))]
    pairs += [("col", c) for c in changes.get("columns", q.columns)]
    pairs += [("where", w) for w in changes.get("where", q.where)]
    return "?" + urlencode(pairs)


def _sort_link(q: TableQuery, label: str, path: str | None, columns: list[str]) -> str:
    current = (q.sort or None) == path
    order = "asc" if current and q.descending else "desc"
    arrow = (" ▼" if q.descending else " ▲") if current else ""
    href = _query(q, sort=path, order=order, offset=0, columns=columns if q.columns else ())
    cls = ' class="sorted"' if current else ""
    return f'<a{cls} href="{e(href)}" data-sort="{e(path or "updated")}">{t(label)}{arrow}</a>'


def table_fragment(doc: dict[str, Any], q: TableQuery) -> str:
    """The runs table and its pager (also sent alone to the live page when the project changes)."""
    project, columns, numeric = doc["project"], doc["columns"], set(doc["paths"])
    head = ['<th class="pin">run</th><th>state</th>', f"<th>{_sort_link(q, 'updated', None, columns)}</th>"]
    for c in columns:
        label = _sort_link(q, c, c, columns) if c in numeric else t(c)
        head.append(f'<th class="num" data-col="{e(c)}">{label}</th>')
    body = []
    for r in doc["runs"]:
        href = f"/runs/{quote(project)}/{quote(r['run_id'])}"
        name = r["name"] or r["run_id"]
        cells = "".join(f'<td class="num" data-col="{e(c)}">{t(format_value(r["values"].get(c)))}</td>' for c in columns)
        body.append(
            f'<tr data-run="{e(r["run_id"])}"><td class="pin"><a href="{e(href)}">{t(name)}</a> '
            f'<small>{e(r["run_id"])}</small></td><td><span class="state {e(r["state"])}">{t(r["state"] or "-")}</span></td>'
            f"<td>{e(when(r['updated']))}</td>{cells}</tr>"
        )
    total, first = doc["total"], q.offset + 1
    last = q.offset + len(doc["runs"])
    pages = []
    if q.offset > 0:
        pages.append(f'<a href="{e(_query(q, offset=0))}">&laquo; first</a>')
        pages.append(f'<a rel="prev" href="{e(_query(q, offset=max(0, q.offset - q.limit)))}">&lsaquo; previous</a>')
    if last < total:
        pages.append(f'<a rel="next" href="{e(_query(q, offset=q.offset + q.limit))}">next &rsaquo;</a>')
        pages.append(f'<a href="{e(_query(q, offset=(total - 1) // q.limit * q.limit))}">last &raquo;</a>')
    shown = f"runs {first:,}&ndash;{last:,} of {total:,}" if doc["runs"] else f"no runs here ({total:,} in this order)"
    extra = ""
    if q.where:
        shown = shown if doc["runs"] or total else "no runs match the filters"
        plural = "s" if len(q.where) > 1 else ""
        extra = f' <span id="matched">({total:,} of {doc["project_runs"]:,} runs match the {len(q.where)} filter{plural})</span>'
    elif doc["sort"] != "updated" and total < doc["project_runs"]:
        extra = f" ({doc['project_runs'] - total:,} runs have no number at {t(doc['sort'])} and are not listed in this order)"
    return (
        f'<div class="scroll"><table id="runs"><thead><tr>{"".join(head)}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div>'
        f'<nav class="pager"><span>{shown}{extra}</span> {" ".join(pages)}</nav>'
    )


def _form_safe(text: str) -> bool:
    """Whether an HTML form sends *text* back as it is: NUL becomes U+FFFD, a lone CR or LF becomes CR LF."""
    return not any(c in text for c in "\x00\r\n")


def _picker(doc: dict[str, Any], q: TableQuery) -> str:
    """Check boxes in a GET form; a path (or a current sort or column) that a form cannot carry as it is gets a link
    instead (its URL holds the path percent-encoded), so every listed path can be pinned exactly as folded."""
    columns: list[str] = doc["columns"]
    as_form = all(_form_safe(v) for v in (doc["sort"], *columns, *q.where))

    def link(path: str) -> str:
        pinned = path in columns
        toggled = [c for c in columns if c != path] if pinned else [*columns, path]
        href = _query(q, columns=toggled, offset=0)
        box = "&#9745;" if pinned else "&#9744;"
        return f'<a class="pin" href="{e(href)}" data-col="{e(path)}">{box} {t(path)}</a>'

    boxes = "".join(
        f'<label><input type="checkbox" name="col" value="{e(p)}"{" checked" if p in columns else ""}> {t(p)}</label>'
        if as_form and _form_safe(p) else link(p)
        for p in doc["paths"]
    )
    summary = f'<summary>columns ({len(columns)} pinned of {len(doc["paths"])} summary paths)</summary>'
    if not as_form:
        return f'<details id="picker">{summary}<div class="boxes">{boxes}</div></details>'
    others = "".join(f'<input type="hidden" name="col" value="{e(c)}">' for c in columns if c not in doc["paths"])
    keep = [("sort", doc["sort"]), ("order", q.order), ("limit", q.limit), *(("where", w) for w in q.where)]
    hidden = "".join(f'<input type="hidden" name="{k}" value="{e(v)}">' for k, v in keep)
    return (
        f'<details id="picker">{summary}<form method="get">{hidden}{others}<div class="boxes">{boxes}</div>'
        '<button type="submit">show these columns</button></form></details>'
    )


def _filters(doc: dict[str, Any], q: TableQuery) -> str:
    """The filter bar: a GET form, so its state is the URL's where=... (with the sort, order and pinned columns)."""
    state = [("sort", doc["sort"]), ("order", q.order)] + [("col", c) for c in q.columns]
    wheres = [("where", w) for w in q.where]
    csv_query = state[:2] + [("col", c) for c in doc["columns"]] + wheres  # what the page shows, every matching run
    hidden = [*state, ("limit", str(q.limit)), *wheres]
    return filter_bar(
        [(w, _query(q, where=[x for x in q.where if x != w], offset=0)) for w in q.where],
        hidden if all(_form_safe(v) for _, v in hidden) else None,
        clear=_query(q, where=(), offset=0) if q.where else None,
        csv=f"/api/projects/{quote(doc['project'])}/runs.csv?{urlencode(csv_query)}",
        paths=doc["paths"],
    )


def project_page(doc: dict[str, Any], q: TableQuery, fragment_url: str) -> str:
    project = doc["project"]
    body = (
        f"<h1>{e(project)}</h1><p class=\"muted\">{doc['project_runs']:,} runs · sorted by {t(doc['sort'])} "
        f"({e(doc['order'])}) · generation {e(doc['generation'])}</p>{_filters(doc, q)}{_picker(doc, q)}"
        f'<div id="table-area">{table_fragment(doc, q)}</div>'
    )
    live = {"events": f"/api/projects/{quote(project)}/changes", "refresh": fragment_url, "target": "table-area"}
    return _layout(project, body, live=live)


def _tags(tags: Iterable[object]) -> str:
    return " ".join(f'<span class="tag">{t(tag)}</span>' for tag in tags) or "-"


def _summary_rows(doc: dict[str, Any]) -> str:
    tensors: dict[str, dict[str, str]] = doc["tensors"]
    rows = []
    for key, value in sorted(doc["summary"].items()):
        path = escape_segment(key)
        rows.append(f'<tr data-key="{e(key)}"><th>{t(key)}</th><td>{_value(value, path, tensors)}</td></tr>')
    return "".join(rows)


def _value(value: Any, path: str, tensors: dict[str, dict[str, str]]) -> str:
    if isinstance(value, dict) and "_type" in value:
        link = tensors.get(path)
        download = f' <a class="download" href="{e(link["url"])}" download>download .npy</a>' if link else ""
        shape = value.get("shape")
        dims = "\u00d7".join(str(s) for s in shape) if isinstance(shape, list) else format_value(shape)
        head = f'<div class="tensor">{t(value.get("_type", ""))} {t(value.get("dtype", ""))} [{t(dims)}]{download}</div>'
        keys = [k for k in _STATS if k in value] + [k for k in value if k not in _STATS and k not in _TENSOR_HEAD]
        heads = "".join(f"<th>{t(k)}</th>" for k in keys)
        cells = "".join(f'<td class="num">{t(format_value(value[k]))}</td>' for k in keys)
        return head + percentile_bar(value) + f'<table class="stats"><tr>{heads}</tr><tr>{cells}</tr></table>'
    if isinstance(value, dict):
        inner = "".join(
            f'<tr data-key="{e(k)}"><th>{t(k)}</th><td>{_value(v, f"{path}.{escape_segment(k)}", tensors)}</td></tr>'
            for k, v in value.items()
        )
        return f'<table class="nested">{inner}</table>'
    cls = "num" if isinstance(value, int | float) and not isinstance(value, bool) else "text"
    if isinstance(value, float) and not math.isfinite(value):
        cls = "num nonfinite"
    return f'<span class="{cls}" data-path="{e(path)}">{t(format_value(value))}</span>'


def _run_labels(doc: dict[str, Any]) -> str:
    """init's group and job_type, when given (the runs table filters on them)."""
    return "".join(
        f'<dt>{label}</dt><dd id="run-{field}">{t(doc[field])}</dd>'
        for field, label in (("group", "group"), ("job_type", "job type"))
        if doc.get(field)
    )


def _notes(notes: str | None) -> str:
    """init's notes, line by line (each line's unprintable characters escaped, as any user text)."""
    if not notes:
        return ""
    return '<p class="notes" id="run-notes">' + "<br>".join(t(line) for line in notes.split("\n")) + "</p>"


def run_summary_fragment(doc: dict[str, Any]) -> str:
    """The run's live part: state, counts and the summary (re-sent to the page when the run changes)."""
    exit_code = "" if doc["exit_code"] is None else f" (exit code {doc['exit_code']})"
    facts = (
        f'<dl class="facts"><dt>state</dt><dd><span class="state {e(doc["state"])}" id="run-state">{t(doc["state"] or "-")}'
        f"</span>{e(exit_code)}</dd><dt>events folded</dt><dd id=\"run-events\">{doc['events']:,}</dd>"
        f"<dt>created</dt><dd>{e(when(doc['created']))}</dd><dt>updated</dt><dd id=\"run-updated\">{e(when(doc['updated']))}</dd>"
        f"<dt>tags</dt><dd>{_tags(doc['tags'])}</dd>{_run_labels(doc)}<dt>generation</dt><dd>{e(doc['generation'])}</dd></dl>"
    )
    summary = _summary_rows(doc) or '<tr><td colspan="2">no summary values yet</td></tr>'
    flat = "".join(
        f'<tr><th>{t(p)}</th><td class="num">{t(format_value(v))}</td></tr>' for p, v in sorted(doc["flat"].items())
    )
    return (
        f"{facts}<h2>Summary</h2><table id=\"summary\" class=\"summary\">{summary}</table>"
        f'<details><summary>flat view ({len(doc["flat"])} paths, as in Grafana)</summary>'
        f'<table class="flat">{flat}</table></details>'
    )


def run_page(doc: dict[str, Any], fragment_url: str) -> str:
    project = f"{doc['entity']}/{doc['project']}"
    title = doc["name"] or doc["run_id"]
    config = nested_table(doc["config"], lambda v: t(format_value(v))) if doc["config"] else "<p>-</p>"
    definitions = "".join(f"<li><code>{t(format_value(d))}</code></li>" for d in doc["definitions"])
    body = (
        f'<p class="crumbs"><a href="/projects/{e(quote(project))}">{e(project)}</a> / {e(doc["run_id"])}</p>'
        f'<h1>{t(title)}</h1>{_notes(doc.get("notes"))}<div id="run-live">{run_summary_fragment(doc)}</div>'
        f"<h2>Config</h2>{config}"
        f"<details><summary>metric definitions ({len(doc['definitions'])})</summary><ul>{definitions}</ul></details>"
    )
    live = {
        "events": f"/api/projects/{quote(project)}/changes",
        "refresh": fragment_url,
        "target": "run-live",
        "run": doc["run_id"],
    }
    return _layout(title, body, live=live)
