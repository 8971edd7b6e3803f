"""The Lua of the Redis store, from lua/*.lua (read once, at import; each script runs as one atomic step).

`APPLY_RUNS` and `CHECKPOINT` are the consumer's writes (one pipeline per node and batch, EVALSHA; loaded again
after NOSCRIPT), `INDEX_RUNS` puts runs folded before the filter index sets into them (once per generation);
`READ_RUN`, `READ_PAGE` and `READ_WHERE` (a filtered page) are the read API's, each reading what it reads of one
project in one atomic step. Every script is given the keys it touches (KEYS); none builds a key
name (Redis Cluster needs them declared). The reads are not sent as scripts: they form one Redis function library
(`READ_LIBRARY`, loaded with FUNCTION LOAD on every master, called with FCALL_RO), so that the read-only ACL user
may run these functions and no other Lua (deploy/redis/README.md). `advance.lua` is the checkpoint function both
write scripts start with; apply_runs.lua reads RunRecords (record.py). The key layout is in keys.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from consumer.store.record import lua_field_table

__all__ = [
    "APPLY_RUNS", "CHECKPOINT", "INDEX_RUNS", "READ_LIBRARY", "READ_PAGE", "READ_RUN", "READ_WHERE", "FunctionLibrary",
    "read_library",
]

_HERE = Path(__file__).resolve().parent / "lua"


def _lua(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


_ADVANCE = _lua("advance.lua")
APPLY_RUNS = _ADVANCE + lua_field_table() + _lua("apply_runs.lua")
CHECKPOINT = _ADVANCE + _lua("checkpoint.lua")
READ_RUN = _lua("read_run.lua")
READ_PAGE = _lua("read_page.lua")
READ_WHERE = _lua("read_where.lua")
INDEX_RUNS = _lua("index_runs.lua")


@dataclasses.dataclass(frozen=True)
class FunctionLibrary:
    """A Redis function library: `code` for FUNCTION LOAD, and the name of each of its functions (for FCALL_RO)."""

    name: str
    code: str
    functions: dict[str, str]


def read_library(tag: str = "") -> FunctionLibrary:
    """READ_RUN, READ_PAGE and READ_WHERE as one function library, each function flagged `no-writes` (so
    FCALL_RO runs it, and Redis refuses any write inside). The library's and the functions' names end with a digest
    of the code: two metricfold versions sharing a Redis never replace each other's functions, and loading the
    same library twice is harmless. *tag* makes another library of the same functions (tests use one of their own)."""
    bodies = {"read_run": READ_RUN, "read_page": READ_PAGE, "read_where": READ_WHERE}
    digest = hashlib.sha256("\0".join([tag, *bodies.values()]).encode()).hexdigest()[:16]
    functions = {role: f"metricfold_{role}_{digest}" for role in bodies}
    parts = [f"#!lua name=metricfold_reads_{digest}\n"]
    for role, body in bodies.items():
        parts.append(f"redis.register_function{{function_name='{functions[role]}', flags={{'no-writes'}},\n"
                     f"  callback=function(KEYS, ARGV)\n{body}end}}\n")
    return FunctionLibrary(name=f"metricfold_reads_{digest}", code="".join(parts), functions=functions)


READ_LIBRARY = read_library()
