"""Merging a poll's consecutive log records of one producer into one block changes speed, never the state."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.fold import fold_record, new_run_state, state_to_bytes, take_changes
from consumer.fold.merge import merge_log_records

KEYS = (["loss"], ["acc"], ["grad", "norm"], ["lr"])


def batch(producer: str, first_seq: int, events: list[dict[int, Any]], bad: bool = False) -> tuple[str, Any]:
    paths = [list(p) for p in KEYS]
    counts, path_idx, values, extras = [], [], [], []
    for i, event in enumerate(events):
        floats = {k: v for k, v in event.items() if isinstance(v, float)}
        counts.append(len(floats))
        path_idx.extend(floats)
        values.extend(floats.values())
        extras.extend({"event": i, "path": k, "value": v} for k, v in event.items() if not isinstance(v, float))
    block = {"first_seq": first_seq, "steps": [first_seq + i for i in range(len(events))],
             "ts_ms": [1000 + first_seq + i for i in range(len(events))], "paths": paths, "counts": counts,
             "path_idx": path_idx, "values": values, "extras": extras}
    if bad:
        block["ts_ms"] = block["ts_ms"][:-1]  # malformed: the fold refuses the whole block
    return ("metricfold.Batch", {"entity": "e", "project": "p", "run_id": "r", "producer_id": producer,
                                 "items": [("metricfold.LogBlock", block)]})


value = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10), st.text(max_size=3))
event = st.dictionaries(st.integers(0, len(KEYS) - 1), value, min_size=1, max_size=4)


@st.composite
def streams(draw: Any) -> list[tuple[str, Any]]:
    seqs = {"a": 0, "b": 0}
    records = []
    for _ in range(draw(st.integers(1, 8))):
        producer = draw(st.sampled_from(["a", "b"]))
        events = draw(st.lists(event, min_size=1, max_size=5))
        gap = draw(st.sampled_from([0, 0, 0, 2]))  # now and then a gap (a resend or a lost seq)
        bad = draw(st.sampled_from([False] * 6 + [True]))
        records.append(batch(producer, seqs[producer] + gap, events, bad))
        seqs[producer] += gap + (0 if bad else len(events))
    return records


def fold_all(records: list[tuple[str, Any]]) -> tuple[bytes, int]:
    state = new_run_state("e", "p", "r")
    refused = sum(len(fold_record(state, r)) for r in records)
    take_changes(state)
    return state_to_bytes(state), refused


@settings(max_examples=300, deadline=None)
@given(streams())
def test_merged_records_fold_to_the_same_state_and_refusals_as_one_by_one(records: list[tuple[str, Any]]) -> None:
    merged = merge_log_records([([i], r) for i, r in enumerate(records)])

    assert fold_all([d for _, d in merged]) == fold_all(records)
    assert [i for ids, _ in merged for i in ids] == list(range(len(records)))


def test_consecutive_records_of_one_producer_become_one_block() -> None:
    records = [batch("a", 0, [{0: 1.0}]), batch("a", 1, [{1: 2.0}, {0: 3.0}]), batch("b", 0, [{0: 4.0}])]

    merged = merge_log_records([([i], r) for i, r in enumerate(records)])

    assert [ids for ids, _ in merged] == [[0, 1], [2]]
    block = merged[0][1][1]["items"][0][1]
    assert block["steps"] == [0, 1, 2] and block["values"] == [1.0, 2.0, 3.0]
