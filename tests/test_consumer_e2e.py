"""End to end through the real broker and Redis: the SDK logs, the consumer folds, Redis shows the rules of RULES.md §4."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import producer as mf
from consumer.runner import Consumer
from consumer.store import Store
from schemas.errors import ConfigError, RunNotFound
from schemas.settings import Settings
from schemas.tensors import from_npy

from support import consume_all

pytestmark = pytest.mark.integration


def read_run(settings: Settings, path: str) -> dict[str, Any]:
    with Store(settings) as store:
        return store.read_run(path)


def start(settings: Settings, run_id: str = "r1", **kwargs: Any) -> mf.Run:
    return mf.init(entity="team", project="vision", run_id=run_id, settings=settings, **kwargs)


REDIS_MODES = ("standalone", "cluster")  # every test here runs on both (tests/conftest.py)


def test_keys_nested_dicts_split_into_leaves_and_slashes_and_dots_stay_literal(settings: Settings) -> None:
    with start(settings) as run:
        run.log({"grad": {"norm": 1.5, "max": 3.0}, "val/loss": 0.5, "lr.peak": 0.1})
        run.log({"grad": {"norm": 1.0}})

    consume_all(settings)
    stored = read_run(settings, "team/vision/r1")

    assert stored["summary"]["grad"] == {"norm": 1.0, "max": 3.0}
    assert stored["summary"]["val/loss"] == 0.5
    assert stored["flat"]["grad.norm"] == 1.0
    assert stored["flat"]["lr\\.peak"] == 0.1


def test_aggregates_min_max_mean_best_with_step_and_nan_excluded(settings: Settings) -> None:
    values = [0.9, 0.4, float("nan"), 0.7, 0.2, 0.6]
    with start(settings) as run:
        run.define_metric("loss", summary="min,max,mean,last")
        run.define_metric("acc", summary="best", objective="maximize")
        for step, value in enumerate(values):
            run.log({"loss": value, "acc": 1 - value}, step=step * 10)

    consume_all(settings)
    summary = read_run(settings, "team/vision/r1")["summary"]

    finite = [v for v in values if v == v]
    assert summary["loss"]["min"] == min(finite)
    assert summary["loss"]["max"] == max(finite)
    assert summary["loss"]["mean"] == pytest.approx(sum(finite) / len(finite))
    assert summary["loss"]["last"] == 0.6
    assert summary["acc"] == {"best": 1 - 0.2, "best_step": 40}


def test_late_define_metric_covers_values_logged_before_it(settings: Settings) -> None:
    with start(settings) as run:
        for value in (3.0, 1.0, 2.0):
            run.log({"loss": value})
        run.define_metric("loss", summary="min")

    consume_all(settings)

    assert read_run(settings, "team/vision/r1")["summary"]["loss"] == {"min": 1.0}


def test_glob_definition_applies_anywhere_in_the_name(settings: Settings) -> None:
    with start(settings) as run:
        run.define_metric("*/loss", summary="min")
        run.log({"train/loss": 2.0, "val/loss": 3.0})
        run.log({"train/loss": 1.0, "val/loss": 4.0})

    consume_all(settings)
    summary = read_run(settings, "team/vision/r1")["summary"]

    assert summary["train/loss"] == {"min": 1.0}
    assert summary["val/loss"] == {"min": 3.0}


def test_override_wins_over_later_logs_and_removing_it_hides_the_key_until_logged(settings: Settings) -> None:
    with start(settings) as run:
        run.log({"acc": 0.5})
        run.summary["acc"] = 0.99
        run.log({"acc": 0.6})
        run.summary["note"] = {"kind": "opaque", "n": 1}

    consume_all(settings)
    summary = read_run(settings, "team/vision/r1")["summary"]
    assert summary["acc"] == 0.99
    assert summary["note"] == {"kind": "opaque", "n": 1}

    with start(settings) as run:
        del run.summary["acc"]
    consume_all(settings)
    assert "acc" not in read_run(settings, "team/vision/r1")["summary"]

    with start(settings) as run:
        run.log({"acc": 0.7})
    consume_all(settings)
    assert read_run(settings, "team/vision/r1")["summary"]["acc"] == 0.7


def test_tensor_summary_has_stats_and_the_full_array_comes_back_exactly(settings: Settings) -> None:
    weights = np.random.default_rng(7).normal(size=(40, 25)).astype(np.float32)
    with start(settings) as run:
        run.log({"small": np.array([1.0, 2.0, 3.0]), "one": np.array([5.0])})
        run.summary["weights"] = weights

    consume_all(settings)
    stored = read_run(settings, "team/vision/r1")

    stats = stored["summary"]["weights"]
    assert stats["_type"] == "numpy.ndarray"
    assert stats["shape"] == [40, 25]
    assert stats["dtype"] == "float32"
    assert stats["min"] == pytest.approx(float(weights.min()))
    assert stored["summary"]["small"] == [1.0, 2.0, 3.0]
    assert stored["summary"]["one"] == 5.0
    with Store(settings) as store:
        blob = store.read_blob("team/vision/r1", stored["tensors"]["weights"])
    assert blob is not None
    back = from_npy(blob)
    assert back.dtype == weights.dtype and np.array_equal(back, weights)


def test_run_meta_shows_state_config_tags_and_event_count(settings: Settings) -> None:
    run = start(settings, name="baseline", config={"lr": 0.1}, tags=["a", "b"])
    run.log({"x": 1})
    run.finish(exit_code=3)

    consume_all(settings)
    meta = read_run(settings, "team/vision/r1")["meta"]

    assert meta["name"] == "baseline"
    assert meta["state"] == "crashed"
    assert "0.1" in meta["config"]
    assert "a" in meta["tags"] and "b" in meta["tags"]
    assert int(meta["events"]) == 3  # started, log, finished


def test_two_ranks_writing_one_run_are_both_folded(settings: Settings) -> None:
    rank0 = start(settings)
    rank1 = start(settings)
    rank0.log({"loss": 2.0}, step=0)
    rank1.log({"loss": 1.0}, step=0)
    rank0.define_metric("loss", summary="min,max")
    rank0.finish()
    rank1.finish()

    consume_all(settings)

    assert read_run(settings, "team/vision/r1")["summary"]["loss"] == {"min": 1.0, "max": 2.0}


def test_consuming_again_changes_nothing(settings: Settings) -> None:
    with start(settings) as run:
        for i in range(50):
            run.log({"loss": 1 / (i + 1)})
    consume_all(settings)
    first = read_run(settings, "team/vision/r1")

    with Store(settings) as store:  # forget the checkpoint: the consumer re-reads the whole topic
        store.client.delete(store.keys.checkpoint(settings.topic))
    again = consume_all(settings)

    assert again.events_applied == 0
    assert read_run(settings, "team/vision/r1") == first


def test_project_sorted_sets_order_runs_by_a_summary_path(settings: Settings) -> None:
    for run_id, best in (("a", 0.5), ("b", 0.9), ("c", 0.7)):
        with start(settings, run_id=run_id) as run:
            run.define_metric("acc", summary="max")
            run.log({"acc": best})
            run.log({"acc": best - 0.1})

    consume_all(settings)
    with Store(settings) as store:
        ids, total = store.list_runs("team/vision", sort="acc.max", descending=True, limit=10)
        paths = store.project_paths("team/vision")

    assert ids == ["b", "c", "a"]
    assert total == 3
    assert "acc.max" in paths


def test_sort_scores_are_the_flat_values_as_doubles_and_go_when_a_value_stops_being_a_number(settings: Settings) -> None:
    numbers: dict[str, Any] = {
        "int": 3, "big": 2**63 - 1, "odd": 2**53 + 1, "neg": -7, "tiny": 5e-324, "small": 1e-05, "huge": 1.7e308,
        "negzero": -0.0, "third": 1 / 3, "later_text": 0.25, "later_nan": 0.5,
    }
    with start(settings) as run:
        run.log(numbers)
    consume_all(settings)

    def scores() -> dict[str, float | None]:
        with Store(settings) as store:
            return {path: store.client.zscore(store.keys.by_path("team/vision", path), "r1") for path in numbers}

    first = scores()
    assert first == {path: float(value) for path, value in numbers.items()}
    assert first["odd"] == float(2**53 + 1) and first["big"] == float(2**63 - 1)

    with start(settings) as run:  # the same run again
        run.log({"later_text": "done", "later_nan": float("nan")})
    consume_all(settings)

    after = scores()
    assert after["later_text"] is None and after["later_nan"] is None
    assert {k: v for k, v in after.items() if not k.startswith("later")} == {
        k: v for k, v in first.items() if not k.startswith("later")
    }


def test_read_api_gives_summary_meta_and_the_exact_tensor_after_the_run(settings: Settings) -> None:
    weights = np.random.default_rng(3).random(1000)
    with start(settings, name="baseline", config={"lr": 0.01}, tags=["x"]) as run:
        run.define_metric("loss", summary="min")
        run.log({"loss": 0.3})
        run.log({"loss": 0.1})
        run.summary["weights"] = weights
    consume_all(settings)

    api = mf.Api(settings)
    r = api.run("team/vision/r1")

    assert r.summary["loss"] == {"min": 0.1}
    assert np.array_equal(r.summary.get_tensor("weights"), weights)
    assert (r.state, r.name, r.config, r.tags) == ("finished", "baseline", {"lr": 0.01}, ["x"])
    assert r.flat["loss.min"] == 0.1
    r.close()


def test_read_api_edit_after_the_run_publishes_an_override_that_the_consumer_folds(settings: Settings) -> None:
    with start(settings) as run:
        run.log({"acc": 0.5})
    consume_all(settings)

    with mf.Api(settings).run("team/vision/r1") as r:
        r.summary["tensor"] = np.arange(100.0)
        r.summary.update()
    consume_all(settings)

    with mf.Api(settings).run("team/vision/r1") as r:
        assert r.summary["acc"] == 0.5
        assert np.array_equal(r.summary.get_tensor("tensor"), np.arange(100.0))


def test_api_runs_sorts_by_a_summary_path_and_an_unknown_run_is_a_clear_error(settings: Settings) -> None:
    for run_id, acc in (("a", 0.3), ("b", 0.8), ("c", 0.5)):
        with start(settings, run_id=run_id) as run:
            run.define_metric("acc", summary="best", objective="maximize")
            run.log({"acc": acc})
    consume_all(settings)

    api = mf.Api(settings)
    ranked = api.runs("team/vision", order="-acc.best", limit=2)

    assert [r.id for r in ranked] == ["b", "c"]
    assert ranked[0].summary["acc"] == {"best": 0.8, "best_step": 0}
    with pytest.raises(RunNotFound, match="team/vision/nope"):
        api.run("team/vision/nope")


def test_a_generation_in_the_layout_before_project_tags_is_refused_with_the_way_out(settings: Settings) -> None:
    with Store(settings) as store:
        store.ensure_generation()
        old_checkpoint = store.keys.before_project_tags(settings.topic)[0]
        store.client.hset(old_checkpoint, "0", "12")  # what a consumer before the per-project layout left
    with pytest.raises(ConfigError, match=r"before the per-project key layout.*metricfold replay --switch"):
        Consumer(settings)
