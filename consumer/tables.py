"""Readable tables for `metricfold summary` and `metricfold runs` (and the demo).

Everything printed from Redis (keys, names, tags, config, values) goes through `schemas.text.printable`: a metric
name holding ESC, NUL, CR/LF or bidi characters is shown escaped (`\\x1b[31m`, `\\u202e`), so it cannot drive the
reader's terminal or break a table row.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

from consumer.store import Store
from schemas.text import printable

__all__ = ["format_value", "print_run", "print_runs", "render_table", "runs_rows"]

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
    store: Store, project: str, *, sort: str | None, ascending: bool, limit: int, offset: int = 0, columns: Sequence[str] = ()
) -> tuple[list[str], list[dict[str, Any]], int]:
    """The columns shown and one dict per run (run_id, name, state, updated, and each column's value)."""
    run_ids, total = store.list_runs(project, sort=sort, descending=not ascending, limit=limit, offset=offset)
    shown = list(columns)
    if not shown:
        if sort and sort != "updated":
            shown.append(sort)
        for path in store.project_paths(project):
            if len(shown) >= _DEFAULT_COLUMNS:
                break
            if path not in shown and not path.startswith("_"):
                shown.append(path)
    rows = []
    for run_id in run_ids:
        run = store.read_run(f"{project}/{run_id}")
        meta = run["meta"]
        rows.append(
            {
                "run_id": run_id,
                "name": meta.get("name") or "",
                "state": meta.get("state", ""),
                "updated": int(meta.get("updated") or 0),
                **{c: run["flat"].get(c) for c in shown},
            }
        )
    return shown, rows, total


def print_runs(
    store: Store,
    project: str,
    *,
    sort: str | None,
    ascending: bool,
    limit: int,
    columns: Sequence[str] = (),
    as_json: bool = False,
) -> None:
    shown, rows, total = runs_rows(store, project, sort=sort, ascending=ascending, limit=limit, columns=columns)
    if as_json:
        print(json.dumps({"project": project, "total": total, "columns": shown, "runs": rows}, indent=2, allow_nan=True))
        return
    header = ["run", "name", "state", "updated", *shown]
    table = [
        [r["run_id"], r["name"], r["state"], _time(str(r["updated"])), *(format_value(r[c]) for c in shown)] for r in rows
    ]
    order = "ascending" if ascending else "descending"
    print(printable(f"{project}: {len(rows)} of {total} runs, sorted by {sort or 'last update'} ({order})"))
    print(render_table(header, table) if table else "(no runs)")
