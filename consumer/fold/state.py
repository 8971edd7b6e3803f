"""The folded state of one run, and its canonical bytes (RULES.md §4 rules 18, 19).

``RunState`` is a plain mutable object owned by the fold. What it folds is what ``state_to_bytes`` writes:

- ``producers``: dedup memory per producer id (rule 18): a watermark (every seq below it was applied) and
  the sorted, disjoint, non-adjacent ``[lo, hi)`` ranges applied above it. A refused event leaves a gap,
  which costs one range, not one entry per later seq.
- ``leaves_by_key``: top-level key -> {leaf path: ``Leaf``} (aggregates of every leaf, consumer.fold.aggregates).
- ``definitions``: metric definitions, in the order that decides glob ties (rules 9, 12, 13).
- ``overrides``: top-level key -> (plain value, tensor refs) set by summary updates (rules 15, 17).
- ``hidden``: top-level keys removed from the summary and not logged since (rule 16).
- ``at_best``: what rule 20 keeps (consumer.fold.at_best); written only when it keeps something.
- run meta: name, config (canonical JSON text), tags, status, exit_code, created/updated (ts_ms), events; and
  notes, group, job_type, written only when set (absent: None).

Besides, derived from the above and rebuilt on load: ``interior`` (leaf path prefixes), ``resolver``,
``good_paths`` and ``definitions_json`` (caches); and ``tracker``, the ``ChangeTracker`` the fold tells of its
changes, for ``take_changes`` (consumer.fold.tracking; never persisted).

Canonical bytes: UTF-8 of ``canonical_json`` of a document with sorted keys; leaves sorted by path; the
exact sums as "<odd part in hex>p<shift>"; floats by repr; tensors only by SHA-256 (their bytes are never
in the state). Equal folded states give equal bytes, and a state read back from its bytes folds on exactly
like the state written.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Any

from consumer.fold.aggregates import Leaf, TensorRefs
from consumer.fold.at_best import AtBest
from consumer.fold.canonical import canonical_json, load_json
from consumer.fold.definitions import Definition, Resolver
from consumer.fold.tracking import ChangeTracker
from schemas.paths import display_path

__all__ = ["FORMAT", "Rejected", "RunState", "Seen", "new_run_state", "read_state", "state_to_bytes"]

FORMAT = "metricfold.fold.v1"


@dataclasses.dataclass(frozen=True)
class Rejected:
    """One event the fold refused (it changed nothing); it goes to the dead-letter topic."""

    index: int  #: item index inside a Batch (0 for a standalone event)
    producer_id: str | None
    seq: int | None
    reason: str  #: human-readable; names the rule, limit or key
    event_type: str = ""  #: full Avro name of the refused event, e.g. "metricfold.Log"


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
    """Everything folded about one run (see the module doc). Mutated in place by ``fold_record``."""

    def __init__(self, entity: str, project: str, run_id: str) -> None:
        self.entity = entity
        self.project = project
        self.run_id = run_id
        self.producers: dict[str, Seen] = {}
        self.leaves_by_key: dict[str, dict[tuple[str, ...], Leaf]] = {}
        self.definitions: list[Definition] = []
        self.overrides: dict[str, tuple[Any, TensorRefs]] = {}
        self.hidden: set[str] = set()
        self.at_best = AtBest()  # rule 20 (its ``active`` flag is derived from the definitions)
        self.name: str | None = None
        self.config: str | None = None
        self.tags: list[str] = []
        self.notes: str | None = None  # notes, group, job_type: in the document only when set
        self.group: str | None = None
        self.job_type: str | None = None
        self.status: str | None = None
        self.exit_code: int | None = None
        self.created: int | None = None
        self.updated: int | None = None
        self.events = 0
        # derived from the above (rebuilt on load)
        self.interior: dict[tuple[str, ...], int] = {}  # proper prefixes of leaf paths -> number of leaves
        self.resolver = Resolver(())
        self.definitions_json: str | None = None  # cache of meta "definitions"; None when stale
        self.good_paths: set[tuple[str, ...]] = set()  # leaf paths known to pass good_paths_limits
        self.good_paths_limits: object = None
        # not state: what the fold tells of its changes, for take_changes
        self.tracker = ChangeTracker()

    @property
    def run_path(self) -> str:
        return f"{self.entity}/{self.project}/{self.run_id}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunState):
            return NotImplemented
        return state_to_bytes(self) == state_to_bytes(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        leaves = sum(len(v) for v in self.leaves_by_key.values())
        return f"RunState({self.run_path!r}, events={self.events}, leaves={leaves})"


def new_run_state(entity: str, project: str, run_id: str) -> RunState:
    """The state of a run that has seen no events (nothing handed out yet)."""
    return RunState(entity, project, run_id)


def _sum_text(units: int) -> str:
    """An exact sum as "<odd part in hex>p<power of two>": short, and one spelling per value."""
    if units == 0:
        return "0p0"
    zeros = (units & -units).bit_length() - 1
    return f"{units >> zeros:x}p{zeros}"


def _sum_from_text(text: str) -> int:
    odd, zeros = text.split("p")
    return int(odd, 16) << int(zeros)


def _refs(refs: TensorRefs) -> list[list[str]]:
    return [[rel, sha] for rel, sha in refs]


def _tensor_refs(rows: list[list[str]]) -> TensorRefs:
    return tuple((rel, sha) for rel, sha in rows)


def _meta_document(state: RunState) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": state.name,
        "config": state.config,
        "tags": state.tags,
        "status": state.status,
        "exit_code": state.exit_code,
        "created": state.created,
        "updated": state.updated,
        "events": state.events,
    }
    for field, text in (("notes", state.notes), ("group", state.group), ("job_type", state.job_type)):
        if text is not None:  # only when given: the states of runs without them keep their bytes
            meta[field] = text
    return meta


def state_to_bytes(state: RunState) -> bytes:
    """Canonical bytes of the folded state (no change tracking, no tensor bytes: only their SHA-256)."""
    leaves = [
        [
            list(leaf.path),
            leaf.first,
            _refs(leaf.first_refs),
            leaf.last,
            _refs(leaf.last_refs),
            leaf.finite_count,
            _sum_text(leaf.exact_sum),
            leaf.inf_count,
            leaf.neg_inf_count,
            leaf.min,
            leaf.min_step,
            leaf.max,
            leaf.max_step,
        ]
        for leaves in state.leaves_by_key.values()
        for leaf in leaves.values()
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
        "meta": _meta_document(state),
    }
    at_best = state.at_best.to_json()
    if at_best is not None:  # only when rule 20 keeps something: other states keep their bytes
        document["at_best"] = at_best
    return canonical_json(document).encode()


def read_state(data: bytes) -> RunState:
    """The state ``state_to_bytes`` wrote, its derived indexes rebuilt (its tracker fresh)."""
    document = load_json(data)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"not a metricfold fold state (expected format {FORMAT!r})")
    entity, project, run_id = document["run"]
    state = RunState(entity, project, run_id)
    state.producers = {pid: Seen(w, [(a, b) for a, b in ranges]) for pid, (w, ranges) in document["producers"].items()}
    for row in document["leaves"]:
        path = tuple(row[0])
        leaf = Leaf(path, display_path(path), row[1], _tensor_refs(row[2]))
        leaf.last, leaf.last_refs = row[3], _tensor_refs(row[4])
        leaf.finite_count, leaf.exact_sum, leaf.inf_count, leaf.neg_inf_count = row[5], _sum_from_text(row[6]), row[7], row[8]
        leaf.min, leaf.min_step, leaf.max, leaf.max_step = row[9], row[10], row[11], row[12]
        state.leaves_by_key.setdefault(path[0], {})[path] = leaf
        for i in range(1, len(path)):
            state.interior[path[:i]] = state.interior.get(path[:i], 0) + 1
    state.definitions = [
        Definition(
            name=d["name"],
            options=None if d["summary"] is None else tuple(d["summary"]),
            objective=d["objective"],
            step_metric=d["step_metric"],
            hidden=d["hidden"],
            at_best=tuple(d.get("at_best", ())),
        )
        for d in document["definitions"]
    ]
    state.resolver = Resolver(state.definitions)
    state.at_best = AtBest.from_json(document.get("at_best"), state.definitions)
    state.overrides = {k: (value, _tensor_refs(refs)) for k, (value, refs) in document["overrides"].items()}
    state.hidden = set(document["hidden"])
    meta = document["meta"]
    state.name, state.config, state.tags = meta["name"], meta["config"], meta["tags"]
    state.notes, state.group, state.job_type = meta.get("notes"), meta.get("group"), meta.get("job_type")
    state.status, state.exit_code = meta["status"], meta["exit_code"]
    state.created, state.updated, state.events = meta["created"], meta["updated"], meta["events"]
    return state
