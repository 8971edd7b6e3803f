"""Readable tables for `metricfold summary` and `metricfold runs` (and the demo); the runs table as CSV (`runs_csv`,
for `metricfold runs --csv` and the web's runs.csv).

Everything printed from Redis (keys, names, tags, config, values) goes through `schemas.text.printable`: a metric
name holding ESC, NUL, CR/LF or bidi characters is shown escaped (`\\x1b[31m`, `\\u202e`), so it cannot drive the
reader's terminal or break a table row.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

from consumer.store import Store
from consumer.store.reader import TablePage
from schemas.filters import BY_UPDATE, Filter, where_texts
from schemas.text import printable

__all__ = ["format_value", "print_run", "print_runs", "render_table", "runs_csv", "runs_rows"]

_DEFAULT_COLUMNS = 4


def format_value(value: Any) -> str:
    """A summary value for a table cell: floats to 6 significant digits, None as '-', the rest as JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value, sort_keys=True, allow_nan=True)


def _time(ms: str | None) -> str:
    if not ms:
        return "-"
    moment = datetime.datetime.fromtimestamp(int(ms) / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table; every cell is shown through `printable` (one line per row, whatever the text holds)."""
    header = [printable(h) for h in header]
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, rule, *body])


def print_run(run_path: str, run: dict[str, Any], *, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"run": run_path, **run}, indent=2, sort_keys=True, allow_nan=True))
        return
    meta = run["meta"]
    print(printable(f"run {run_path}  name={meta.get('name') or '-'}  state={meta.get('state', '-')}  "
                    f"events={meta.get('events', '-')}  updated={_time(meta.get('updated'))}  (generation {run['generation']})"))
    if meta.get("tags") not in (None, "[]"):
        print(f"tags: {printable(meta['tags'])}")
    if meta.get("config") not in (None, "{}"):
        print(f"config: {printable(meta['config'])}")
    rows = [[path, format_value(value)] for path, value in sorted(run["flat"].items())]
    print(render_table(["summary path", "value"], rows) if rows else "(no summary values yet)")
    for path, sha in sorted(run["tensors"].items()):
        print(printable(f"tensor {path}: .npy sha256 {sha[:16]}… (Api().run(...).summary.get_tensor({path!r}))"))


def runs_rows(
    store: Store, project: str, *, sort: str | None, ascending: bool, limit: int, offset: int = 0,
    columns: Sequence[str] = (), where: Filter | None = None,
) -> tuple[list[str], TablePage]:
    """The columns shown (the given ones, else the sort path and a few more) and the page of runs that pass
    *where*, with those columns (one read of the project's slot: StoreReader.read_table)."""
    shown = list(columns)
    if not shown:
        if sort and sort != BY_UPDATE:
            shown.append(sort)
        for path in store.project_paths(project):
            if len(shown) >= _DEFAULT_COLUMNS:
                break
            if path not in shown and not path.startswith("_"):
                shown.append(path)
    page = store.read_table(project, sort=sort, descending=not ascending, offset=offset, limit=limit, columns=shown,
                            where=where)
    return shown, page


#: a text cell starting with one of these is a formula to a spreadsheet (=HYPERLINK(...), +cmd, -2+3, @SUM):
#: the CSV writes it with a leading apostrophe, the usual neutraliser, so opening an export cannot run it
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return _csv_text(value)
    return _csv_text(json.dumps(value, sort_keys=True, allow_nan=True))


def runs_csv(page: TablePage, columns: Sequence[str]) -> str:
    """The page as CSV: a header (run_id, name, state, updated in ms since the epoch, then *columns*), one row per
    run; numbers as numbers, a missing value empty, lists and dicts as JSON (`pandas.read_csv` reads it as is).
    Text that a spreadsheet would run as a formula (starting with = + - @, a tab or CR: a run name, a string
    value, a column name) gets a leading apostrophe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["run_id", "name", "state", "updated", *map(_csv_text, columns)])
    for row in page.rows:
        values = row["values"]
        writer.writerow([_csv_text(row["run_id"]), _csv_text(row["name"]), row["state"], row["updated"],
                         *(_csv_cell(values.get(c)) for c in columns)])
    return out.getvalue()


def print_runs(
    store: Store,
    project: str,
    *,
    sort: str | None,
    ascending: bool,
    limit: int,
    columns: Sequence[str] = (),
    as_json: bool = False,
    where: Filter | None = None,
    as_csv: bool = False,
) -> None:
    shown, page = runs_rows(store, project, sort=sort, ascending=ascending, limit=limit, columns=columns, where=where)
    if as_csv:
        sys.stdout.write(runs_csv(page, shown))
        return
    rows = [{"run_id": r["run_id"], "name": r["name"], "state": r["state"], "updated": r["updated"],
             **{c: r["values"].get(c) for c in shown}} for r in page.rows]
    if as_json:
        print(json.dumps({"project": project, "total": page.total, "columns": shown, "runs": rows}, indent=2,
                         allow_nan=True))
        return
    header = ["run", "name", "state", "updated", *shown]
    table = [
        [r["run_id"], r["name"], r["state"], _time(str(r["updated"])), *(format_value(r[c]) for c in shown)] for r in rows
    ]
    order = "ascending" if ascending else "descending"
    matching = f", where {' and '.join(where_texts(where))}" if where else ""
    print(printable(f"{project}: {len(rows)} of {page.total} runs{matching}, sorted by {sort or 'last update'} ({order})"))
    print(render_table(header, table) if table else "(no runs)")
