"""The state of one run and its canonical bytes (SPEC §4 rule 19).

``RunState`` is a plain mutable object owned by the fold. Its *folded* part is what ``state_to_bytes``
writes; the rest is derived (rebuilt on load) or change tracking for ``take_changes`` (not persisted):

- ``producers``: dedup memory per producer id (rule 18): a watermark (every seq below it was applied) and
  the sorted, disjoint, non-adjacent ``[lo, hi)`` ranges applied above it. A refused event leaves a gap,
  which costs one range, not one entry per later seq.
- ``tops``: top-level key -> {leaf path: ``Leaf``} (aggregates of every leaf, see consumer.aggregates).
- ``definitions``: metric definitions, in the order that decides glob ties (rules 9, 12, 13).
- ``overrides``: top-level key -> (plain value, tensor refs) set by summary updates (rules 15, 17).
- ``hidden``: top-level keys removed from the summary and not logged since (rule 16).
- run meta: name, config (canonical JSON text), tags, status, exit_code, created/updated (ts_ms), events.

Canonical bytes: UTF-8 of ``canonical_json`` of a document with sorted keys; leaves sorted by path; the
exact sums as "<odd part in hex>p<shift>"; floats by repr; tensors only by SHA-256 (their bytes are never
in the state). Equal folded states give equal bytes, and ``state_from_bytes(state_to_bytes(s))`` folds on exactly like ``s``.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Any

from consumer.aggregates import Leaf, TensorRefs
from consumer.canonical import canonical_json, display_path, load_json
from consumer.definitions import Definition, Resolver

__all__ = [
    "FORMAT",
    "Changes",
    "Rejected",
    "RunState",
    "Seen",
    "meta_strings",
    "new_run_state",
    "state_from_bytes",
    "state_to_bytes",
]

FORMAT = "metricfold.fold.v1"


@dataclasses.dataclass(frozen=True)
class Rejected:
    """One event the fold refused (it changed nothing); it goes to the dead-letter topic."""

    index: int  #: item index inside a Batch (0 for a standalone event)
    producer_id: str | None
    seq: int | None
    reason: str  #: human-readable; names the rule, limit or key
    event_type: str = ""  #: full Avro name of the refused event, e.g. "metricfold.Log"


@dataclasses.dataclass
class Changes:
    """What changed in a run's views since the previous ``take_changes`` (see consumer.views)."""

    summary_set: dict[str, str] = dataclasses.field(default_factory=dict)
    summary_del: list[str] = dataclasses.field(default_factory=list)
    flat_set: dict[str, str] = dataclasses.field(default_factory=dict)
    flat_del: list[str] = dataclasses.field(default_factory=list)
    #: flat paths whose value is a finite int or float -> the number; each is in flat_set too, as the number's JSON
    #: text, which Redis reads as the same double (apply_runs takes the sort score from there)
    numeric_set: dict[str, float] = dataclasses.field(default_factory=dict)
    numeric_del: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, str] = dataclasses.field(default_factory=dict)
    meta_del: list[str] = dataclasses.field(default_factory=list)
    blobs: dict[str, bytes] = dataclasses.field(default_factory=dict)
    tensors_set: dict[str, str] = dataclasses.field(default_factory=dict)
    tensors_del: list[str] = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in dataclasses.fields(self))


class Seen:
    """Dedup memory of one producer: seqs below ``watermark`` plus ``ranges`` ([lo, hi) above it)."""

    __slots__ = ("ranges", "watermark")

    def __init__(self, watermark: int = 0, ranges: list[tuple[int, int]] | None = None) -> None:
        self.watermark = watermark
        self.ranges: list[tuple[int, int]] = ranges or []

    def seen(self, seq: int) -> bool:
        if seq < self.watermark:
            return True
        i = bisect.bisect_right(self.ranges, seq, key=lambda r: r[0]) - 1
        return i >= 0 and seq < self.ranges[i][1]

    def any_seen(self, lo: int, hi: int) -> bool:
        """Whether any seq in [lo, hi) was applied."""
        if lo < self.watermark:
            return True
        return any(a < hi and lo < b for a, b in self.ranges)

    def add(self, lo: int, hi: int) -> None:
        """Record [lo, hi) as applied."""
        if hi <= self.watermark:
            return
        lo = max(lo, self.watermark)
        if lo == self.watermark and not self.ranges:
            self.watermark = hi
            return
        merged: list[tuple[int, int]] = []
        for a, b in self.ranges:
            if b < lo or a > hi:
                merged.append((a, b))
            else:
                lo, hi = min(lo, a), max(hi, b)
        bisect.insort(merged, (lo, hi))
        if merged[0][0] <= self.watermark:
            self.watermark = merged.pop(0)[1]
        self.ranges = merged


class RunState:
    """Everything about one run (see the module doc). Mutated in place by ``fold_record``."""

    def __init__(self, entity: str, project: str, run_id: str) -> None:
        self.entity = entity
        self.project = project
        self.run_id = run_id
        self.producers: dict[str, Seen] = {}
        self.tops: dict[str, dict[tuple[str, ...], Leaf]] = {}
        self.definitions: list[Definition] = []
        self.definitions_json: str | None = None  # cache of meta "definitions"; None when stale
        self.overrides: dict[str, tuple[Any, TensorRefs]] = {}
        self.hidden: set[str] = set()
        self.name: str | None = None
        self.config: str | None = None
        self.tags: list[str] = []
        self.status: str | None = None
        self.exit_code: int | None = None
        self.created: int | None = None
        self.updated: int | None = None
        self.events = 0
        # derived from the above
        self.interior: dict[tuple[str, ...], int] = {}  # proper prefixes of leaf paths -> number of leaves
        self.resolver = Resolver(())
        self.good_paths: set[tuple[str, ...]] = set()  # leaf paths known to pass good_paths_limits
        self.good_paths_limits: object = None
        # change tracking (not persisted; see consumer.views)
        self.dirty: set[str] = set()
        self.all_dirty = False
        self.meta_dirty = False
        self.pending_blobs: dict[str, bytes] = {}
        self.pub_summary: dict[str, str] = {}
        self.pub_flat: dict[str, dict[str, tuple[str, float | None]]] = {}
        self.pub_tensors: dict[str, dict[str, str]] = {}
        self.pub_meta: dict[str, str] = {}
        self.pub_captured: set[str] | None = None  # None: pub_* hold everything published

    @property
    def run_path(self) -> str:
        return f"{self.entity}/{self.project}/{self.run_id}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunState):
            return NotImplemented
        return state_to_bytes(self) == state_to_bytes(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        leaves = sum(len(v) for v in self.tops.values())
        return f"RunState({self.run_path!r}, events={self.events}, leaves={leaves})"


def new_run_state(entity: str, project: str, run_id: str) -> RunState:
    """The state of a run that has seen no events."""
    return RunState(entity, project, run_id)


def meta_strings(state: RunState) -> dict[str, str]:
    """The run meta hash (SPEC §5) as strings; absent fields are left out."""
    meta: dict[str, str] = {"events": str(state.events)} if state.events else {}
    if state.status is not None:
        meta["state"] = state.status
    if state.exit_code is not None:
        meta["exit_code"] = str(state.exit_code)
    if state.created is not None:
        meta["created"] = str(state.created)
    if state.updated is not None:
        meta["updated"] = str(state.updated)
    if state.name is not None:
        meta["name"] = state.name
    if state.config is not None:
        meta["config"] = state.config
    if state.tags:
        meta["tags"] = canonical_json(state.tags)
    if state.definitions:
        if state.definitions_json is None:
            state.definitions_json = canonical_json([d.to_json() for d in state.definitions])
        meta["definitions"] = state.definitions_json
    return meta


def _sum_text(s: int) -> str:
    """An exact sum as "<odd part in hex>p<power of two>": short, and one spelling per value."""
    if s == 0:
        return "0p0"
    zeros = (s & -s).bit_length() - 1
    return f"{s >> zeros:x}p{zeros}"


def _sum_from_text(text: str) -> int:
    odd, zeros = text.split("p")
    return int(odd, 16) << int(zeros)


def _refs(refs: TensorRefs) -> list[list[str]]:
    return [[rel, sha] for rel, sha in refs]


def state_to_bytes(state: RunState) -> bytes:
    """Canonical bytes of the folded state (no change tracking, no tensor bytes: only their SHA-256)."""
    leaves = [
        [
            list(leaf.path),
            leaf.first,
            _refs(leaf.first_t),
            leaf.last,
            _refs(leaf.last_t),
            leaf.nf,
            _sum_text(leaf.s),
            leaf.pinf,
            leaf.ninf,
            leaf.min,
            leaf.min_step,
            leaf.max,
            leaf.max_step,
        ]
        for top in state.tops.values()
        for leaf in top.values()
    ]
    leaves.sort(key=lambda row: row[0])
    document = {
        "format": FORMAT,
        "run": [state.entity, state.project, state.run_id],
        "producers": {pid: [s.watermark, [list(r) for r in s.ranges]] for pid, s in state.producers.items()},
        "leaves": leaves,
        "definitions": [d.to_json() for d in state.definitions],
        "overrides": {k: [value, _refs(refs)] for k, (value, refs) in state.overrides.items()},
        "hidden": sorted(state.hidden),
        "meta": {
            "name": state.name,
            "config": state.config,
            "tags": state.tags,
            "status": state.status,
            "exit_code": state.exit_code,
            "created": state.created,
            "updated": state.updated,
            "events": state.events,
        },
    }
    return canonical_json(document).encode()


def _tensor_refs(rows: list[list[str]]) -> TensorRefs:
    return tuple((rel, sha) for rel, sha in rows)


def state_from_bytes(data: bytes) -> RunState:
    """The state ``state_to_bytes`` wrote. Assumes it was written right after ``take_changes`` (as the store
    does): the views published so far are taken to be the views of this state."""
    document = load_json(data)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"not a metricfold fold state (expected format {FORMAT!r})")
    state = RunState(*document["run"])
    state.producers = {pid: Seen(w, [(a, b) for a, b in ranges]) for pid, (w, ranges) in document["producers"].items()}
    for row in document["leaves"]:
        path = tuple(row[0])
        leaf = Leaf(path, display_path(path), row[1], _tensor_refs(row[2]))
        leaf.last, leaf.last_t = row[3], _tensor_refs(row[4])
        leaf.nf, leaf.s, leaf.pinf, leaf.ninf = row[5], _sum_from_text(row[6]), row[7], row[8]
        leaf.min, leaf.min_step, leaf.max, leaf.max_step = row[9], row[10], row[11], row[12]
        state.tops.setdefault(path[0], {})[path] = leaf
        for i in range(1, len(path)):
            state.interior[path[:i]] = state.interior.get(path[:i], 0) + 1
    state.definitions = [
        Definition(
            name=d["name"],
            options=None if d["summary"] is None else tuple(d["summary"]),
            objective=d["objective"],
            step_metric=d["step_metric"],
            hidden=d["hidden"],
        )
        for d in document["definitions"]
    ]
    state.resolver = Resolver(state.definitions)
    state.overrides = {k: (value, _tensor_refs(refs)) for k, (value, refs) in document["overrides"].items()}
    state.hidden = set(document["hidden"])
    meta = document["meta"]
    state.name, state.config, state.tags = meta["name"], meta["config"], meta["tags"]
    state.status, state.exit_code = meta["status"], meta["exit_code"]
    state.created, state.updated, state.events = meta["created"], meta["updated"], meta["events"]
    state.pub_meta = meta_strings(state)
    state.pub_captured = set()
    return state
