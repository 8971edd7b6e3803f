"""W&B's signatures (RULES.md §2, §4 rule 21): log(commit=), init(notes=, group=, job_type=, resume=, reinit=,
dir=), W&B keywords accepted and ignored with a warning. SDK offline (spool files), the fold pure, and two short
end-to-end stories through Kafka and Redis."""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_fold_records import Logger, Record, fold_all, fresh
from test_producer_unit import finish_quietly, spooled_events

import producer as mf
from consumer.fold import fold_record, state_from_bytes, state_to_bytes
from consumer.fold.views import meta_strings
from consumer.store import Store
from consumer.web.pages import run_page
from producer.spoolcheck import check_record
from schemas.codec import encode
from schemas.errors import RunNotFound, StoreUnavailable, ValidationError
from schemas.limits import Limits
from schemas.settings import Settings

from support import consume_all


@pytest.fixture
def offline(tmp_path: Path) -> Any:
    def start(**kwargs: Any) -> mf.Run:
        return mf.init(**{"spool_dir": tmp_path, "project": "unit", "mode": "offline", **kwargs})

    yield start
    for run in mf.open_runs():
        with pytest.warns(mf.SpoolWarning):
            run.finish()


def logged(run: mf.Run) -> list[tuple[int, dict[tuple[str, ...], Any]]]:
    return [(d["step"], d["values"]) for n, d in finish_quietly(run) if n == "log"]


def started_event(run: mf.Run) -> dict[str, Any]:
    (datum,) = [d for n, d in finish_quietly(run) if n == "metricfold.RunStarted"]
    return datum


# --- log(commit=) ---------------------------------------------------------------------------------------


def test_commit_false_logs_at_the_current_step_and_the_next_committing_call_joins_it(offline: Any) -> None:
    run = offline()
    run.log({"train/loss": 0.5}, commit=False)
    assert run.step == 0
    run.log({"grad": {"norm": 2.0}, "phase": "train"}, commit=False)  # the general path too
    run.log({"val/loss": 0.7})  # commits step 0
    run.log({"train/loss": 0.4}, commit=True)
    run.log({"a": 1.0}, step=5, commit=False)
    run.log({"b": 1.0})
    run.log({"c": 1.0}, commit=np.bool_(False))
    run.log({"d": 1.0}, step=9)  # a higher step closes the open one (rule 14: then 10)
    run.log({"e": 1.0})
    assert [step for step, _ in logged(run)] == [0, 0, 0, 1, 5, 5, 6, 9, 10]


def test_commit_must_be_a_bool_or_none(offline: Any) -> None:
    run = offline()
    with pytest.raises(ValidationError, match="commit must be True, False or None"):
        run.log({"a": 1.0}, commit="no")  # type: ignore[arg-type]
    run.log({"a": 1.0})
    assert [step for step, _ in logged(run)] == [0]


def test_module_level_log_takes_commit_and_warns_that_sync_is_ignored(offline: Any) -> None:
    run = offline()
    mf.log({"train/loss": 0.5}, commit=False)
    with pytest.warns(UserWarning, match=r"log\(sync=\.\.\.\) is W&B's and is ignored") as caught:
        mf.log({"val/loss": 0.7}, sync=True)
    with pytest.warns(UserWarning, match="sync"):
        run.log({"x": 1.0}, sync=False)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert [step for step, _ in logged(run)] == [0, 0, 1]


# --- init(notes=, group=, job_type=) --------------------------------------------------------------------


def test_notes_group_and_job_type_travel_in_run_started(offline: Any) -> None:
    run = offline(notes="baseline\nwith\tlonger lr", group="sweep-7", job_type="train")
    assert (run.notes, run.group, run.job_type) == ("baseline\nwith\tlonger lr", "sweep-7", "train")
    datum = started_event(run)
    assert (datum["notes"], datum["group"], datum["job_type"]) == ("baseline\nwith\tlonger lr", "sweep-7", "train")


def test_without_notes_group_and_job_type_run_started_carries_nulls(offline: Any) -> None:
    datum = started_event(offline(group=""))  # "" is "not given"
    assert (datum["notes"], datum["group"], datum["job_type"]) == (None, None, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"notes": 3}, "notes must be a str"),
        ({"notes": "x" * 65_537}, "max_string_length"),
        ({"notes": "red \x1b[31m"}, "U\\+001B"),
        ({"group": "a\nb"}, "U\\+000A"),
        ({"group": "g" * 257}, "group must be a str of at most max_key_length"),
        ({"job_type": ["train"]}, "job_type must be a str"),
        ({"job_type": "\u202eevil"}, "U\\+202E"),
    ],
)
def test_bad_notes_group_or_job_type_are_refused_before_anything_is_sent(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        mf.init(project="unit", mode="offline", spool_dir=tmp_path, **options)
    assert mf.open_runs() == [] and not list(tmp_path.iterdir())


# --- init's other W&B keywords --------------------------------------------------------------------------


def test_wandb_keywords_warn_that_they_are_ignored_and_unknown_ones_are_a_type_error(offline: Any) -> None:
    with pytest.warns(UserWarning) as caught:
        offline(save_code=True, anonymous="allow", sync_tensorboard=True, settings={"_disable_stats": True},
                monitor_gym=None)
    messages = sorted(str(w.message) for w in caught)
    assert messages == [
        "init(anonymous=...) is W&B's and is ignored by metricfold",
        "init(save_code=...) is W&B's and is ignored by metricfold",
        "init(settings=...) is W&B's and is ignored by metricfold",
        "init(sync_tensorboard=...) is W&B's and is ignored by metricfold",
    ]  # monitor_gym=None: nothing to ignore
    assert {w.filename for w in caught} == {__file__}
    with pytest.raises(TypeError, match="unexpected keyword argument 'sav_code'"):
        mf.init(project="unit", mode="offline", sav_code=True)


def test_config_include_and_exclude_keys_filter_the_config(offline: Any) -> None:
    assert offline(config={"lr": 0.1, "token": "s3cret"}, config_exclude_keys=["token"]).config == {"lr": 0.1}
    assert offline(config={"lr": 0.1, "bs": 8}, config_include_keys=["bs"]).config == {"bs": 8}
    with pytest.raises(ValidationError, match="cannot both"):
        offline(config={"lr": 0.1}, config_include_keys=["lr"], config_exclude_keys=["bs"])


def test_dir_is_the_spool_directory_and_must_agree_with_spool_dir(tmp_path: Path) -> None:
    run = mf.init(project="unit", mode="offline", dir=tmp_path / "w", spool_dir=tmp_path / "w" / ".." / "w")
    run.log({"a": 1.0})
    with pytest.warns(mf.SpoolWarning):
        run.finish()
    assert run.report is not None and run.report.spool_path is not None
    assert run.report.spool_path.parent == tmp_path / "w"
    with pytest.raises(ValidationError, match="disagree"):
        mf.init(project="unit", mode="offline", dir=tmp_path / "a", spool_dir=tmp_path / "b")


def test_reinit_return_previous_finish_previous_and_the_default(offline: Any) -> None:
    first = offline()
    assert offline(reinit="return_previous") is first
    second = offline(reinit=False)  # default: a new run beside the open one
    assert mf.open_runs() == [first, second]
    with pytest.warns(mf.SpoolWarning):
        third = offline(reinit=True)  # finish_previous
    assert first.finished and second.finished and mf.open_runs() == [third]
    with pytest.raises(ValidationError, match="reinit must be"):
        offline(reinit="sometimes")


def test_resume_values_are_checked_and_must_needs_an_id(offline: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METRICFOLD_RUN_ID", raising=False)
    with pytest.raises(ValidationError, match="resume must be"):
        offline(resume="maybe")
    with pytest.raises(ValidationError, match="needs the id"):
        offline(resume="must")
    offline(resume="allow", id="r1")
    offline(resume=True, id="r1")
    offline(resume="never")  # a fresh id: nothing to read


def test_resume_must_without_redis_is_a_clear_error(offline: Any) -> None:
    nowhere = Settings(redis="redis://127.0.0.1:9/0")
    with pytest.raises(StoreUnavailable, match=r"init\(resume='must'\) must read run team/unit/r1 from Redis"):
        offline(entity="team", id="r1", resume="must", settings=nowhere)
    assert mf.open_runs() == []


def test_mode_disabled_checks_every_call_but_sends_reads_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default spool directory would be ./metricfold-spool
    nowhere = Settings(kafka="127.0.0.1:9", redis="redis://127.0.0.1:9/0")  # any contact would fail or spool
    run = mf.init(project="unit", id="r1", mode="disabled", resume="must", settings=nowhere, dir=tmp_path / "spool")
    run.define_metric("loss", summary="min")
    for step in range(3):
        run.log({"loss": 1.0 / (step + 1), "img": np.zeros((2, 2))})
    run.summary["best"] = 0.5
    with pytest.raises(ValidationError, match="define_metric name must be"):  # the checks are the online ones
        run.define_metric(float("nan"))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        run.log({"": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no SpoolWarning: nothing was spooled
        run.finish()
    assert run.report is not None
    assert (run.report.records_sent, run.report.records_spooled, run.report.reason) == (0, 0, "disabled mode")
    assert list(tmp_path.iterdir()) == [] and mf.open_runs() == []
    with pytest.raises(ValidationError, match="'online', 'offline' or 'disabled'"):
        mf.init(project="unit", mode="dryrun")


def test_finish_takes_wandbs_exit_code_none_and_warns_that_quiet_is_ignored(offline: Any) -> None:
    run = offline()
    with pytest.warns(UserWarning) as caught:
        events = finish_quietly_with(run, exit_code=None, quiet=True)
    assert "finish(quiet=...) is W&B's and is ignored by metricfold" in [str(w.message) for w in caught]
    assert [d["exit_code"] for n, d in events if n == "metricfold.RunFinished"] == [0]
    mf.init(project="unit", mode="disabled")
    with pytest.warns(UserWarning, match=r"finish\(quiet=...\)"):
        mf.finish(quiet=False)  # the module-level twin, on the current run
    assert mf.open_runs() == []


def finish_quietly_with(run: mf.Run, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    run.finish(**kwargs)
    return spooled_events(run)


def started(lg: Logger, **fields: Any) -> Record:
    """A RunStarted of *lg*'s producer with these fields (notes, group, job_type, name)."""
    name, datum = lg.started()
    return name, {**datum, **fields}


# --- sync's check and the fold --------------------------------------------------------------------------


def test_sync_checks_notes_group_and_job_type_as_the_sdk() -> None:
    envelope = {"entity": "e", "project": "p", "run_id": "r", "producer_id": str(uuid.uuid4()), "seq": 0, "ts_ms": 1}
    fields = {"name": None, "config_json": "{}", "tags": [], "notes": "n", "group": "g", "job_type": "train"}
    assert check_record("e/p/r", encode("metricfold.RunStarted", {**envelope, **fields}), Limits()) == 1
    bad = encode("metricfold.RunStarted", {**envelope, **fields, "group": "a\x1bb"})
    with pytest.raises(ValidationError, match="U\\+001B"):
        check_record("e/p/r", bad, Limits())


def test_fold_keeps_notes_group_and_job_type_in_the_meta_last_given_wins() -> None:
    lg, rank1 = Logger(), Logger(producer="rank1")
    state = fold_all([started(lg, name="n"), lg.log({"loss": 1.0})])
    before = state_to_bytes(state)
    meta = meta_strings(state)
    assert not {"notes", "group", "job_type"} & meta.keys()
    assert b"notes" not in before and b"job_type" not in before  # runs without them keep their bytes

    fold_all([started(rank1, notes="first", group="g1", job_type="train")], state)
    fold_all([started(lg, group="g2", notes=None)], state)  # a RunStarted without notes/job_type changes neither
    meta = meta_strings(state)
    assert (meta["notes"], meta["group"], meta["job_type"]) == ("first", "g2", "train")
    again = state_from_bytes(state_to_bytes(state))
    assert (again.notes, again.group, again.job_type) == ("first", "g2", "train")
    assert state_to_bytes(state_from_bytes(before)) == before


def test_fold_refuses_a_run_started_with_a_bad_group_and_folds_unprintable_notes() -> None:
    lg, state = Logger(), fresh()
    (refused,) = fold_record(state, started(lg, group="g" * 300))
    assert "group must be a str of at most max_key_length" in refused.reason
    assert fold_record(state, started(lg, notes="a\x1bb")) == []
    assert meta_strings(state)["notes"] == "a\x1bb"  # readers escape what they show
    assert "group" not in meta_strings(state)


def test_run_page_shows_notes_line_by_line_and_group_and_job_type_escaped() -> None:
    doc = {
        "entity": "team", "project": "wb", "run_id": "r1", "name": "", "state": "running", "exit_code": None,
        "events": 3, "created": 0, "updated": 0, "tags": [], "generation": "g1", "summary": {}, "flat": {},
        "tensors": {}, "config": {}, "definitions": [], "notes": "line one\n<b>two</b>", "group": "g\u202e",
        "job_type": "train",
    }
    page = run_page(doc, "/fragment")
    assert '<p class="notes" id="run-notes"><bdi>line one</bdi><br><bdi>&lt;b&gt;two&lt;/b&gt;</bdi></p>' in page
    assert '<dt>group</dt><dd id="run-group"><bdi>g\\u202e</bdi></dd>' in page
    assert '<dt>job type</dt><dd id="run-job_type"><bdi>train</bdi></dd>' in page
    plain = run_page({**doc, "notes": None, "group": None, "job_type": None}, "/fragment")
    assert "run-notes" not in plain and "run-group" not in plain and "job type" not in plain


# --- end to end: Kafka, the consumer, Redis -------------------------------------------------------------


@pytest.mark.integration
def test_meta_and_commit_false_reach_redis_and_resume_reads_them(settings: Settings) -> None:
    with mf.init(entity="team", project="wb", id="r1", settings=settings, notes="lr sweep", group="g",
                 job_type="train") as run:
        run.log({"train/loss": 0.5}, commit=False)
        run.log({"val/loss": 0.7})  # both at step 0
        run.log({"val/loss": 0.6})  # step 1
        run.define_metric("*/loss", summary="best", objective="minimize")
    consume_all(settings)
    with Store(settings) as store:
        stored = store.read_run("team/wb/r1")
    assert {k: stored["meta"][k] for k in ("notes", "group", "job_type")} == {
        "notes": "lr sweep", "group": "g", "job_type": "train"
    }
    assert stored["summary"]["train/loss"] == {"best": 0.5, "best_step": 0}
    assert stored["summary"]["val/loss"] == {"best": 0.6, "best_step": 1}

    with pytest.raises(ValidationError, match="resume='never' but run team/wb/r1 exists"):
        mf.init(entity="team", project="wb", id="r1", settings=settings, resume="never")
    with pytest.raises(RunNotFound, match="resume='must' but run team/wb/r2 does not exist"):
        mf.init(entity="team", project="wb", id="r2", settings=settings, resume="must")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = mf.init(entity="team", project="wb", id="r1", settings=settings, resume="must", job_type="eval")
    resumed.finish()
    consume_all(settings)
    with Store(settings) as store:
        assert store.read_run("team/wb/r1")["meta"]["job_type"] == "eval"
