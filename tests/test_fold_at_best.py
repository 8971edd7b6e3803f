"""RULES.md §4 rule 20: metrics at the best step (``define_metric(..., summary="best", at_best=[...])``), in the
fold (pure, no I/O) and in the one check the SDK and the fold share (schemas.summary_options.check_at_best)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from test_fold_records import Logger, Record, batch, block_of_logs, fold_all, fresh

from consumer.fold import RunState, flat_view, fold_record, state_from_bytes, state_to_bytes, summary, take_changes
from producer.definitions import define_metric_datum
from schemas.errors import LimitExceeded, ValidationError
from schemas.limits import Limits
from schemas.summary_options import check_at_best


def at_best(lg: Logger, name: str, names: Sequence[str], objective: str = "maximize", summary: str = "best",
            overwrite: bool = False) -> Record:
    """A DefineMetric with at_best, numbered by *lg*."""
    record = lg.define(name, summary, objective=objective, overwrite=overwrite)
    record[1]["at_best"] = list(names)
    return record


def best_of(state: RunState, key: str = "val/acc") -> Any:
    return summary(state)[key]


def test_the_values_of_the_same_log_call_are_taken_and_absent_keys_are_absent() -> None:
    lg = Logger()
    state = fold_all([
        at_best(lg, "val/acc", ["val/loss", "val/f1"]),
        lg.log({"val/acc": 0.5, "val/loss": 1.0, "val/f1": 0.3, "train/loss": 2.0}, step=0),
        lg.log({"val/acc": 0.7, "val/loss": 0.8}, step=1),
        lg.log({"val/acc": 0.6, "val/loss": 0.1, "val/f1": 0.9}, step=2),
    ])
    assert best_of(state) == {"best": 0.7, "best_step": 1, "at_best": {"val/loss": 0.8}}
    flat = flat_view(state)
    assert flat["val/acc.at_best.val/loss"] == 0.8 and "val/acc.at_best.val/f1" not in flat


def test_other_calls_at_the_same_step_count_before_and_after_the_best_and_the_last_value_wins() -> None:
    lg = Logger()
    state = fold_all([
        at_best(lg, "val/acc", ["val/*"]),
        lg.log({"val/loss": 0.4}, step=3),  # commit=False pattern: the same step over several calls
        lg.log({"val/acc": 0.9}, step=3),
        lg.log({"val/f1": 0.5}, step=3),
        lg.log({"val/loss": 0.35}, step=3),
        lg.log({"val/f1": 0.1, "val/acc": 0.2}, step=4),  # another step: not taken
    ])
    assert best_of(state)["at_best"] == {"val/acc": 0.9, "val/f1": 0.5, "val/loss": 0.35}


def test_a_new_best_replaces_the_whole_snapshot_and_a_tie_keeps_the_first() -> None:
    lg = Logger()
    state = fold_all([
        at_best(lg, "val/acc", ["val/loss", "val/f1"]),
        lg.log({"val/acc": 0.5, "val/loss": 1.0, "val/f1": 0.3}, step=0),
        lg.log({"val/acc": 0.8, "val/loss": 0.7}, step=1),
        lg.log({"val/acc": 0.8, "val/loss": 0.1, "val/f1": 0.9}, step=2),  # a tie: not a new best
    ])
    assert best_of(state) == {"best": 0.8, "best_step": 1, "at_best": {"val/loss": 0.7}}


def test_minimize_ints_and_other_options_beside() -> None:
    lg = Logger()
    state = fold_all([
        at_best(lg, "loss", ["acc"], objective="minimize", summary="best,last"),
        lg.log({"loss": 3, "acc": 0.1}, step=0),
        lg.log({"loss": 1, "acc": 0.6}, step=1),
        lg.log({"loss": 2, "acc": 0.7}, step=2),
    ])
    assert summary(state)["loss"] == {"best": 1, "best_step": 1, "last": 2, "at_best": {"acc": 0.6}}


def test_other_producers_values_are_never_taken() -> None:
    rank0, rank1 = Logger("p1"), Logger("p2")
    state = fold_all([
        at_best(rank0, "val/acc", ["val/loss"]),
        rank1.log({"val/loss": 5.0}, step=7),
        rank0.log({"val/acc": 0.9}, step=7),
        rank1.log({"val/loss": 6.0}, step=7),
        rank0.log({"val/loss": 0.2}, step=8),
    ])
    assert best_of(state) == {"best": 0.9, "best_step": 7, "at_best": {}}
    state = fold_all([rank0.log({"val/loss": 0.3}, step=7)], state)  # its own producer, back at step 7: not the same stretch
    assert best_of(state)["at_best"] == {}


def test_it_applies_from_the_definition_on() -> None:
    lg = Logger()
    state = fold_all([
        lg.log({"val/acc": 0.9, "val/loss": 0.5}, step=0),
        at_best(lg, "val/acc", ["val/loss"]),
    ])
    assert best_of(state) == {"best": 0.9, "best_step": 0, "at_best": {}}  # the best came before the definition
    state = fold_all([lg.log({"val/loss": 0.4, "epoch": 1}, step=1), at_best(lg, "val/f1", ["val/loss", "epoch"])], state)
    state = fold_all([lg.log({"val/f1": 0.3}, step=1), lg.log({"val/acc": 0.95, "val/loss": 0.3}, step=2)], state)
    # epoch at step 1 came before any definition naming it; val/loss was kept, an earlier definition names it
    assert best_of(state, "val/f1")["at_best"] == {"val/loss": 0.4}
    assert best_of(state)["at_best"] == {"val/loss": 0.3}


def test_globs_tensors_and_nested_keys_in_the_flat_view() -> None:
    lg = Logger()
    weights = np.arange(40, dtype=np.float64)
    state = fold_all([
        at_best(lg, "acc", ["*"]),
        lg.log({"acc": 0.5, "_t": 3.0, "grad": {"norm": 1.5}, "lr.base": 0.1, "w": weights, "tag": "x"}, step=2),
    ])
    shown = summary(state)["acc"]["at_best"]
    assert set(shown) == {"acc", "grad.norm", "lr\\.base", "w", "tag"}  # a bare * never matches _t
    assert shown["w"]["_type"] == "numpy.ndarray" and shown["w"]["max"] == 39.0
    flat = flat_view(state)
    assert flat["acc.at_best.grad\\.norm"] == 1.5
    assert flat["acc.at_best.lr\\\\\\.base"] == 0.1  # the key segment "lr\\.base", escaped again
    assert flat["acc.at_best.w.mean"] == 19.5


def test_nan_and_non_numbers_never_become_the_best() -> None:
    lg = Logger()
    state = fold_all([
        at_best(lg, "a", ["b"]),
        lg.log({"a": math.nan, "b": 1.0}, step=0),
        lg.log({"a": True, "b": 2.0}, step=1),
        lg.log({"a": 0.5, "b": 3.0}, step=2),
    ])
    assert summary(state)["a"] == {"best": 0.5, "best_step": 2, "at_best": {"b": 3.0}}


def test_redefinitions_unite_replace_and_forget() -> None:
    lg = Logger()
    state = fold_all([at_best(lg, "acc", ["loss"]), at_best(lg, "acc", ["f1", "loss"])])
    assert state.definitions[-1].at_best == ("loss", "f1")
    state = fold_all([lg.define("acc", "min")], state)  # options only: at_best stays
    assert state.definitions[-1].at_best == ("loss", "f1") and state.definitions[-1].options == ("best", "min")
    state = fold_all([lg.log({"acc": 0.9, "loss": 0.1}, step=0)], state)
    assert b'"at_best"' in state_to_bytes(state)
    state = fold_all([lg.define("acc", "best", objective="maximize", overwrite=True)], state)
    assert state.definitions[-1].at_best == () and summary(state)["acc"] == {"best": 0.9, "best_step": 0}
    assert b"at_best" not in state_to_bytes(state)  # no definition uses it: nothing kept


def test_a_leaf_replaced_under_rule_2_loses_its_snapshot() -> None:
    lg = Logger()
    state = fold_all([at_best(lg, "a.*", ["x"]), lg.log({"a": {"b": 1.0}, "x": 2.0}, step=0)])
    assert summary(state)["a"] == {"b": {"best": 1.0, "best_step": 0, "at_best": {"x": 2.0}}}
    state = fold_all([lg.log({"a": 5.0}, step=1)], state)
    assert "at_best" not in json.loads(state_to_bytes(state))  # the snapshot went with its leaf
    state = fold_all([lg.log({"a": {"b": 0.5}}, step=2)], state)
    assert summary(state)["a"] == {"b": {"best": 0.5, "best_step": 2, "at_best": {}}}


def test_unused_states_keep_their_bytes() -> None:
    lg = Logger()
    state = fold_all([lg.define("acc", "best", objective="maximize"), lg.log({"acc": 0.5, "loss": 1.0}, step=0)])
    document = json.loads(state_to_bytes(state))
    assert "at_best" not in document and "at_best" not in document["definitions"][0]


def _stream() -> tuple[list[Record], list[Record]]:
    rank0, rank1 = Logger("p1"), Logger("p2")
    setup = [at_best(rank0, "val/acc", ["val/*", "grad.*"])]
    logs = [
        rank0.log({"val/acc": 0.1 * (i % 4), "val/loss": 1.0 / (i + 1), "grad": {"norm": float(i)}}, step=i // 2)
        for i in range(12)
    ]
    others = [rank1.log({"val/loss": 9.0, "val/acc": 0.05}, step=i) for i in range(6)]
    return setup, logs + others


def test_replay_and_any_batching_give_the_same_bytes() -> None:
    setup, logs = _stream()
    reference = fold_all(setup + logs)
    assert best_of(reference) == {"best": 0.30000000000000004, "best_step": 1, "at_best": {
        "grad.norm": 3.0, "val/acc": 0.30000000000000004, "val/loss": 0.25}}

    blocks = fold_all([*setup, batch([block_of_logs(logs[:5])]), batch([block_of_logs(logs[5:12])]),
                       batch([block_of_logs(logs[12:])], producer="p2")])
    assert state_to_bytes(blocks) == state_to_bytes(reference)

    state = fold_all(setup)
    for record in logs:  # reloaded after every event: the shared stretch survives
        state = state_from_bytes(state_to_bytes(fold_all([record], state)))
    assert state_to_bytes(state) == state_to_bytes(reference)


def test_a_later_value_at_the_best_step_changes_the_best_keys_view_also_after_a_reload() -> None:
    lg = Logger()
    state = fold_all([at_best(lg, "val/acc", ["val/loss"]), lg.log({"val/acc": 0.9}, step=3)])
    take_changes(state)
    state = state_from_bytes(state_to_bytes(state))
    fold_all([lg.log({"val/loss": 0.2}, step=3)], state)
    changes = take_changes(state)
    assert changes.numeric_set["val/acc.at_best.val/loss"] == 0.2
    assert json.loads(changes.summary_set["val/acc"])["at_best"] == {"val/loss": 0.2}


def test_the_fold_refuses_at_best_without_best() -> None:
    lg = Logger()
    state = fresh()
    refused = fold_record(state, at_best(lg, "acc", ["loss"], summary="max"))
    assert len(refused) == 1 and "needs summary with 'best'" in refused[0].reason
    refused = fold_record(state, batch([at_best(lg, "acc", [""], summary="best")]))
    assert len(refused) == 1 and "non-empty" in refused[0].reason
    assert state.definitions == []


def _datum(**options: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"step_metric": None, "hidden": False, "summary": "best", "objective": "maximize",
                            "goal": None, "overwrite": False, "limits": Limits()}
    return define_metric_datum("val/acc", **{**base, **options})


def test_the_sdk_checks_the_argument_with_clear_errors() -> None:
    assert _datum(at_best="val/loss")["at_best"] == ["val/loss"]
    assert _datum(at_best=("val/*", "f1", "val/*"))["at_best"] == ["val/*", "f1"]
    assert _datum()["at_best"] == []
    with pytest.raises(ValidationError, match="needs summary with 'best'"):
        _datum(summary="max", objective=None, at_best=["val/loss"])
    with pytest.raises(ValidationError, match="needs summary with 'best'"):
        _datum(summary=None, objective=None, at_best="val/loss")
    with pytest.raises(ValidationError, match="takes a name or a list of names"):
        _datum(at_best={"val/loss"})
    with pytest.raises(ValidationError, match="non-empty str"):
        _datum(at_best=["ok", 3])
    with pytest.raises(ValidationError, match="control or text-direction"):
        _datum(at_best=["bad\x1b[31m"])
    with pytest.raises(LimitExceeded):
        check_at_best("acc", ["k"] * 3, ["best"], Limits(max_values_per_event=2))
    assert check_at_best("acc", ["bad\x1b"], ["best", "none"], Limits(), printable=False) == ("bad\x1b",)


def test_the_example_of_rules_md() -> None:
    a, b = Logger("A"), Logger("B")
    state = fold_all([
        at_best(a, "val/acc", ["val/*"]),
        a.log({"val/loss": 0.4}, step=3),
        b.log({"val/loss": 9.0}, step=3),
        a.log({"val/acc": 0.9}, step=3),
        a.log({"val/f1": 0.5}, step=3),
        a.log({"val/acc": 0.2}, step=4),
    ])
    assert best_of(state) == {"best": 0.9, "best_step": 3, "at_best": {"val/acc": 0.9, "val/f1": 0.5, "val/loss": 0.4}}
