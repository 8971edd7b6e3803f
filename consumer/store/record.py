"""RunRecord: one run's part of an `apply_runs` call, named on both sides.

Python builds it from a `RunWrite` (writer.py); it goes to Redis as a JSON array in the order of its fields (one
compact document per call: naming every field in every run would add ~300 bytes per run; a NamedTuple, which json
writes as that array as it stands, costs no conversion on the consumer's hot path), and the script reads the
positions by the same names: scripts.py puts `local R = {run_path = 1, project = 2, ...}` before apply_runs.lua,
made from this class, so the two sides cannot drift apart. Every number travels as a string (Lua's cjson would
turn large integers into floats).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["RunRecord", "lua_field_table"]


class RunRecord(NamedTuple):
    first_key: str  #: KEYS index of the run's first key (keys.RUN_PARTS follow in order)
    run_id: str
    partition: str
    offset: str  #: of the last record of the batch for this run
    expected_prev: str  #: the applied offset the views were built on ('' = a new run)
    updated_ms: str  #: the run's score in its project's `runs` index
    events: str  #: events applied (for the stats hash)
    dead_letters: str
    summary_set: dict[str, str]  #: field -> JSON
    summary_del: list[str]
    flat_set: dict[str, str]  #: display path -> JSON scalar
    flat_del: list[str]
    meta_set: dict[str, str]
    meta_del: list[str]
    tensors_set: dict[str, str]  #: display path -> sha256
    tensors_del: list[str]
    numeric_set: list[str]  #: flat paths whose sort score is their text in flat_set
    numeric_del: list[str]  #: flat paths no longer numeric (out of their `by:` index)
    blobs: dict[str, list[str]]  #: sha256 -> [KEYS index of the blob's key, ARGV index of its bytes]
    lacks_from: str  #: without a state: the first offset the stored state lacks ('' = Redis knows it already)
    state_at: dict[str, str]  #: with a state: partition -> offset of the last record the state holds
    index_out: list[str]  #: KEYS indexes of the filter index sets the run leaves (indexes.py)
    index_in: list[str]  #: KEYS indexes of the filter index sets the run enters



def lua_field_table() -> str:
    """`local R = {run_path = 1, ...}`: the positions of RunRecord's fields, for apply_runs.lua (`r[R.offset]`)."""
    return "local R = {" + ", ".join(f"{name} = {i}" for i, name in enumerate(RunRecord._fields, start=1)) + "}\n"
