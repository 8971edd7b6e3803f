"""Small HTML pieces: a nested table for dicts, the percentile bar of a tensor's stats (inline SVG), the filter bar."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

from schemas.text import printable

__all__ = ["FILTER_HELP", "filter_bar", "nested_table", "percentile_bar"]

_WIDTH, _HEIGHT, _PAD = 320.0, 34.0, 6.0
_SUGGESTED = 200  # summary paths offered as the filter box's suggestions
FILTER_HELP = (
    'path op value: acc.best > 0.9 · state = finished · tags in ["a","b"] · config.optimizer = adam · '
    "ops > >= < <= = != in nin · paths: numeric summary paths, state, tags, group, job_type, config.KEY · "
    "a box may join conditions with or; the boxes are ANDed"
)


def _text(value: object) -> str:
    """User text as element content (as pages.t): unprintable characters escaped, HTML-escaped, direction isolated."""
    return f"<bdi>{html.escape(printable(str(value)), quote=True)}</bdi>"


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def filter_bar(
    chips: Sequence[tuple[str, str]],
    hidden: Sequence[tuple[str, str]] | None,
    *,
    clear: str | None,
    csv: str,
    paths: Sequence[str],
) -> str:
    """The runs table's filter bar: each filter (*chips*: text, the URL without it) with a link that removes it, a
    box that adds one (a GET form carrying *hidden*: the sort, order, pinned columns and filters, so the new URL
    holds all of it), a link that removes them all (*clear*) and the CSV export of the query (*csv*). With *hidden*
    None (a value a form cannot send back as it is: NUL, CR, LF) the box is left out: the links still work."""
    listed = "".join(
        f'<span class="chip" data-where="{_attr(text)}"><code>{_text(text)}</code>'
        f'<a class="remove" href="{_attr(href)}" title="remove this filter" aria-label="remove this filter">&times;</a></span>'
        for text, href in chips
    )
    extra = f'<a id="clear-filters" href="{_attr(clear)}">clear filters</a>' if clear else ""
    export = f'<a id="csv" href="{_attr(csv)}" title="the filtered runs and the columns shown, as CSV">CSV</a>'
    if hidden is None:
        box = '<span class="muted">remove a filter or column holding a line break to add another</span>'
    else:
        keep = "".join(f'<input type="hidden" name="{_attr(k)}" value="{_attr(v)}">' for k, v in hidden)
        options = "".join(f'<option value="{_attr(p)} "></option>' for p in paths[:_SUGGESTED])
        box = (
            f'{keep}<input id="where" type="text" name="where" placeholder="acc.best &gt; 0.9" list="where-paths" '
            f'autocomplete="off" spellcheck="false" aria-label="add a filter" title="{_attr(FILTER_HELP)}">'
            f'<datalist id="where-paths">{options}</datalist><button type="submit">filter</button>'
        )
    return (
        f'<form id="filters" method="get" role="search"><span class="chips">{listed}</span>{box}{extra}{export}</form>'
        f'<p class="muted help">{html.escape(FILTER_HELP)}</p>'
    )


def nested_table(value: Any, cell: Callable[[Any], str]) -> str:
    """A dict as a table of key -> value, nested dicts as nested tables; *cell* renders (and escapes) a leaf. Keys are
    shown as the pages show user text (unprintable characters escaped, direction isolated)."""
    if not isinstance(value, dict):
        return cell(value)
    rows = "".join(
        f"<tr><th><bdi>{html.escape(printable(str(k)))}</bdi></th><td>{nested_table(v, cell)}</td></tr>"
        for k, v in value.items()
    )
    return f'<table class="nested">{rows}</table>'


def _number(stats: dict[str, Any], key: str) -> float | None:
    value = stats.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _label(stats: dict[str, Any], key: str, spec: str) -> str:
    """A stat as text for a title or the axis: finite numbers formatted, anything else (NaN, ±inf, missing) as is."""
    value = stats.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:{spec}}"
    return "-" if value is None else str(value)


def percentile_bar(stats: dict[str, Any]) -> str:
    """min-max whisker, 10%-90% band, 25%-75% box, median line and mean dot, scaled between min and max.

    Drawn only from the stats dict (no tensor read); every number comes from there and is formatted, never raw text.
    Non-finite stats (a tensor holding inf or NaN, or stats that overflowed) draw nothing of their own: the scale
    is then the finite stats' range, the axis label says what the end is (`-inf`), and the bar is left out when
    fewer than one stat is finite. The scale works on halves, so the span of ±1.8e308 does not overflow.
    """
    points = {k: _number(stats, k) for k in ("min", "10%", "25%", "50%", "75%", "90%", "max", "mean")}
    finite = [v for v in points.values() if v is not None]
    if not finite:
        return ""
    low = points["min"] if points["min"] is not None else min(finite)
    high = points["max"] if points["max"] is not None else max(finite)
    scale = 1.0 if math.isfinite(high - low) else 0.5  # halves: finite for any two finite doubles
    span = high * scale - low * scale

    def x(value: float | None) -> float:
        if value is None or span <= 0:
            return _WIDTH / 2
        share = min(1.0, max(0.0, (value * scale - low * scale) / span))
        return _PAD + share * (_WIDTH - 2 * _PAD)

    def box(a: str, b: str, height: float, cls: str) -> str:
        if points[a] is None or points[b] is None:
            return ""
        left, right = x(points[a]), x(points[b])
        top = (_HEIGHT - 12 - height) / 2
        label = html.escape(f"{a} to {b}: {points[a]:.6g} to {points[b]:.6g}")
        return (
            f'<rect class="{cls}" x="{left:.1f}" y="{top:.1f}" width="{max(1.0, right - left):.1f}" height="{height:.1f}">'
            f"<title>{label}</title></rect>"
        )

    mid = (_HEIGHT - 12) / 2
    parts = [
        f'<line class="whisker" x1="{x(low):.1f}" y1="{mid:.1f}" x2="{x(high):.1f}" y2="{mid:.1f}"/>',
        box("10%", "90%", 10.0, "band"),
        box("25%", "75%", 16.0, "box"),
    ]
    if points["50%"] is not None:
        parts.append(
            f'<line class="median" x1="{x(points["50%"]):.1f}" y1="{mid - 9:.1f}" x2="{x(points["50%"]):.1f}" y2="{mid + 9:.1f}">'
            f"<title>median {points['50%']:.6g}</title></line>"
        )
    if points["mean"] is not None:
        mean = points["mean"]
        parts.append(f'<circle class="mean" cx="{x(mean):.1f}" cy="{mid:.1f}" r="3"><title>mean {mean:.6g}</title></circle>')
    ends = html.escape(_label(stats, "min", ".4g")), html.escape(_label(stats, "max", ".4g"))
    parts.append(f'<text x="{_PAD}" y="{_HEIGHT - 1}" class="axis">{ends[0]}</text>')
    parts.append(f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - 1}" class="axis end">{ends[1]}</text>')
    return (
        f'<svg class="pbar" width="{_WIDTH:.0f}" height="{_HEIGHT:.0f}" viewBox="0 0 {_WIDTH:.0f} {_HEIGHT:.0f}" role="img" '
        f'aria-label="percentiles">{"".join(parts)}</svg>'
    )
