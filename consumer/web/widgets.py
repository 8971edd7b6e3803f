"""Small HTML pieces: a nested table for dicts, and the percentile bar of a tensor's stats (inline SVG)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

__all__ = ["nested_table", "percentile_bar"]

_WIDTH, _HEIGHT, _PAD = 320.0, 34.0, 6.0


def nested_table(value: Any, cell: Callable[[Any], str]) -> str:
    """A dict as a table of key -> value, nested dicts as nested tables; *cell* renders (and escapes) a leaf."""
    if not isinstance(value, dict):
        return cell(value)
    rows = "".join(
        f'<tr><th>{html.escape(str(k))}</th><td>{nested_table(v, cell)}</td></tr>' for k, v in value.items()
    )
    return f'<table class="nested">{rows}</table>'


def _number(stats: dict[str, Any], key: str) -> float | None:
    value = stats.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def percentile_bar(stats: dict[str, Any]) -> str:
    """min-max whisker, 10%-90% band, 25%-75% box, median line and mean dot, scaled between min and max.

    Drawn only from the stats dict (no tensor read); every number comes from there and is formatted, never raw text.
    """
    points = {k: _number(stats, k) for k in ("min", "10%", "25%", "50%", "75%", "90%", "max", "mean")}
    low, high = points["min"], points["max"]
    if low is None or high is None:
        return ""
    span = high - low

    def x(value: float | None) -> float:
        if value is None or span <= 0:
            return _WIDTH / 2
        return _PAD + (value - low) / span * (_WIDTH - 2 * _PAD)

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
    parts.append(f'<text x="{_PAD}" y="{_HEIGHT - 1}" class="axis">{html.escape(f"{low:.4g}")}</text>')
    parts.append(f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - 1}" class="axis end">{html.escape(f"{high:.4g}")}</text>')
    return (
        f'<svg class="pbar" width="{_WIDTH:.0f}" height="{_HEIGHT:.0f}" viewBox="0 0 {_WIDTH:.0f} {_HEIGHT:.0f}" role="img" '
        f'aria-label="percentiles">{"".join(parts)}</svg>'
    )
