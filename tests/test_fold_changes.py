"""take_changes, the canonical bytes and JSON, and the public surface of consumer.fold."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from test_fold_records import Logger, fold_all, fresh, npy

import consumer.fold
from consumer.fold import (
    canonical_json,
    display_path,
    flat_view,
    state_from_bytes,
    state_to_bytes,
    summary,
    take_changes,
)


def test_the_public_surface_is_pinned() -> None:
    assert consumer.fold.__all__ == [
        "Changes",
        "Rejected",
        "RunState",
        "canonical_json",
        "display_path",
        "events_applied",
        "flat_view",
        "fold_record",
        "new_run_state",
        "state_from_bytes",
        "state_to_bytes",
        "summary",
        "take_changes",
        "tensors_view",
    ]


def test_canonical_json_sorts_keys_is_compact_and_writes_nan_tokens() -> None:
    value = {"b": [1, 2.5, float("nan")], "a": {"y": float("inf"), "x": -float("inf")}, "c": "é", "d": -0.0}

    text = canonical_json(value)

    assert text == '{"a":{"x":-Infinity,"y":Infinity},"b":[1,2.5,NaN],"c":"é","d":-0.0}'
    assert canonical_json(json.loads(text)) == text


def test_canonical_json_of_a_scalar_is_its_text_inside_a_list() -> None:
    for value in [0, -7, 2**80, True, False, None, 1.5, -0.0, float("nan"), "é\n\"", ""]:
        assert f"[{canonical_json(value)}]" == canonical_json([value]), value


def test_display_paths_escape_dots_and_backslashes() -> None:
    assert display_path(("grad", "norm")) == "grad.norm"
    assert display_path(("lr.base", "a\\b")) == "lr\\.base.a\\\\b"


def test_take_changes_reports_only_what_changed_since_the_last_call() -> None:
    lg = Logger()
    state = fold_all([lg.log({"loss": 0.5, "acc": 0.1}), lg.define("loss", "min")])
    first = take_changes(state)
    assert first.summary_set == {"loss": '{"min":0.5}', "acc": "0.1"}
    assert first.numeric_set == {"loss.min": 0.5, "acc": 0.1}

    fold_all([lg.log({"acc": 0.2, "loss": 0.7})], state)  # loss.min unchanged
    second = take_changes(state)

    assert second.summary_set == {"acc": "0.2"} and second.flat_set == {"acc": "0.2"}
    assert second.summary_del == [] and second.flat_del == []
    assert take_changes(state).empty


def test_numeric_paths_that_stop_being_finite_numbers_are_deleted_from_the_sorted_sets() -> None:
    lg = Logger()
    state = fold_all([lg.log({"x": 1.0, "y": 2.0})])
    take_changes(state)

    fold_all([lg.log({"x": float("nan"), "y": "text"})], state)
    changes = take_changes(state)

    assert changes.flat_set == {"x": "NaN", "y": '"text"'}
    assert sorted(changes.numeric_del) == ["x", "y"] and changes.numeric_set == {}


def test_a_tensor_that_is_replaced_is_deleted_and_its_blob_given_once() -> None:
    lg = Logger()
    first, second = np.arange(50.0), np.arange(60.0)
    state = fold_all([lg.log({"w": first})])
    sha1 = hashlib.sha256(npy(first)).hexdigest()
    assert take_changes(state).tensors_set == {"w": sha1}

    fold_all([lg.log({"w": second}), lg.update({"other": 1})], state)
    changes = take_changes(state)

    sha2 = hashlib.sha256(npy(second)).hexdigest()
    assert changes.tensors_set == {"w": sha2} and changes.tensors_del == []
    assert set(changes.blobs) == {sha2}  # sha1 (still the first value) was handed over last time

    fold_all([lg.log({"w": 1.0})], state)
    assert take_changes(state).tensors_del == ["w"]


def test_a_tensor_first_value_is_stored_so_a_late_first_definition_can_show_it() -> None:
    lg = Logger()
    first = np.arange(50.0)
    state = fold_all([lg.log({"w": first}), lg.log({"w": np.zeros(40)})])
    blobs = take_changes(state).blobs
    sha = hashlib.sha256(npy(first)).hexdigest()
    assert sha in blobs  # not shown yet, but kept by the state: handed to the store anyway

    reloaded = state_from_bytes(state_to_bytes(state))
    fold_all([lg.define("w", "first")], reloaded)
    changes = take_changes(reloaded)

    assert changes.tensors_set == {"w.first": sha} and changes.tensors_del == ["w"]


def test_a_reloaded_state_publishes_only_what_changes_after_the_reload() -> None:
    lg = Logger()
    state = fold_all([lg.log({"a": 1.0, "b": {"c": 2.0}}), lg.define("a", "max")])
    take_changes(state)
    reloaded = state_from_bytes(state_to_bytes(state))

    fold_all([lg.log({"a": 0.5})], reloaded)
    changes = take_changes(reloaded)

    assert changes.summary_set == {} and changes.flat_set == {}
    assert set(changes.meta) == {"events", "updated"}

    fold_all([lg.define("a", "none")], reloaded)
    assert take_changes(reloaded).summary_del == ["a"]


def test_state_bytes_hold_only_sha256_of_tensors_and_round_trip_exactly() -> None:
    lg = Logger()
    big = np.random.default_rng(0).random(200)
    state = fold_all([lg.log({"w": big, "x": 1e16, "n": 2**62, "z": -0.0, "s": "é"}), lg.update({"o": {"k": big}})])

    data = state_to_bytes(state)

    assert npy(big) not in data and hashlib.sha256(npy(big)).hexdigest().encode() in data
    again = state_from_bytes(data)
    assert state_to_bytes(again) == data and again == state
    assert summary(again) == summary(state) and flat_view(again) == flat_view(state)
    assert flat_view(state)["o.k.size"] == 200


def test_an_empty_state_has_no_changes() -> None:
    assert take_changes(fresh()).empty
