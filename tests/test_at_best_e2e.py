"""RULES.md §4 rule 20 end to end: the SDK's define_metric(..., at_best=[...]) through the real broker, the consumer's
fold into Redis, the runs table sorted by an at_best path, and a replay that gives the same digest. The rule itself
is tested in microseconds in tests/test_fold_at_best.py."""

from __future__ import annotations

import io

import pytest

import producer as mf
from consumer.digest import digest_generation
from consumer.replay import replay
from consumer.store import Store
from schemas.errors import ValidationError
from schemas.settings import Settings

from support import consume_all

pytestmark = pytest.mark.integration


def test_at_best_takes_its_producers_values_at_the_best_step_and_replays_the_same(settings: Settings) -> None:
    def start(run_id: str) -> mf.Run:
        return mf.init(entity="team", project="vision", run_id=run_id, settings=settings)

    with start("r1") as solo, start("r2") as rank0, start("r2") as rank1:  # r2 has two producers
        with pytest.raises(ValidationError, match="needs summary with 'best'"):
            solo.define_metric("val/acc", summary="max", at_best="val/loss")
        for run in (solo, rank0):
            run.define_metric("val/acc", summary="best", objective="maximize", at_best=["val/loss", "val/f*"])
        solo.log({"val/acc": 0.5, "val/loss": 1.0}, step=0)
        solo.log({"val/acc": 0.8, "val/loss": 0.7, "val/f1": 0.3}, step=1)
        solo.log({"val/acc": 0.95, "val/loss": 0.05}, step=3)  # a new best replaces the whole snapshot
        solo.log({"val/acc": 0.9, "val/loss": 0.01, "val/f1": 0.9}, step=4)

        rank0.log({"val/acc": 0.5, "val/loss": 1.0, "val/f1": 0.2}, step=0)
        rank0.log({"val/loss": 0.6}, step=1)  # at the best step, in an earlier call
        rank1.log({"val/loss": 9.0, "val/f1": 9.0}, step=1)  # another producer at the same step: never taken
        rank0.log({"val/acc": 0.8}, step=1)
        rank1.log({"val/acc": 0.1, "val/loss": 8.0}, step=1)
        rank0.log({"val/f1": 0.4}, step=1)  # at the best step, in a later call
        rank0.log({"val/acc": 0.7, "val/loss": 0.1, "val/f1": 0.9}, step=2)
    consume_all(settings)

    with Store(settings) as store:
        solo_run, ranks_run = store.read_run("team/vision/r1"), store.read_run("team/vision/r2")
        page = store.read_table("team/vision", sort="val/acc.at_best.val/loss", descending=False,
                                columns=["val/acc.at_best.val/loss"])
        live = digest_generation(store)
    assert solo_run["summary"]["val/acc"] == {"best": 0.95, "best_step": 3, "at_best": {"val/loss": 0.05}}
    assert "val/acc.at_best.val/f1" not in solo_run["flat"]
    assert ranks_run["summary"]["val/acc"] == {"best": 0.8, "best_step": 1, "at_best": {"val/f1": 0.4, "val/loss": 0.6}}
    assert ranks_run["flat"]["val/acc.at_best.val/loss"] == 0.6
    assert [(row["run_id"], row["values"]) for row in page.rows] == [  # a flat at_best path sorts like any number
        ("r1", {"val/acc.at_best.val/loss": 0.05}),
        ("r2", {"val/acc.at_best.val/loss": 0.6}),
    ]

    report = replay(settings, generation="again", progress=True, out=io.StringIO())
    assert report.digest == live
