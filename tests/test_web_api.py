"""The JSON API and the pages of `metricfold serve`, against the real Redis filled by the real SDK and consumer.

Every test that reads the filled project runs twice: on the standalone Redis and on the session's Redis Cluster
(the module-scoped `filled` fixture is parametrized by mode; filling it takes a few seconds, the tests less)."""

from __future__ import annotations

import html
import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from web_support import EVIL, RUNS, folded_project, loss_min, served

import producer as mf
from consumer.digest import digest_generation
from consumer.store import Store
from consumer.web.server import ServerThread
from schemas.settings import Settings

from support import consume_all

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def filled(stack: Any, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """One project for the whole module (filling it takes a few seconds): its own topic and namespace, on the
    standalone Redis or on the Redis Cluster (*stack*: conftest.Stack, not imported: tests/chaos has a conftest too)."""
    with folded_project(stack, request) as made:
        yield made


@pytest.fixture(scope="module")
def web(filled: Settings) -> Iterator[httpx.Client]:
    with served(filled) as client:
        yield client


def test_runs_sorted_by_a_summary_path_page_through_every_run_in_order(web: httpx.Client) -> None:
    first = web.get("/api/projects/team/vision/runs", params={"sort": "loss.min", "order": "asc", "limit": 50}).json()
    second = web.get("/api/projects/team/vision/runs", params={"sort": "loss.min", "order": "asc", "offset": 50}).json()

    values = [r["values"]["loss.min"] for r in first["runs"] + second["runs"]]
    assert first["total"] == RUNS and first["project_runs"] == RUNS
    assert len(first["runs"]) == 50 and len(second["runs"]) == RUNS - 50
    assert values == sorted(loss_min(i) for i in range(RUNS))
    assert first["columns"][0] == "loss.min"
    assert {"loss.min", "loss.max", "acc.best", "grad.norm"} <= set(first["paths"])


def test_runs_descending_by_best_with_pinned_columns(web: httpx.Client) -> None:
    page = web.get(
        "/api/projects/team/vision/runs", params=[("sort", "acc.best"), ("limit", "5"), ("col", "acc.best"), ("col", "loss.max")]
    ).json()

    best = [r["values"]["acc.best"] for r in page["runs"]]
    assert page["columns"] == ["acc.best", "loss.max"]
    assert best == sorted(best, reverse=True) and best[0] == pytest.approx(1 - min(loss_min(i) for i in range(RUNS)))
    assert all(r["state"] in ("finished", "crashed") and r["name"].startswith("run-") for r in page["runs"])


def test_run_api_has_summary_aggregates_tensor_config_tags_state_and_event_count(web: httpx.Client) -> None:
    run = web.get("/api/runs/team/vision/r00").json()

    assert run["summary"]["loss"] == {"min": loss_min(0), "max": loss_min(0) + 0.5}
    assert run["summary"]["acc"] == {"best": pytest.approx(1 - loss_min(0)), "best_step": 1}
    assert run["flat"]["grad.norm"] == 3.0
    assert run["summary"]["weights"]["_type"] == "numpy.ndarray" and run["summary"]["weights"]["size"] == 1000
    assert run["summary"]["note"] == EVIL
    assert run["config"] == {"lr": 0.001, "model": {"depth": 50}} and run["tags"] == ["web", "group0"]
    # started, 2 defines, 3 logs, 2 overrides, 1 log, finished
    assert run["state"] == "finished" and run["events"] == 1 + 2 + 3 + 2 + 1 + 1
    crashed = web.get("/api/runs/team/vision/r01").json()
    assert crashed["state"] == "crashed" and crashed["exit_code"] == 1


def test_tensor_download_is_the_exact_array_as_npy(web: httpx.Client) -> None:
    url = web.get("/api/runs/team/vision/r00").json()["tensors"]["weights"]["url"]

    reply = web.get(url)

    assert reply.status_code == 200 and reply.headers["content-type"] == "application/octet-stream"
    assert 'filename="weights.npy"' in reply.headers["content-disposition"]
    assert np.array_equal(np.load(io.BytesIO(reply.content), allow_pickle=False), np.linspace(-1.0, 1.0, 1000))


@pytest.mark.parametrize(
    "url",
    [
        "/api/runs/team/vision/nope",
        "/api/projects/team/nope/runs",
        "/api/projects/nobody/vision/paths",
        "/api/runs/team/vision/r00/tensor?path=nope",
        "/api/projects/team/nope/changes",
        "/runs/team/vision/nope",
        "/projects/team/nope",
        "/no/such/page",
    ],
)
def test_unknown_run_project_or_tensor_is_404_with_a_message(web: httpx.Client, url: str) -> None:
    reply = web.get(url)

    assert reply.status_code == 404
    text = reply.json()["message"] if url.startswith("/api/") else reply.text
    assert "nope" in text or "nobody" in text or "no page" in text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit must be from 1 to 500"),
        ({"limit": "many"}, "limit must be a whole number"),
        ({"offset": "-1"}, "offset must be from 0"),
        ({"order": "up"}, "order must be 'asc' or 'desc'"),
        ({"sort": "nope.min"}, "cannot sort by 'nope.min'"),
        ({"sort": "note"}, "cannot sort by 'note'"),  # a string value: no sorted set
        ({"colour": "x"}, "unknown parameter 'colour'"),
        ([("col", f"c{i}") for i in range(41)], "at most 40 columns"),
    ],
)
def test_bad_parameters_are_400_with_a_message(web: httpx.Client, params: object, message: str) -> None:
    reply = web.get("/api/projects/team/vision/runs", params=params)  # type: ignore[arg-type]

    assert reply.status_code == 400
    assert message in reply.json()["message"]


def test_bad_names_are_400_on_pages_and_api(web: httpx.Client) -> None:
    assert web.get("/api/runs/team/vision/bad%20id").status_code == 400
    page = web.get("/projects/team/vi$ion")
    assert page.status_code == 400 and "project" in page.text and "vi$ion" in html.unescape(page.text)


def test_pages_escape_metric_names_and_values_from_trainers(web: httpx.Client) -> None:
    run_page = web.get("/runs/team/vision/r00").text
    table = web.get("/projects/team/vision", params=[("col", EVIL), ("col", "loss.min")]).text
    picker = web.get("/projects/team/vision").text

    for page in (run_page, table, picker):
        assert "<script>alert" not in page
    assert html.escape(EVIL) in run_page and html.escape(EVIL) in table and html.escape(EVIL) in picker
    assert web.get("/projects/team/vision").headers["content-security-policy"].startswith("default-src 'none'")


def test_project_page_lists_runs_sorted_by_the_pinned_column_with_picker_and_pager(web: httpx.Client) -> None:
    page = web.get("/projects/team/vision", params={"sort": "loss.min", "order": "asc", "limit": "10"}).text

    rows = [line.split('"')[0] for line in page.split('<tr data-run="')[1:]]
    expected = sorted(range(RUNS), key=loss_min)[:10]
    assert rows == [f"r{i:02d}" for i in expected]
    assert 'name="col" value="acc.best"' in page  # the column picker lists the project's paths
    assert "runs 1&ndash;10 of 55" in page and 'rel="next"' in page


def test_run_page_shows_summary_tensor_bar_download_config_and_tags(web: httpx.Client) -> None:
    page = web.get("/runs/team/vision/r00").text

    assert 'class="pbar"' in page and "download .npy" in page and "/api/runs/team/vision/r00/tensor?path=weights" in page
    assert ">group0<" in page and ">depth<" in page and "events folded" in page and ">finished<" in page


def test_openapi_document_lists_the_api(web: httpx.Client) -> None:
    doc = web.get("/api/openapi.json").json()

    assert doc["openapi"].startswith("3.")
    assert {"/api/projects/{entity}/{project}/runs", "/api/runs/{entity}/{project}/{run_id}"} <= set(doc["paths"])


def test_serving_never_writes_redis(filled: Settings, web: httpx.Client) -> None:
    with Store(filled) as store:
        generation = store.active_generation()
        assert generation is not None
        before = digest_generation(store, generation)
        for url in ("/", "/projects/team/vision?sort=loss.min", "/runs/team/vision/r00", "/api/runs/team/vision/r03",
                    "/api/projects/team/vision/runs?limit=500", "/api/runs/team/vision/r00/tensor?path=weights"):
            assert web.get(url).status_code == 200
        assert digest_generation(store, generation) == before


def test_change_events_announce_a_folded_run(filled: Settings, web: httpx.Client) -> None:
    with web.stream("GET", "/api/projects/team/vision/changes") as stream:
        lines = stream.iter_lines()
        assert next(lines) == "retry: 2000" and next(lines) == "event: ready"
        run = mf.init(entity="team", project="vision", run_id="r02", settings=filled)
        run.log({"loss": 0.001})
        run.finish()
        consume_all(filled)
        seen = []
        for line in lines:
            seen.append(line)
            if line == "data: r02" and "event: change" in seen:
                break

    assert web.get("/api/runs/team/vision/r02").json()["summary"]["loss"]["min"] == 0.001


def test_token_is_required_when_configured(filled: Settings) -> None:
    token = "s3cret-token-0123456789"
    with ServerThread(filled, token=token) as url, httpx.Client(base_url=url, timeout=10) as client:
        refused = client.get("/api/projects")
        wrong = client.get("/api/projects", headers={"Authorization": "Bearer nope-nope-nope-nope"})
        allowed = client.get("/api/projects", headers={"Authorization": f"Bearer {token}"})
        opened = client.get(f"/projects/team/vision?sort=loss.min&token={token}")
        with_cookie = client.get(opened.headers["location"])

    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert allowed.status_code == 200 and "team/vision" in [p["project"] for p in allowed.json()["projects"]]
    assert opened.status_code == 303 and opened.headers["location"] == "/projects/team/vision?sort=loss.min"
    assert "HttpOnly" in opened.headers["set-cookie"] and "SameSite=Strict" in opened.headers["set-cookie"]
    assert with_cookie.status_code == 200 and with_cookie.text.count("<tr data-run=") == 50


def test_token_and_address_settings_are_checked(tmp_path: Any) -> None:
    from consumer.web.server import bind, load_token
    from schemas.errors import ConfigError

    token_file = tmp_path / "token"
    token_file.write_text("0123456789abcdef0123\n")
    assert load_token(str(token_file), {}) == "0123456789abcdef0123"
    assert load_token(None, {"METRICFOLD_SERVE_TOKEN": "from-the-env-0123456"}) == "from-the-env-0123456"
    assert load_token(None, {}) is None
    with pytest.raises(ConfigError, match="16 to 512 characters"):
        load_token(None, {"METRICFOLD_SERVE_TOKEN": "short"})
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="cannot listen on"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
    with pytest.raises(ConfigError, match="--port must be"):
        bind("127.0.0.1", 65536)


def test_serve_without_the_serve_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from consumer.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if `pip install metricfold` without [serve]

    assert main(["serve", "--port", "0"]) == 2
    assert "pip install 'metricfold[serve]'" in capsys.readouterr().err
