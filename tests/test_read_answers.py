"""Honest answers of every reader (CLI, Api, web) against the real Redis filled by the real SDK and consumer:
an unknown project or sort path is an error everywhere, with the same words; a run without a name shows the
name made up from its run id everywhere.

The tests that read the folded project run twice: on the standalone Redis and on the session's Redis Cluster (the
module-scoped `folded` fixture is parametrized by mode)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_cluster import fresh_settings_in
from test_producer_unit import flatten
from web_support import served

import producer as mf
from producer.spool_file import read_spool
from schemas.codec import decode
from schemas.errors import RunNotFound, ValidationError
from schemas.names import ADJECTIVES, NOUNS, run_name
from schemas.settings import Settings

from support import consume_all, metricfold_cli

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def folded(stack: Any, request: pytest.FixtureRequest) -> Iterator[Settings]:  # conftest.Stack
    """team/vision: run "named" (name "given"; a second producer attached without a name), run "anon" (no name); on
    the standalone Redis or on the Redis Cluster."""
    with fresh_settings_in(stack, request.param, request) as made:
        with mf.init(entity="team", project="vision", run_id="named", name="given", settings=made) as run:
            run.log({"loss": 0.5})
        with mf.init(entity="team", project="vision", run_id="named", settings=made) as run:  # another rank, no name
            run.log({"loss": 0.25})
        with mf.init(entity="team", project="vision", run_id="anon", settings=made) as run:
            run.log({"loss": 0.75})
        consume_all(made)
        yield made


@pytest.fixture(scope="module")
def web(folded: Settings) -> Iterator[httpx.Client]:
    with served(folded) as client:
        yield client


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0 and done.stdout == "", (done.returncode, done.stdout)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metricfold: error: "), done.stderr
    return lines[0].removeprefix("metricfold: error: ")


def test_an_unknown_project_is_an_error_naming_it_and_the_known_ones_in_the_cli_api_and_web(
    folded: Settings, web: httpx.Client
) -> None:
    message = _error_line(metricfold_cli(folded, "runs", "nobody/nothing"))
    assert "'nobody/nothing'" in message and "team/vision" in message

    with pytest.raises(RunNotFound) as raised:
        mf.Api(folded).runs("nobody/nothing")
    reply = web.get("/api/projects/nobody/nothing/runs")

    assert str(raised.value) == message
    assert reply.status_code == 404 and reply.json()["message"] == message


def test_an_unknown_sort_path_is_an_error_naming_it_and_the_sortable_ones_in_the_cli_api_and_web(
    folded: Settings, web: httpx.Client
) -> None:
    message = _error_line(metricfold_cli(folded, "runs", "team/vision", "--sort", "garbage"))
    assert "'garbage'" in message and "loss" in message

    with pytest.raises(ValidationError) as raised:
        mf.Api(folded).runs("team/vision", order="-nope")
    reply = web.get("/api/projects/team/vision/runs", params={"sort": "garbage"})

    assert "'nope'" in str(raised.value) and "loss" in str(raised.value)
    assert reply.status_code == 400 and "'garbage'" in reply.json()["message"]


def test_known_projects_and_paths_still_answer(folded: Settings) -> None:
    listed = metricfold_cli(folded, "runs", "team/vision", "--sort", "loss")
    assert listed.returncode == 0, listed.stderr
    assert "2 of 2 runs" in listed.stdout
    assert [r.id for r in mf.Api(folded).runs("team/vision", order="+loss")] == ["named", "anon"]
    assert {r.id for r in mf.Api(folded).runs("team/vision")} == {"named", "anon"}


def test_a_run_without_a_name_shows_its_made_up_name_everywhere_and_a_given_name_is_kept(
    folded: Settings, web: httpx.Client
) -> None:
    made_up = run_name("anon")
    table = metricfold_cli(folded, "runs", "team/vision")
    summary = metricfold_cli(folded, "summary", "team/vision/anon")
    api_rows = {row["run_id"]: row["name"] for row in web.get("/api/projects/team/vision/runs").json()["runs"]}

    assert table.returncode == 0 and summary.returncode == 0, table.stderr + summary.stderr
    assert made_up in table.stdout and "given" in table.stdout
    assert f"name={made_up}" in summary.stdout
    assert mf.Api(folded).run("team/vision/anon").name == made_up
    assert mf.Api(folded).run("team/vision/named").name == "given"  # the second producer did not rename it
    assert api_rows == {"anon": made_up, "named": "given"}
    assert web.get("/api/runs/team/vision/anon").json()["name"] == made_up
    assert made_up in web.get("/projects/team/vision").text
    assert made_up in web.get("/runs/team/vision/anon").text


def test_the_sdk_shows_the_made_up_name_and_sends_none(tmp_path: Path) -> None:
    with pytest.warns(mf.SpoolWarning):
        run = mf.init(entity="team", project="vision", mode="offline", spool_dir=tmp_path)
        named = mf.init(entity="team", project="vision", mode="offline", spool_dir=tmp_path, name="given")
        run.finish()
        named.finish()
    assert run.name == run_name(run.id) and named.name == "given"
    assert run.report is not None and run.report.spool_path is not None
    started = [d for _, v in read_spool(run.report.spool_path) for n, d in flatten(*decode(v))
               if n == "metricfold.RunStarted"]
    assert [d["name"] for d in started] == [None]  # made up by every reader alike, never stored


def test_made_up_names_are_adjective_noun_number_the_same_in_any_process() -> None:
    ids = [f"run{i}" for i in range(200)]
    names = [run_name(i) for i in ids]
    for name in names:
        adjective, noun, number = name.split("-")
        assert adjective in ADJECTIVES and noun in NOUNS and 1 <= int(number) <= 99
    assert len(set(names)) > 190  # different ids, (almost always) different names
    code = "import sys; from schemas.names import run_name; print(' '.join(map(run_name, sys.argv[1:])))"
    other = subprocess.run([sys.executable, "-c", code, *ids], cwd=REPO, capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert other.stdout.split() == names
