"""Properties of the fold over random event streams (hypothesis), RULES.md §4 rule 19:

- folding the events one by one as standalone records == folding them in any split of Batches, with Log
  runs packed into LogBlocks of any split, numpy or pure-Python block path, and state_to_bytes /
  state_from_bytes round trips in between: byte-identical canonical state, same refused events;
- the changes handed out by take_changes, applied to a store, rebuild exactly the views of the state.

Streams mix several producers, NaN/inf/-0.0/subnormals, ints, bools, strings, lists, tensors, nested
keys, keys that clash under rule 2, definitions with globs arriving late (some with ``at_best``, rule 20), overrides
and removals, invalid events and resends of earlier events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fold_records import Record, batch, block_of_logs, define, finished, fresh, log, started, update

import consumer.fold.log_block as log_block
from consumer.fold import (
    Changes,
    RunState,
    flat_view,
    fold_record,
    state_from_bytes,
    state_to_bytes,
    summary,
    take_changes,
    tensors_view,
)
from consumer.fold.canonical import canonical_json
from consumer.fold.views import meta_strings

PRODUCERS = ("p1", "p2", "p3")
TOPS = ("a", "b", "a.b", "_c")
SEGMENTS = ("a", "b", "a.b", "_c", "x\\y")
NAMES = ("*", "a", "b", "a*", "*b", "a.*", "*.b", "a\\.b", "_c", "*y*", "b.a")
OPTIONS = ("min", "max", "mean", "first", "last", "best", "none")

floats = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, -2.5e-310, 1.7976931348623157e308, 1e16, 0.1]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(min_value=-10, max_value=10),
)
scalars = st.one_of(
    floats,
    floats,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(-3, 3),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
tensors = st.one_of(
    st.builds(lambda n: np.arange(n, dtype=np.float32) / 3, st.sampled_from([1, 2, 33, 40])),
    st.builds(lambda seed: np.full(34, float(seed)), st.integers(0, 2)),
)
values = st.one_of(scalars, scalars, scalars, st.lists(scalars, max_size=2), tensors)
paths = st.builds(lambda top, rest: (top, *rest), st.sampled_from(TOPS), st.lists(st.sampled_from(SEGMENTS), max_size=2))


def _nest(leaves: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path, value in leaves:
        node = root
        for segment in path[:-1]:
            node = node.setdefault(segment, {})
        node[path[-1]] = value
    return root


@st.composite
def log_values(draw: st.DrawFn) -> dict[str, Any]:
    kept: list[tuple[tuple[str, ...], Any]] = []
    for path in draw(st.lists(paths, max_size=4)):
        if all(p[: len(path)] != path and path[: len(p)] != p for p, _ in kept):  # prefix-free, as a dict is
            kept.append((path, draw(values)))
    return _nest(kept)


@st.composite
def event(draw: st.DrawFn) -> tuple[str, Any]:
    """(kind, payload) of one event; seqs and timestamps are numbered later."""
    kind = draw(st.sampled_from(["log"] * 8 + ["define"] * 2 + ["update"] * 3 + ["started", "finished", "bad"]))
    if kind == "log":
        return kind, (draw(log_values()), draw(st.integers(-2, 20)))
    if kind == "define":
        options = draw(st.none() | st.lists(st.sampled_from(OPTIONS), min_size=1, max_size=3))
        objective = draw(st.sampled_from([None, "minimize", "maximize"]))
        at_best = draw(st.just([]) | st.lists(st.sampled_from(NAMES), min_size=1, max_size=2))  # rule 20
        if at_best and draw(st.integers(0, 3)):  # mostly valid: with best and an objective
            options, objective = [*(options or []), "best"], objective or "maximize"
        return kind, (draw(st.sampled_from(NAMES)), options, objective, draw(st.booleans()), at_best)
    if kind == "update":
        sets = draw(st.dictionaries(st.sampled_from(TOPS), st.one_of(values, log_values()), max_size=2))
        return kind, (sets, draw(st.lists(st.sampled_from(TOPS), max_size=2)))
    if kind == "started":
        return kind, (draw(st.sampled_from([None, "run"])), draw(st.lists(st.sampled_from("xyz"), max_size=2)))
    if kind == "finished":
        return kind, draw(st.integers(0, 1))
    return kind, draw(st.sampled_from(["no_objective", "bad_npy", "bad_option"]))


def _record(kind: str, payload: Any, producer: str, seq: int, ts: int) -> Record:
    env: dict[str, Any] = {"producer": producer, "seq": seq, "ts": ts}
    if kind == "log":
        return log(payload[0], step=payload[1], **env)
    if kind == "define":
        name, options, objective, overwrite, at_best = payload
        record = define(name, options, objective=objective, overwrite=overwrite, **env)
        if at_best:
            record[1]["at_best"] = at_best
        return record
    if kind == "update":
        return update(payload[0], payload[1], **env)
    if kind == "started":
        return started(name=payload[0], tags=payload[1], **env)
    if kind == "finished":
        return finished(payload, **env)
    if payload == "no_objective":
        return define("a", "best", **env)
    if payload == "bad_option":
        return define("b", "median", **env)
    bad = ("metricfold.Tensor", {"kind": "numpy.ndarray", "npy": b"\x93NUMPY not really"})
    return ("metricfold.Log", {**log({}, **env)[1], "values": {"a": bad, "b": 1.0}})


@st.composite
def streams(draw: st.DrawFn) -> list[Record]:
    """Events of several producers in one order, with resends of earlier events mixed in; a third start with a
    definition whose best shows values at its step (rule 20)."""
    seqs = dict.fromkeys(PRODUCERS, 0)
    records: list[Record] = []
    if draw(st.integers(0, 2)) == 0:
        payload = (draw(st.sampled_from(["*", "a*", *NAMES])), ["best"], draw(st.sampled_from(["minimize", "maximize"])),
                   False, draw(st.lists(st.sampled_from(["*", "a*", *NAMES]), min_size=1, max_size=2)))
        records.append(_record("define", payload, "p1", 0, 1_000))
        seqs["p1"] = 1
    for i, (kind, payload) in enumerate(draw(st.lists(event(), min_size=1, max_size=40))):
        producer = draw(st.sampled_from(PRODUCERS))
        records.append(_record(kind, payload, producer, seqs[producer], 1_000 + draw(st.integers(0, 50)) + i))
        seqs[producer] += 1
        if records and draw(st.integers(0, 9)) == 0:  # a resend of an earlier event
            records.append(records[draw(st.integers(0, len(records) - 1))])
    return records


def _is_log(record: Record) -> bool:
    return record[0] == "metricfold.Log"


@dataclasses.dataclass
class Plan:
    """How to deliver a stream: cut points, LogBlock packing, round trips, the block path."""

    cuts: list[bool]
    blocks: list[bool]
    reloads: list[bool]
    vector_min: int


@st.composite
def plans(draw: st.DrawFn, size: int) -> Plan:
    return Plan(
        cuts=draw(st.lists(st.booleans(), min_size=size, max_size=size)),
        blocks=draw(st.lists(st.booleans(), min_size=size, max_size=size)),
        reloads=draw(st.lists(st.integers(0, 4).map(lambda n: n == 0), min_size=size, max_size=size)),
        vector_min=draw(st.sampled_from([0, 1, 48, 10**9])),
    )


def _delivery(records: list[Record], plan: Plan) -> Iterator[tuple[Record, bool]]:
    """Kafka records (Batches of one producer, Log runs as LogBlocks) and whether to reload after each."""
    i = 0
    while i < len(records):
        producer = records[i][1]["producer_id"]
        j = i + 1
        while j < len(records) and records[j][1]["producer_id"] == producer and not plan.cuts[j]:
            j += 1
        items: list[Record] = []
        k = i
        while k < j:
            end = k + 1
            if _is_log(records[k]) and plan.blocks[k]:
                while (
                    end < j
                    and _is_log(records[end])
                    and records[end][1]["seq"] == records[end - 1][1]["seq"] + 1
                    and not plan.blocks[end]
                ):
                    end += 1
                items.append(block_of_logs(records[k:end]))
            else:
                items.append(records[k])
            k = end
        yield batch(items, producer=producer), plan.reloads[i]
        i = j


@contextlib.contextmanager
def vector_min(value: int) -> Iterator[None]:
    saved = log_block.VECTOR_MIN_VALUES
    log_block.VECTOR_MIN_VALUES = value
    try:
        yield
    finally:
        log_block.VECTOR_MIN_VALUES = saved


def _refused(state: RunState, record: Record) -> list[tuple[str | None, int | None, str]]:
    return [(r.producer_id, r.seq, r.reason) for r in fold_record(state, record)]


@dataclasses.dataclass
class FakeStore:
    """What the store keeps for one run, built only from Changes."""

    summary: dict[str, str] = dataclasses.field(default_factory=dict)
    flat: dict[str, str] = dataclasses.field(default_factory=dict)
    numeric: dict[str, float] = dataclasses.field(default_factory=dict)
    meta: dict[str, str] = dataclasses.field(default_factory=dict)
    tensors: dict[str, str] = dataclasses.field(default_factory=dict)
    blobs: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def apply(self, changes: Changes) -> None:
        pairs: list[tuple[dict[str, Any], Mapping[str, Any], list[str]]] = [
            (self.summary, changes.summary_set, changes.summary_del),
            (self.flat, changes.flat_set, changes.flat_del),
            (self.numeric, changes.numeric_set, changes.numeric_del),
            (self.meta, changes.meta, changes.meta_del),
            (self.tensors, changes.tensors_set, changes.tensors_del),
        ]
        for target, sets, dels in pairs:
            for key in dels:
                assert key in target and key not in sets, key
                del target[key]
            target.update(sets)
        self.blobs.update(changes.blobs)

    def check(self, state: RunState) -> None:
        assert self.summary == {k: canonical_json(v) for k, v in summary(state).items()}
        flat = flat_view(state)
        assert self.flat == {k: canonical_json(v) for k, v in flat.items()}
        numbers = {k: float(v) for k, v in flat.items() if type(v) in (int, float) and math.isfinite(v)}
        assert self.numeric == numbers
        assert self.meta == meta_strings(state)
        assert self.tensors == tensors_view(state)
        assert set(self.tensors.values()) <= set(self.blobs)


def _one_by_one(records: list[Record]) -> tuple[RunState, list[tuple[str | None, int | None, str]], FakeStore]:
    state, refused, store = fresh(), [], FakeStore()
    for record in records:
        refused += _refused(state, record)
        store.apply(take_changes(state))
    return state, refused, store


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_property_folding_in_any_batching_gives_the_same_bytes(data: st.DataObject) -> None:
    records = data.draw(streams())
    plan = data.draw(plans(len(records)))
    reference, refused_reference, _ = _one_by_one(records)

    state, refused, store = fresh(), [], FakeStore()
    with vector_min(plan.vector_min):
        for record, reload in _delivery(records, plan):
            refused += _refused(state, record)
            if reload:
                store.apply(take_changes(state))  # the store saves state and changes together
                state = state_from_bytes(state_to_bytes(state))
    store.apply(take_changes(state))

    assert state_to_bytes(state) == state_to_bytes(reference)
    assert sorted(refused, key=repr) == sorted(refused_reference, key=repr)
    assert summary(state) == summary(reference) or canonical_json(summary(state)) == canonical_json(summary(reference))
    store.check(state)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records=streams(), every=st.integers(1, 4))
def test_property_changes_rebuild_the_views_exactly(records: list[Record], every: int) -> None:
    state, store = fresh(), FakeStore()
    for i, record in enumerate(records):
        fold_record(state, record)
        if i % every == 0:
            store.apply(take_changes(state))
            store.check(state)
    store.apply(take_changes(state))
    store.check(state)
    assert take_changes(state).empty


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=streams())
def test_property_canonical_bytes_survive_a_round_trip(records: list[Record]) -> None:
    state, _, _ = _one_by_one(records)

    data = state_to_bytes(state)
    again = state_from_bytes(data)

    assert state_to_bytes(again) == data
    assert canonical_json(summary(again)) == canonical_json(summary(state))
    assert take_changes(again).empty  # a loaded state has nothing new to publish


column = st.lists(floats, min_size=1, max_size=300)
int_column = st.lists(st.integers(-5, 5) | st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=200)
mixed_column = st.lists(floats | st.integers(-3, 3) | st.booleans() | st.sampled_from(["x", "y"]) | st.none(), max_size=200)


def _fold_columns_both_ways(columns: list[list[Any]], vector: int, cut: int) -> None:
    n = max(len(c) for c in columns)
    logs = [log({f"k{j}": c[i] for j, c in enumerate(columns) if i < len(c)}, step=(i * 7) % 11, seq=i, ts=i) for i in range(n)]
    reference = fresh()
    for record in logs:
        fold_record(reference, record)

    state = fresh()
    with vector_min(vector):
        for part in (logs[:cut], logs[cut:]):
            if part:
                assert fold_record(state, batch([block_of_logs(part)])) == []

    assert state_to_bytes(state) == state_to_bytes(reference)


@settings(max_examples=300, deadline=None)
@given(
    columns=st.lists(column, min_size=1, max_size=4),
    vector=st.sampled_from([0, 48, 10**9]),
    cut=st.integers(0, 300),
    regular=st.booleans(),
)
def test_property_a_numpy_folded_log_block_equals_the_logs_one_by_one(
    columns: list[list[float]], vector: int, cut: int, regular: bool
) -> None:
    if regular:  # every event logs every key, all finite: the regular fast paths
        size = min(len(c) for c in columns)
        columns = [[x if math.isfinite(x) else 0.5 for x in c[:size]] for c in columns]
    _fold_columns_both_ways(columns, vector, cut)


@settings(max_examples=200, deadline=None)
@given(
    floats_=st.lists(column, max_size=2),
    ints=st.lists(int_column, max_size=2),
    mixed=st.lists(mixed_column, max_size=2),
    vector=st.sampled_from([0, 48, 10**9]),
    cut=st.integers(0, 200),
)
def test_property_log_blocks_with_extras_equal_the_logs_one_by_one(
    floats_: list[list[float]], ints: list[list[int]], mixed: list[list[Any]], vector: int, cut: int
) -> None:
    columns: list[list[Any]] = [*floats_, *ints, *mixed]
    if any(columns):
        _fold_columns_both_ways([c for c in columns if c] or [[1.0]], vector, cut)


_EXTREME_FLOATS = st.sampled_from([5e-324, -5e-324, 2.0**-1022, 1.7976931348623157e308, -1.7976931348623157e308, 0.0, -0.0])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False), _EXTREME_FLOATS), max_size=40))
def test_the_fsum_exact_sum_equals_the_value_by_value_one(values: list[float]) -> None:
    """The small-block path sums a column with a few math.fsum calls; the exact sum must be the same integer
    as adding every value's exact units (sums past the float range take the value-by-value way)."""
    from consumer.fold.exact_sums import exact_sum_units, exact_units

    assert exact_sum_units(values) == sum(map(exact_units, values))


def test_many_small_blocks_sum_exactly_whenever_the_sum_is_read() -> None:
    """Small blocks hand their floats to the leaf unsummed; the leaf adds them to its exact sum once it holds
    UNSUMMED_MAX of them, and whenever the sum is read. Both ways must give the one-by-one fold's bytes."""
    import random

    from consumer.fold.aggregates import UNSUMMED_MAX

    rng = random.Random(7)
    values = [rng.uniform(-1e3, 1e3) * 10.0 ** rng.randint(-20, 20) for _ in range(7 * UNSUMMED_MAX)]
    logs = [log({"loss": v, "acc": -v / 3}, step=i, seq=i, ts=i) for i, v in enumerate(values)]
    reference, read_often, read_at_end = fresh(), fresh(), fresh()
    for start in range(0, len(logs), 10):
        part = logs[start : start + 10]
        for record in part:
            fold_record(reference, record)
        for state in (read_often, read_at_end):
            assert fold_record(state, batch([block_of_logs(part)])) == []
        assert state_to_bytes(read_often) == state_to_bytes(reference)  # 10 values a leaf: the read sums them

    assert state_to_bytes(read_often) == state_to_bytes(reference)
    assert state_to_bytes(read_at_end) == state_to_bytes(reference)


def test_combined_block_stats_keep_the_unsummed_floats_of_both_sides() -> None:
    from consumer.fold.aggregates import BlockStats, Leaf
    from consumer.fold.exact_sums import exact_units

    ours, theirs = BlockStats(), BlockStats()
    ours.finite_count, ours.unsummed = 2, [0.1, 0.2]
    theirs.finite_count, theirs.exact_sum, theirs.unsummed = 2, exact_units(2.5), [0.3]  # one value summed already, one not
    ours.combine(theirs)
    leaf = Leaf(("x",), "x", 0.1, ())
    leaf.add_block(ours, [0, 1, 2, 3])

    assert leaf.finite_count == 4 and leaf.exact_sum == sum(map(exact_units, [0.1, 0.2, 0.3, 2.5]))
