"""Filters (`where=`) on the JSON API, the pages and runs.csv of `metricfold serve`, against the real Redis filled by
the real SDK and consumer: one project of 12 runs folded once for the module (tests/web_support.py's team/vision), on
the standalone Redis and on the session's Redis Cluster."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from web_support import EVIL, folded_project, loss_min, served

from consumer.store import open_reader
from consumer.web.data import runs_csv_text
from consumer.web.params import parse_table_query
from schemas.settings import Settings

pytestmark = pytest.mark.integration

RUNS = 12
RUNS_API = "/api/projects/team/vision/runs"
ALL = [f"r{i:02d}" for i in range(RUNS)]


def lr(i: int) -> float:
    return 0.001 * (i + 1)


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def filled(stack: Any, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """team/vision with 12 runs: loss.min = loss_min(i), loss.max = loss.min + 0.5, acc.best = 1 - loss.min, grad.norm 3,
    config lr = 0.001 (i + 1), tags web and group<i % 3>; r01 crashed, the rest finished."""
    with folded_project(stack, request, runs=RUNS) as made:
        yield made


@pytest.fixture(scope="module")
def web(filled: Settings) -> Iterator[httpx.Client]:
    with served(filled) as client:
        yield client


def matching(test: Callable[[int], bool]) -> set[str]:
    return {f"r{i:02d}" for i in range(RUNS) if test(i)}


LOW = sorted(loss_min(i) for i in range(RUNS))
CASES: list[tuple[list[str], set[str]]] = [
    ([f"loss.min > {LOW[5]}"], matching(lambda i: loss_min(i) > LOW[5])),
    ([f"loss.min >= {LOW[5]}"], matching(lambda i: loss_min(i) >= LOW[5])),
    ([f"loss.min < {LOW[3]}"], matching(lambda i: loss_min(i) < LOW[3])),
    ([f"loss.min <= {LOW[3]}"], matching(lambda i: loss_min(i) <= LOW[3])),
    ([f"loss.min = {LOW[0]}"], matching(lambda i: loss_min(i) == LOW[0])),
    ([f"loss.min != {LOW[0]}"], matching(lambda i: loss_min(i) != LOW[0])),
    ([f"loss.max in [{LOW[0] + 0.5}, {LOW[1] + 0.5}, 99]"], matching(lambda i: loss_min(i) in LOW[:2])),
    ([f"loss.max nin [{LOW[0] + 0.5}]"], matching(lambda i: loss_min(i) != LOW[0])),
    (["state = crashed"], {"r01"}),
    (['state != "crashed"'], set(ALL) - {"r01"}),
    (['tags in ["group1", "nope"]'], matching(lambda i: i % 3 == 1)),
    (['tags nin ["group1"]'], matching(lambda i: i % 3 != 1)),
    ([f"config.lr = {json.dumps(lr(4))}"], {"r04"}),
    (["state = crashed or grad.norm > 2.5"], set(ALL)),
    # several texts are ANDed
    ([f"acc.best > {1 - LOW[6]}", "tags = group0", "state = finished"],
     matching(lambda i: 1 - loss_min(i) > 1 - LOW[6] and i % 3 == 0)),
]


def test_every_operator_through_where_gives_the_runs_that_pass(web: httpx.Client) -> None:
    for where, expected in CASES:
        page = web.get(RUNS_API, params=[("limit", "50"), *(("where", w) for w in where)])
        assert page.status_code == 200, (where, page.text)
        doc = page.json()
        assert {r["run_id"] for r in doc["runs"]} == expected, where
        assert doc["total"] == len(expected) and doc["project_runs"] == RUNS, where
        assert len(doc["where"]) == len(where), doc["where"]
    assert any(expected and expected != set(ALL) for _, expected in CASES)  # the cases discriminate


def test_filters_combine_with_a_sort_and_pinned_columns_and_page(web: httpx.Client) -> None:
    params = [("sort", "loss.min"), ("order", "asc"), ("where", f"loss.min > {LOW[1]}"), ("where", "state = finished"),
              ("col", "acc.best"), ("col", "loss.min"), ("limit", "3"), ("offset", "2")]
    doc = web.get(RUNS_API, params=params).json()

    passing = sorted((loss_min(i), f"r{i:02d}") for i in range(RUNS) if loss_min(i) > LOW[1] and i != 1)
    assert doc["total"] == len(passing)
    assert [r["run_id"] for r in doc["runs"]] == [run for _, run in passing[2:5]]
    assert doc["columns"] == ["acc.best", "loss.min"]
    assert [r["values"]["loss.min"] for r in doc["runs"]] == [value for value, _ in passing[2:5]]
    # without pinned columns the paths the filters test are shown after the sort path
    shown = web.get(RUNS_API, params={"sort": "acc.best", "where": "grad.norm >= 3"}).json()["columns"]
    assert shown[:2] == ["acc.best", "grad.norm"]


def test_unknown_path_is_an_empty_page_and_a_malformed_filter_a_400_naming_it(web: httpx.Client) -> None:
    empty = web.get(RUNS_API, params={"where": "no.such.path > 0"})
    assert empty.status_code == 200 and empty.json()["runs"] == [] and empty.json()["total"] == 0

    for bad in ("acc.best >", "acc.best ~ 1", "state > 1", 'loss.min = "low"', "tags in 3", "acc.best > [1,"):
        reply = web.get(RUNS_API, params={"where": bad})
        assert reply.status_code == 400, bad
        assert reply.json()["error"] == "bad_request" and bad in reply.json()["message"], reply.json()
    too_many = web.get(RUNS_API, params=[("where", "acc.best > 0")] * 21)
    assert too_many.status_code == 400 and "at most 20 filters" in too_many.json()["message"]
    # the page answers a malformed filter with its error page, the filter escaped
    page = web.get("/projects/team/vision", params={"where": f"{EVIL} > 1 x"})
    assert page.status_code == 400 and EVIL not in page.text and html.escape(EVIL) in page.text


def test_runs_csv_holds_the_filtered_runs_and_columns_in_order(web: httpx.Client) -> None:
    params = [("sort", "loss.min"), ("order", "desc"), ("col", "loss.min"), ("col", "acc.best"),
              ("where", "tags in [\"group0\", \"group2\"]")]
    reply = web.get("/api/projects/team/vision/runs.csv", params=params)

    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    expected = sorted((i for i in range(RUNS) if i % 3 != 1), key=loss_min, reverse=True)  # every one, not a page
    assert [r["run_id"] for r in rows] == [f"r{i:02d}" for i in expected]
    assert list(rows[0]) == ["run_id", "name", "state", "updated", "loss.min", "acc.best"]
    assert [float(r["loss.min"]) for r in rows] == [loss_min(i) for i in expected]
    assert rows[0]["name"] == f"run-{expected[0]:02d}" and int(rows[0]["updated"]) > 0

    limited = web.get("/api/projects/team/vision/runs.csv", params=[*params, ("limit", "2"), ("offset", "1")])
    assert [r["run_id"] for r in csv.DictReader(io.StringIO(limited.text))] == [f"r{i:02d}" for i in expected[1:3]]
    assert web.get("/api/projects/team/vision/runs.csv", params={"where": "state >"}).status_code == 400


def test_the_openapi_document_describes_where_and_runs_csv(web: httpx.Client) -> None:
    paths = web.get("/api/openapi.json").json()["paths"]
    for route in ("/api/projects/{entity}/{project}/runs", "/api/projects/{entity}/{project}/runs.csv"):
        where = [p for p in paths[route]["get"]["parameters"] if p["name"] == "where"]
        assert len(where) == 1 and where[0]["explode"] is True and "acc.best > 0.9" in where[0]["description"]
    assert "text/csv" in paths["/api/projects/{entity}/{project}/runs.csv"]["get"]["responses"]["200"]["content"]


def test_runs_csv_reads_the_store_in_pages_and_keeps_every_run_once(filled: Settings) -> None:
    query = parse_table_query({"sort": "acc.best"}, ["acc.best"], ["state = finished"], max_limit=100, default_limit=100)
    with open_reader(filled) as store:
        text = runs_csv_text(store, "team/vision", query, chunk=5)  # 11 runs in pages of 5

    rows = list(csv.DictReader(io.StringIO(text)))
    expected = sorted((i for i in range(RUNS) if i != 1), key=loss_min)  # acc.best descending: loss.min ascending
    assert [r["run_id"] for r in rows] == [f"r{i:02d}" for i in expected]


def test_the_page_shows_the_filters_keeps_them_in_every_link_and_refreshes_with_them(web: httpx.Client) -> None:
    where = f"loss.min < {LOW[4]}"
    page = web.get("/projects/team/vision", params=[("sort", "loss.min"), ("where", where), ("where", "state = finished")])
    assert page.status_code == 200
    text = page.text

    assert f'data-where="{html.escape(where)}"' in text and 'id="where"' in text and 'id="csv"' in text
    assert 'name="where" value="state = finished"' in text  # the add box carries the filters already set
    fragment = web.get("/projects/team/vision/table", params=[("sort", "loss.min"), ("where", where)]).text
    shown = [f"r{i:02d}" for i in range(RUNS) if loss_min(i) < LOW[4]]
    assert sorted(part.split('"')[0] for part in fragment.split('data-run="')[1:]) == sorted(shown)
    assert "where=loss.min" in fragment.split('data-sort="loss.min"')[0].rsplit("<a", 1)[1]  # the sort link keeps it
    assert "runs match the 1 filter)" in fragment

    hostile = web.get("/projects/team/vision", params={"where": "tags = <img/src/onerror=alert(1)>"})
    assert hostile.status_code == 200 and "<img" not in hostile.text and "&lt;img/src/onerror=alert(1)&gt;" in hostile.text
