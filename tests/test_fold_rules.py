"""RULES.md §4, rule by rule: one story per rule (arrange, act, assert), plus the run meta."""

from __future__ import annotations

import hashlib
import math

import numpy as np
from test_fold_records import Logger, batch, block_of_logs, fold_all, fresh, log_block, npy

from consumer.fold import (
    flat_view,
    fold_record,
    state_from_bytes,
    state_to_bytes,
    summary,
    take_changes,
)

NAN, INF = float("nan"), float("inf")


# --- Keys -----------------------------------------------------------------------------------------------


def test_rule_01_nested_dicts_split_into_leaves_and_dots_in_keys_are_literal() -> None:
    lg = Logger()

    state = fold_all([lg.log({"grad": {"norm": 1.5, "max": 3.0}, "val/loss": 0.4, "lr.base": 0.1})])

    assert summary(state) == {"grad": {"norm": 1.5, "max": 3.0}, "val/loss": 0.4, "lr.base": 0.1}
    assert flat_view(state) == {"grad.norm": 1.5, "grad.max": 3.0, "val/loss": 0.4, "lr\\.base": 0.1}


def test_rule_01_define_metric_names_escape_a_literal_dot() -> None:
    lg = Logger()

    state = fold_all([lg.log({"lr.base": 0.1, "lr": {"base": 0.5}}), lg.define("lr\\.base", "max")])

    # "lr.base" (one key with a dot) and "lr" -> "base" (two levels) are different keys
    assert summary(state) == {"lr.base": {"max": 0.1}, "lr": {"base": 0.5}}


def test_rule_02_a_scalar_replaces_a_subtree_and_a_subtree_replaces_a_scalar() -> None:
    lg = Logger()
    state = fold_all([lg.log({"a": {"b": 1.0, "c": 2.0}}), lg.define("a", "min"), lg.define("a.*", "max")])
    assert summary(state) == {"a": {"b": {"max": 1.0}, "c": {"max": 2.0}}}

    fold_all([lg.log({"a": 5.0}, step=1)], state)
    assert summary(state) == {"a": {"min": 5.0}}  # a.b and a.c are gone, with their aggregates

    fold_all([lg.log({"a": {"b": 7.0}}, step=2)], state)
    assert summary(state) == {"a": {"b": {"max": 7.0}}}  # the scalar's aggregates (min 5.0) are gone too


# --- Values ---------------------------------------------------------------------------------------------


def test_rule_03_ints_and_floats_are_numeric_bools_strings_and_lists_are_not() -> None:
    lg = Logger()
    records = [lg.define("*", "min,max")]
    records += [lg.log({"n": n, "flag": f, "name": s, "xs": [n, n]}, step=n) for n, f, s in [(3, True, "b"), (1, False, "a")]]

    state = fold_all(records)

    assert summary(state) == {"n": {"min": 1, "max": 3}, "flag": {}, "name": {}, "xs": {}}


def test_rule_03_numpy_scalars_become_python_values() -> None:
    lg = Logger()
    one = lg.log({"a": np.array([2.5], dtype=np.float32), "b": np.array(7, dtype=np.int16), "c": np.array([True])})

    state = fold_all([one])

    assert summary(state) == {"a": 2.5, "b": 7, "c": True}
    assert [type(v) for v in summary(state).values()] == [float, int, bool]


def test_rule_04_tensors_small_become_lists_large_become_stats_and_a_stored_blob() -> None:
    lg = Logger()
    weights = np.arange(1000, dtype=np.float64).reshape(10, 100)
    small = np.array([[1, 2], [3, 4]], dtype=np.int64)

    state = fold_all([lg.log({"weights": weights, "small": small})])
    changes = take_changes(state)

    stats = summary(state)["weights"]
    assert summary(state)["small"] == [[1, 2], [3, 4]]
    assert stats["_type"] == "numpy.ndarray" and stats["shape"] == [10, 100] and stats["dtype"] == "float64"
    assert (stats["min"], stats["max"], stats["50%"], stats["size"]) == (0.0, 999.0, 499.5, 1000)
    sha = hashlib.sha256(npy(weights)).hexdigest()
    assert changes.tensors_set == {"weights": sha}
    assert np.array_equal(np.load(__import__("io").BytesIO(changes.blobs[sha])), weights)
    assert flat_view(state)["weights.mean"] == 499.5 and flat_view(state)["weights.shape"] == "[10,100]"
    assert sha in state_to_bytes(state).decode() and changes.blobs[sha] not in state_to_bytes(state)


def test_rule_04_a_tensor_override_gets_the_same_treatment() -> None:
    lg = Logger()
    weights = np.linspace(0.0, 1.0, 101, dtype=np.float32)

    state = fold_all([lg.update({"weights": weights})])
    changes = take_changes(state)

    assert summary(state)["weights"]["size"] == 101 and summary(state)["weights"]["_type"] == "numpy.ndarray"
    sha = hashlib.sha256(npy(weights)).hexdigest()
    assert changes.tensors_set == {"weights": sha} and set(changes.blobs) == {sha}


def test_rule_05_none_in_a_log_changes_nothing_and_none_in_an_update_removes() -> None:
    lg = Logger()
    state = fold_all([lg.log({"loss": 0.5, "acc": 0.9}), lg.log({"loss": None}), lg.update({"acc": None})])

    assert summary(state) == {"loss": 0.5}


def test_rule_06_nan_is_kept_as_first_and_last_but_excluded_from_min_max_mean_best() -> None:
    lg = Logger()
    records = [lg.define("loss", "first,last,min,max,mean"), lg.define("inf", "min,max,mean")]
    records += [
        lg.log({"loss": v, "inf": w}, step=i) for i, (v, w) in enumerate([(NAN, 1.0), (2.0, INF), (4.0, -3.0), (NAN, 2.0)])
    ]
    records += [lg.define("best", "best", objective="minimize"), lg.log({"best": NAN}, step=9)]

    state = fold_all(records)

    loss = summary(state)["loss"]
    assert math.isnan(loss["first"]) and math.isnan(loss["last"])
    assert (loss["min"], loss["max"], loss["mean"]) == (2.0, 4.0, 3.0)
    assert summary(state)["inf"] == {"min": -3.0, "max": INF, "mean": INF}  # ±inf take part
    assert summary(state)["best"] == {}  # no non-NaN value yet: the entry is omitted


# --- Automatic summary ----------------------------------------------------------------------------------


def test_rule_07_without_a_definition_the_summary_is_the_last_value() -> None:
    lg = Logger()
    state = fold_all([lg.log({"loss": v}, step=i) for i, v in enumerate([0.9, 0.2, 0.5])])

    assert summary(state) == {"loss": 0.5}


def test_rule_08_a_late_definition_covers_earlier_values_and_shows_at_once() -> None:
    lg = Logger()
    state = fold_all([lg.log({"loss": v}, step=i) for i, v in enumerate([0.9, 0.2, 0.5])])
    take_changes(state)

    fold_all([lg.define("loss", "min")], state)
    changes = take_changes(state)

    assert summary(state) == {"loss": {"min": 0.2}}
    assert changes.summary_set == {"loss": '{"min":0.2}'}
    assert changes.flat_set == {"loss.min": "0.2"} and changes.flat_del == ["loss"]


def test_rule_09_options_give_exactly_the_requested_aggregates_and_best_has_its_step() -> None:
    lg = Logger()
    records = [
        lg.define("loss", " Min, MAX "),
        lg.define("acc", "best", objective="maximize"),
        lg.define("lr", ["none"]),
        lg.define("epoch", ["first", "last"]),
    ]
    records += [
        lg.log({"loss": 1 / (s + 1), "acc": a, "lr": 0.1, "epoch": s}, step=s * 10) for s, a in enumerate([0.5, 0.8, 0.8, 0.7])
    ]

    state = fold_all(records)

    assert summary(state) == {
        "loss": {"min": 0.25, "max": 1.0},
        "acc": {"best": 0.8, "best_step": 10},  # first reached at step 10; the tie at step 20 keeps it
        "epoch": {"first": 0, "last": 3},
    }
    assert flat_view(state)["acc.best_step"] == 10


def test_rule_09_best_needs_an_objective() -> None:
    lg = Logger()
    state = fresh()

    refused = fold_record(state, lg.define("acc", "best"))

    assert len(refused) == 1 and "objective" in refused[0].reason and state.definitions == []


def test_rule_10_the_mean_is_exact_whatever_the_batching() -> None:
    lg = Logger()
    values = [1e16, 1.0, -1e16, 3.0, 0.1, 0.2, 0.3] * 7
    logs = [lg.define("x", "mean")] + [lg.log({"x": v}, step=i) for i, v in enumerate(values)]

    one_by_one = fold_all(logs)
    blocks = fold_all([batch([logs[0]]), batch([block_of_logs(logs[1:20])]), batch([block_of_logs(logs[20:])])])

    exact = float(sum(__import__("fractions").Fraction(v) for v in values) / len(values))
    assert summary(one_by_one)["x"]["mean"] == exact == summary(blocks)["x"]["mean"]
    assert exact != sum(values) / len(values)  # naive float summation would be wrong here
    assert state_to_bytes(one_by_one) == state_to_bytes(blocks)


def test_rule_11_non_numeric_values_update_only_first_and_last() -> None:
    lg = Logger()
    records = [lg.define("phase", "first,last,min")]
    records += [lg.log({"phase": p}) for p in ["warmup", "train", "eval"]]

    state = fold_all(records)

    assert summary(state) == {"phase": {"first": "warmup", "last": "eval"}}


def test_rule_12_globs_match_anywhere_and_precedence_is_deterministic() -> None:
    lg = Logger()
    records = [
        lg.define("*", "last"),
        lg.define("val/*", "min"),
        lg.define("*/loss", "max"),  # as many literal characters as "val/*", and later
        lg.define("val/acc", "mean"),
        lg.define("*.norm", "first"),
    ]
    records += [
        lg.log({"val/loss": v, "val/acc": v, "val/f1": v, "train/loss": v, "grad": {"norm": v}, "_t": v}) for v in [2.0, 1.0]
    ]

    state = fold_all(records)

    assert summary(state) == {
        "val/loss": {"max": 2.0},  # "val/*" and "*/loss" tie on literal length: the later wins
        "val/acc": {"mean": 1.5},  # exact beats every glob
        "val/f1": {"min": 1.0},
        "train/loss": {"max": 2.0},
        "grad": {"norm": {"first": 2.0}},  # "*" matches "." too; the longer glob wins
        "_t": 1.0,  # a bare "*" does not match keys starting with "_"
    }


def test_rule_13_definitions_of_one_name_merge_none_resets_overwrite_replaces() -> None:
    lg = Logger()
    state = fold_all([lg.log({"loss": 0.5}), lg.define("loss", "min"), lg.define("loss", "max")])
    assert summary(state) == {"loss": {"min": 0.5, "max": 0.5}}

    fold_all([lg.define("loss", "none")], state)
    assert summary(state) == {}

    fold_all([lg.define("loss", "mean")], state)
    assert summary(state) == {"loss": {"mean": 0.5}}

    fold_all([lg.define("loss", "last", overwrite=True)], state)
    assert summary(state) == {"loss": {"last": 0.5}}

    fold_all([lg.define("loss", None, hidden=True, step_metric="epoch")], state)  # options not given: kept
    assert summary(state) == {"loss": {"last": 0.5}}
    assert state.definitions[-1].hidden and state.definitions[-1].step_metric == "epoch"


def test_rule_14_steps_going_backwards_never_drop_events() -> None:
    rank0, rank1 = Logger("rank0"), Logger("rank1")
    records = [rank0.define("loss", "best,last", objective="minimize")]
    records += [rank0.log({"loss": 0.5}, step=10), rank1.log({"loss": 0.1}, step=3), rank0.log({"loss": 0.3}, step=11)]

    state = fold_all(records)

    assert summary(state) == {"loss": {"best": 0.1, "best_step": 3, "last": 0.3}}
    assert state.events == 4


# --- Overrides ------------------------------------------------------------------------------------------


def test_rule_15_override_wins_over_later_logs() -> None:
    lg = Logger()
    state = fold_all([lg.define("acc", "max"), lg.log({"acc": 0.5}), lg.update({"acc": 0.91})])
    take_changes(state)

    fold_all([lg.log({"acc": 0.95}, step=1)], state)

    assert summary(state) == {"acc": 0.91}
    assert take_changes(state).summary_set == {}


def test_rule_16_removing_an_override_hides_the_key_until_it_is_logged_again() -> None:
    lg = Logger()
    state = fold_all([lg.define("acc", "max"), lg.log({"acc": 0.5}), lg.update({"acc": 0.91}), lg.log({"acc": 0.7})])

    fold_all([lg.update(remove=["acc"])], state)
    assert summary(state) == {}

    fold_all([lg.log({"acc": 0.6}, step=3)], state)
    assert summary(state) == {"acc": {"max": 0.7}}  # aggregates over every value ever logged


def test_rule_17_an_override_dict_is_one_opaque_value() -> None:
    lg = Logger()
    state = fold_all([lg.define("*", "min"), lg.update({"eval": {"acc": 0.9, "f1": {"macro": 0.8}}})])

    assert summary(state) == {"eval": {"acc": 0.9, "f1": {"macro": 0.8}}}
    assert flat_view(state) == {"eval.acc": 0.9, "eval.f1.macro": 0.8}


# --- Identity and order ---------------------------------------------------------------------------------


def test_rule_18_a_resent_event_changes_nothing() -> None:
    lg = Logger()
    logs = [lg.log({"loss": v}, step=i) for i, v in enumerate([0.5, 0.4, 0.3])]
    state = fold_all(logs)
    before = state_to_bytes(state)
    take_changes(state)

    fold_all([logs[1], batch([block_of_logs(logs)]), logs[0]], state)

    assert state_to_bytes(state) == before
    assert take_changes(state).empty


def test_rule_18_events_out_of_seq_order_are_each_applied_once() -> None:
    lg = Logger()
    logs = [lg.log({"n": i}, step=i) for i in range(6)]

    state = fold_all([logs[3], logs[0], logs[5], logs[1], logs[3], logs[2], logs[4], logs[5]])

    assert state.events == 6
    assert state.producers["p1"].watermark == 6 and state.producers["p1"].ranges == []


def test_rule_19_the_same_events_give_the_same_bytes_however_batched_and_reloaded() -> None:
    lg = Logger()
    events = [lg.started(name="r"), lg.define("loss", "min,mean")]
    events += [lg.log({"loss": 1.0 / (i + 1), "grad": {"norm": float(i)}}, step=i) for i in range(60)]
    events += [lg.update({"note": "ok"}), lg.finished()]

    one_by_one = fold_all(events)
    batched = fold_all([batch(events[:2]), batch([block_of_logs(events[2:40])])])
    batched = state_from_bytes(state_to_bytes(batched))
    fold_all([batch([block_of_logs(events[40:62]), *events[62:]])], batched)

    assert state_to_bytes(batched) == state_to_bytes(one_by_one)
    assert batched == one_by_one


# --- Run meta -------------------------------------------------------------------------------------------


def test_meta_follows_run_started_finished_and_resume() -> None:
    lg = Logger(ts=5_000)
    state = fold_all([lg.started(name="first", config_json='{"lr": 0.1, "b": [1, 2]}', tags=["a", "b"]), lg.log({"x": 1.0})])

    meta = take_changes(state).meta
    assert meta == {
        "state": "running",
        "name": "first",
        "config": '{"b":[1,2],"lr":0.1}',
        "tags": '["a","b"]',
        "created": "5000",
        "updated": "5001",
        "events": "2",
    }

    fold_all([lg.finished(exit_code=3)], state)
    assert take_changes(state).meta == {"state": "crashed", "exit_code": "3", "updated": "5002", "events": "3"}

    fold_all([lg.started(tags=["c", "a"])], state)  # resumed: tags are the union, in first-seen order
    changes = take_changes(state)
    assert changes.meta == {"state": "running", "tags": '["a","b","c"]', "updated": "5003", "events": "4"}
    assert changes.meta_del == ["exit_code"]

    fold_all([lg.finished()], state)
    assert take_changes(state).meta["state"] == "finished"


def test_meta_created_and_updated_come_from_event_timestamps_not_a_clock() -> None:
    late, early = Logger("a", ts=9_000), Logger("b", ts=1_000)

    state = fold_all([late.log({"x": 1.0}), early.log({"x": 2.0})])

    assert (state.created, state.updated) == (1_000, 9_000)


def test_meta_lists_definitions_with_hidden_and_step_metric() -> None:
    lg = Logger()
    state = fold_all([lg.define("val/*", "min", hidden=True, step_metric="epoch")])

    assert take_changes(state).meta["definitions"] == (
        '[{"hidden":true,"name":"val/*","objective":null,"step_metric":"epoch","summary":["min"]}]'
    )


def test_a_log_block_with_extras_folds_ints_strings_lists_and_tensors() -> None:
    weights = np.arange(40.0)
    block = log_block(
        [(0, 1, [(("loss",), 0.5), (("epoch",), 0), (("tag",), "a")]), (1, 2, [(("w",), weights), (("loss",), 0.25)])]
    )

    state = fold_all([batch([block])])

    assert summary(state)["loss"] == 0.25 and summary(state)["epoch"] == 0 and summary(state)["tag"] == "a"
    assert summary(state)["w"]["size"] == 40
    assert len(take_changes(state).blobs) == 1
