"""Every reason the fold refuses an event: the event changes nothing, the events around it still apply."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_fold_records import (
    Logger,
    Record,
    batch,
    define,
    envelope,
    fresh,
    log,
    log_block,
    npy,
    started,
    tensor,
    update,
)

from consumer.fold import Rejected, fold_record, state_to_bytes, summary
from schemas.limits import Limits

SMALL = Limits(max_key_length=8, max_key_depth=2, max_values_per_event=3, max_string_length=5, max_tensor_bytes=2_000)


def _refused_alone(record: Record, limits: Limits = SMALL) -> Rejected:
    """Fold *record* between two good logs; assert it alone was refused and changed nothing."""
    state = fresh()
    good_before = log({"ok": 1.0}, producer="good", seq=0)
    good_after = log({"ok": 2.0}, producer="good", seq=1)
    assert fold_record(state, good_before, limits=limits) == []
    before = state_to_bytes(state)

    refused = fold_record(state, record, limits=limits)

    assert len(refused) == 1, refused
    assert state_to_bytes(state) == before
    assert fold_record(state, good_after, limits=limits) == []
    assert summary(state) == {"ok": 2.0}
    return refused[0]


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (log({"much_too_long_key": 1.0}), "max_key_length"),
        (log({"a": {"b": {"c": 1.0}}}), "max_key_depth"),
        (log({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}), "max_values_per_event"),
        (log({"s": "longer than five"}), "max_string_length"),
        (log({"t": np.zeros(1000)}), "max_tensor_bytes"),
        (log({"t": ("metricfold.Tensor", {"kind": "numpy.ndarray", "npy": b"\x93NUMPY garbage"})}), ".npy"),
        (log({"t": ("metricfold.Tensor", {"kind": "numpy.ndarray", "npy": npy(np.zeros(40))[:-8]})}), "data bytes"),
        (log({"t": ("metricfold.Tensor", {"kind": "numpy.ndarray", "npy": npy(np.array(["ab"] * 40))})}), "dtype"),
        (log({"t": tensor(np.zeros(40), kind="jax.Array")}), "kind"),
        (log({"": 1.0}), "non-empty"),
        (define("acc", "best"), "objective"),
        (define("acc", "median"), "median"),
        (define("acc", "max", objective="upward"), "objective"),
        (define("", "max"), "name"),
        (update({"k": "longer than five"}), "max_string_length"),
        (update({"much_too_long_key": 1.0}), "max_key_length"),
        (update({"a": 1, "b": 2}, remove=["c", "d"]), "max_values_per_event"),
        (started(config_json="[1, 2]"), "JSON object"),
        (started(config_json="{nope"), "not valid JSON"),
        (started(config_json='{"path": "\\udc00"}'), "not valid Unicode"),  # a lone surrogate as a JSON escape
        (started(tags=["much too long"]), "max_key_length"),  # the SDK's tag limit (schemas.values.check_tags)
        (log({"a": 1.0}, seq=-1), "negative"),
        (log({"a": 1.0}, run=("team", "vision", "other")), "team/vision/other"),
        (("metricfold.Nonsense", {**envelope()}), "not a metricfold event type"),
        (log_block([(0, 0, [(("a",), 1.0)])]), "inside a metricfold.Batch"),
        (("metricfold.Log", {**envelope(), "step": 0}), "malformed"),
    ],
)
def test_a_bad_event_is_refused_with_a_reason_and_changes_nothing(record: Record, words: str) -> None:
    reason = _refused_alone(record).reason

    assert words in reason


def test_a_refused_event_is_reported_with_its_producer_seq_and_type() -> None:
    rejected = _refused_alone(define("acc", "best", producer="p9", seq=4))

    assert (rejected.index, rejected.producer_id, rejected.seq, rejected.event_type) == (
        0,
        "p9",
        4,
        "metricfold.DefineMetric",
    )


def test_a_batch_item_whose_envelope_differs_from_the_header_is_refused() -> None:
    state = fresh()
    items = [log({"a": 1.0}, producer="p1", seq=0), log({"a": 2.0}, producer="intruder", seq=1), log({"a": 3.0}, seq=2)]

    refused = fold_record(state, batch(items, producer="p1"))

    assert [(r.index, r.producer_id, r.seq) for r in refused] == [(1, "intruder", 1)]
    assert "batch header" in refused[0].reason
    assert summary(state) == {"a": 3.0} and state.events == 2


def test_a_batch_for_another_run_refuses_every_event_including_each_block_event() -> None:
    state = fresh()
    other = ("team", "vision", "other")
    block = log_block([(0, 0, [(("a",), 1.0)]), (1, 1, [(("a",), 2.0)])], first_seq=5)

    refused = fold_record(state, batch([log({"a": 1.0}, run=other), block], run=other))

    assert [(r.index, r.seq) for r in refused] == [(0, 0), (1, 5), (1, 6)]
    assert state_to_bytes(state) == state_to_bytes(fresh())


def _block_refusals(events: list[tuple[int, int, list[tuple[tuple[str, ...], Any]]]], **block: Any) -> list[Rejected]:
    state = fresh()
    name, datum = log_block(events)
    datum.update(block)
    refused = fold_record(state, batch([(name, datum)]), limits=SMALL)
    return refused


def test_log_block_events_that_break_a_limit_are_refused_one_by_one() -> None:
    events: list[tuple[int, int, list[tuple[tuple[str, ...], Any]]]] = [
        (0, 0, [(("a",), 1.0)]),
        (1, 1, [(("much_too_long_key",), 1.0)]),
        (2, 2, [(("a",), 1.0), (("b",), 2.0), (("c",), 3.0), (("d",), 4.0)]),
        (3, 3, [(("s",), "longer than five")]),
        (4, 4, [(("a", "b", "c"), 1.0)]),
        (5, 5, [(("a",), 5.0)]),
    ]
    state = fresh()

    refused = fold_record(state, batch([log_block(events)]), limits=SMALL)

    assert [r.seq for r in refused] == [1, 2, 3, 4]
    assert ["max_key_length" in refused[0].reason, "max_values_per_event" in refused[1].reason] == [True, True]
    assert "max_string_length" in refused[2].reason and "max_key_depth" in refused[3].reason
    assert summary(state) == {"a": 5.0} and state.events == 2
    assert state.producers["p1"].watermark == 1 and state.producers["p1"].ranges == [(5, 6)]


def test_a_log_block_event_that_logs_a_key_twice_or_a_key_and_one_under_it_is_refused() -> None:
    name, datum = log_block([(0, 0, [(("a",), 1.0)]), (1, 1, [(("b",), 1.0)]), (2, 2, [(("c",), 1.0)])])
    datum["path_idx"] = [0, 1, 1, 0, 2]  # event 1 logs "b" twice
    datum["counts"] = [1, 2, 2]
    datum["values"] = [1.0, 2.0, 3.0, 4.0, 5.0]
    datum["paths"] = [["a"], ["b"], ["a", "x"]]  # event 2 logs "a" and "a.x"
    state = fresh()

    refused = fold_record(state, batch([(name, datum)]))

    assert [(r.seq, r.reason) for r in refused] == [
        (1, "the event logs key 'b' twice"),
        (2, "the event logs both 'a' and 'a.x' under it"),
    ]
    assert summary(state) == {"a": 1.0}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"counts": [1, 1]}, "one entry per event"),
        ({"counts": [2, 2, 0]}, "add up"),
        ({"path_idx": [0, 0, 7]}, "out of range"),
        ({"extras": [{"event": 9, "path": 0, "value": 1}]}, "out of range"),
        ({"first_seq": -3}, "negative"),
    ],
)
def test_a_malformed_log_block_is_refused_whole(change: dict[str, Any], words: str) -> None:
    refused = _block_refusals([(i, i, [(("a",), float(i))]) for i in range(3)], **change)

    assert len(refused) == 3 and all(words in r.reason for r in refused)


def test_a_log_block_extra_that_is_a_subtree_is_refused() -> None:
    name, datum = log_block([(0, 0, [(("a",), 1.0)]), (1, 1, [(("b",), 2)])])
    datum["extras"][0]["value"] = ("metricfold.Subtree", {"values": {"x": 1}})
    state = fresh()

    refused = fold_record(state, batch([(name, datum)]))

    assert [r.seq for r in refused] == [1] and "Subtree" in refused[0].reason


def test_a_refused_event_is_not_remembered_so_a_fixed_resend_applies() -> None:
    lg = Logger()
    state = fresh()
    bad = lg.define("acc", "best")
    fixed = ("metricfold.DefineMetric", {**bad[1], "objective": "maximize"})

    assert len(fold_record(state, bad)) == 1
    assert fold_record(state, fixed) == []
    assert state.definitions[0].objective == "maximize"


def test_records_that_are_not_the_schema_shape_are_refused_not_raised() -> None:
    state = fresh()
    no_ts = ("metricfold.Log", {k: v for k, v in log({"a": 1.0})[1].items() if k != "ts_ms"})
    no_steps = ("metricfold.LogBlock", {k: v for k, v in log_block([(0, 0, [(("a",), 1.0)])])[1].items() if k != "steps"})

    assert "malformed" in fold_record(state, no_ts)[0].reason
    assert "malformed metricfold.Batch" in fold_record(state, ("metricfold.Batch", {"entity": "team"}))[0].reason
    assert "malformed LogBlock" in fold_record(state, batch([no_steps]))[0].reason
    assert state_to_bytes(state) == state_to_bytes(fresh())


def test_a_log_block_event_with_an_empty_key_path_is_refused_alone() -> None:
    name, datum = log_block([(0, 0, [(("a",), 1.0)]), (1, 1, [(("b",), 2.0)])])
    datum["paths"][1] = []
    state = fresh()

    refused = fold_record(state, batch([(name, datum)]))

    assert [r.seq for r in refused] == [1] and "empty" in refused[0].reason
    assert summary(state) == {"a": 1.0}
