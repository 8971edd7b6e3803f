"""Run paths (entity/project/run_id) from record keys and decoded records: the consume loop groups a batch's
records by their key's run path, and a record whose events name another run is undecodable (RULES.md §3)."""

from __future__ import annotations

import functools
from typing import Any

from schemas.limits import check_run_part

__all__ = ["joined_path", "key_path", "run_path_of"]


def run_path_of(decoded: tuple[str, Any]) -> str:
    """The run path a decoded record belongs to, checked (a bad one cannot become a Redis key)."""
    _, datum = decoded
    parts = (datum.get("entity"), datum.get("project"), datum.get("run_id"))
    check_run_part("entity", parts[0])
    check_run_part("project", parts[1])
    check_run_part("run_id", parts[2])
    return "/".join(parts)


def joined_path(decoded: tuple[str, Any]) -> str | None:
    """entity/project/run_id of a decoded record, unchecked (None if a part is missing or not a str)."""
    datum = decoded[1]
    parts = (datum.get("entity"), datum.get("project"), datum.get("run_id"))
    return "/".join(parts) if all(type(part) is str for part in parts) else None


_MAX_RUN_PATH_BYTES = 3 * 128 + 2  # three parts of at most 128 ASCII characters (check_run_part), two slashes


def key_path(key: bytes | None) -> str | None:
    """The run path a record key names, if it is a valid one (the SDK keys every record by its run path)."""
    if not key or len(key) > _MAX_RUN_PATH_BYTES:  # longer keys are never valid, and never cached
        return None
    return _checked_key_path(key)


@functools.lru_cache(maxsize=65536)  # a few MB at most: keys are short (above)
def _checked_key_path(key: bytes) -> str | None:
    try:
        entity, project, run_id = key.decode("utf-8").split("/")
        check_run_part("entity", entity)
        check_run_part("project", project)
        check_run_part("run_id", run_id)
    except (UnicodeDecodeError, ValueError):
        return None
    return f"{entity}/{project}/{run_id}"
