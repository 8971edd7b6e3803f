"""The table every benchmark prints before its JSON line: one measure per row, names aligned."""

from __future__ import annotations

import json
from typing import Any


def print_measures(rows: list[tuple[str, str]], result: dict[str, Any]) -> None:
    """Print *rows* as a two-column table, then *result* as the last line (JSON, for bench/report.py)."""
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  -----")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps(result))
