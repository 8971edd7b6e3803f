"""Filters on the runs table and CSV export (schemas/filters.py, consumer/store/indexes.py, read_where.lua).

Unit tests of the two parsers and of the index moves; then one project of 8 runs published by the real SDK and
folded by the real consumer (twice: run r2 crashes, then finishes, so it moves between state indexes), queried
through Api().runs(filters=...) for every operator, through the store's read_table with the text syntax, and
through `metricfold runs --where --csv`; on the standalone Redis and on the session's Redis Cluster."""

from __future__ import annotations

import csv
import inspect
import io
from collections.abc import Iterator
from typing import Any

import pytest
from redis_cluster import fresh_settings_in

import producer as mf
from consumer.digest import digest_generation
from consumer.fold import Changes
from consumer.store import Store, open_reader
from consumer.store.indexes import INDEX_VERSION, INDEXED_FIELDS, backfill_call, index_moves
from consumer.store.keys import Keys
from consumer.store.reader import TablePage
from consumer.tables import runs_csv
from schemas.errors import ValidationError
from schemas.filters import Condition, Filter, parse_filters, parse_where, where_texts
from schemas.settings import Settings

from support import consume_all, metricfold_cli

PROJECT = "team/filt"
GROUPS = "group" in inspect.signature(mf.init).parameters  # the run meta fields group and job_type (issue 19)
#: run_id -> (summary, tags, config, exit code, group, job_type)
RUNS: dict[str, tuple[dict[str, float], list[str], dict[str, Any], int, str | None, str | None]] = {
    "r1": ({"acc": 0.95, "loss": 0.10, "lr.base": 0.5}, ["base", "a"], {"opt": "adam", "lr": 0.1}, 0, "g1", "train"),
    "r2": ({"acc": 0.85, "loss": 0.20}, ["a"], {"opt": "sgd", "lr": 0.01}, 1, "g1", "eval"),
    "r3": ({"acc": 0.91, "loss": 0.30}, ["b"], {"opt": "adam", "lr": 1}, 1, "g2", "train"),
    "r4": ({"acc": 0.50}, [], {"opt": "adam"}, 0, None, None),
    "r5": ({"loss": 0.05}, ["base"], {}, 0, "g2", None),
    "r6": ({"acc": 0.99, "loss": 0.40}, [], {"lr": 1.0}, 2, None, "train"),
    "r7": ({"acc": 0.70, "loss": 0.15}, ["a", "b"], {}, 0, None, None),
    "r8": ({"acc": 0.91, "loss": 0.25}, [], {"opt": "adam"}, 0, None, None),
}


# -- the parsers (pure) -----------------------------------------------------------------------------------------


def test_the_text_syntax_and_the_dict_syntax_make_one_model_and_the_text_form_reads_back() -> None:
    text = parse_where(["summary.acc > 0.9", "state in [\"finished\",\"crashed\"]", "tags = base or config.lr = 1.0"])
    mongo = parse_filters({"acc": {"$gt": 0.9}, "state": {"$in": ["finished", "crashed"]},
                           "$or": [{"tags": "base"}, {"config.lr": 1}]})
    assert text is not None and mongo is not None
    assert where_texts(text) == where_texts(mongo) == [
        "acc > 0.9", 'state in ["finished","crashed"]', "tags = base or config.lr = 1"]
    assert parse_where(where_texts(mongo)) == text
    assert parse_where(["lr\\.base >= 1e-4"]) == Filter(False, (Condition("summary", "lr\\.base", ">=", (0.0001,)),))
    assert parse_where(["group != 3", '"val acc" <= 2', "summary.state = 1"]) == Filter(False, (
        Condition("group", "", "!=", ("3",)), Condition("summary", "val acc", "<=", (2,)),
        Condition("summary", "state", "=", (1,))))
    assert where_texts(parse_where(['"val acc" <= 2', "summary.state = 1", 'job_type = "a b"'])) == [  # type: ignore[arg-type]
        '"val acc" <= 2', "summary.state = 1", 'job_type = "a b"']
    assert parse_where([]) is None and parse_filters(None) is None and parse_filters({}) is None


@pytest.mark.parametrize(("texts", "words"), [
    (["acc > high"], "compares with numbers"),
    (["state > 1"], "takes =, !=, in or nin"),
    (["acc"], "expected an operator"),
    (["acc >"], "value is missing"),
    (["tags in a"], "takes a list"),
    (["config. = 1"], "top-level config key"),
    (["acc = 1 2"], "written as JSON"),
    (["acc in [1, \"x\"]"], "compares with numbers"),
    (["state = [1"], "bad JSON"),
    ([""], "non-empty"),
])
def test_a_malformed_text_is_a_validation_error_naming_the_problem(texts: list[str], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        parse_where(texts)


@pytest.mark.parametrize(("filters", "words"), [
    ({"acc": {"$regex": "a"}}, "unknown operator '\\$regex'"),
    ({"$nor": []}, "unknown operator '\\$nor'"),
    ({"$or": {"a": 1}}, "takes a list"),
    ({"acc": "high"}, "compares with numbers"),
    ({"tags": {"$gt": "a"}}, "takes =, !=, in or nin"),
    ({"config.lr": {"$in": 1}}, "takes a list"),
])
def test_a_malformed_dict_is_a_validation_error_naming_the_problem(filters: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        parse_filters(filters)


def test_a_run_moves_between_index_sets_only_when_an_indexed_field_changes() -> None:
    keys = Keys("mf", "g1")
    quiet = Changes(meta={"updated": "2", "events": "3"}, meta_before={"updated": "1", "events": "2"})
    assert index_moves(keys, "t/p", quiet) == ([], [])
    moved = Changes(meta={"state": "finished", "tags": '["a","c"]', "config": '{"lr":1.0,"opt":"adam"}'},
                    meta_del=["group"],
                    meta_before={"state": "running", "tags": '["a","b"]', "config": '{"lr":0.1,"opt":"adam"}',
                                 "group": "g1"})
    out, into = index_moves(keys, "t/p", moved)
    base = "mf:g1:project:{t/p}:is:"
    assert out == [base + "state:running", base + "tag:b", base + "group:g1", base + 'config:"lr"=0.1']
    assert into == [base + "state:finished", base + "tag:c", base + 'config:"lr"=1']


# -- end to end: SDK -> Kafka -> consumer -> Redis -> Api / store / CLI ----------------------------------------


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def folded(stack: Any, request: pytest.FixtureRequest) -> Iterator[Settings]:  # conftest.Stack
    with fresh_settings_in(stack, request.param, request) as made:
        for run_id, (summary, tags, config, code, group, job_type) in RUNS.items():
            extra = {"group": group, "job_type": job_type} if GROUPS else {}
            run = mf.init(entity="team", project="filt", run_id=run_id, tags=tags, config=config, settings=made,
                          **extra)
            run.log(summary)
            run.finish(exit_code=code)
        consume_all(made)
        with mf.init(entity="team", project="filt", run_id="r2", settings=made) as run:  # crashed, then finished
            run.log({"acc": 0.85})
        consume_all(made)
        yield made


def _ids(settings: Settings, filters: dict[str, Any], **options: Any) -> list[str]:
    return [run.id for run in mf.Api(settings=settings).runs(PROJECT, filters, **options)]


@pytest.mark.integration
@pytest.mark.parametrize(("filters", "expected"), [
    ({"acc": {"$gt": 0.91}}, "r1 r6"),
    ({"summary.acc": {"$gte": 0.91}}, "r1 r3 r6 r8"),
    ({"acc": {"$lt": 0.85}}, "r4 r7"),
    ({"acc": {"$lte": 0.85}}, "r2 r4 r7"),
    ({"acc": {"$eq": 0.91}}, "r3 r8"),
    ({"acc": {"$ne": 0.91}}, "r1 r2 r4 r6 r7"),  # r5 has no acc: a numeric condition needs a number
    ({"acc": {"$in": [0.5, 0.99, 0.3]}}, "r4 r6"),
    ({"acc": {"$nin": [0.5, 0.99]}}, "r1 r2 r3 r7 r8"),
    ({"lr\\.base": 0.5}, "r1"),
    ({"state": "crashed"}, "r3 r6"),
    ({"state": {"$ne": "crashed"}}, "r1 r2 r4 r5 r7 r8"),
    ({"state": {"$in": ["crashed", "running"]}}, "r3 r6"),
    ({"state": {"$nin": ["crashed"]}}, "r1 r2 r4 r5 r7 r8"),
    ({"tags": "a"}, "r1 r2 r7"),
    ({"tags": {"$in": ["b", "base"]}}, "r1 r3 r5 r7"),
    ({"tags": {"$ne": "a"}}, "r3 r4 r5 r6 r8"),
    ({"tags": {"$nin": ["a", "b"]}}, "r4 r5 r6 r8"),
    ({"config.opt": "adam"}, "r1 r3 r4 r8"),
    ({"config.lr": {"$eq": 1}}, "r3 r6"),
    ({"config.lr": {"$in": [0.1, 0.01]}}, "r1 r2"),
    ({"config.opt": {"$ne": "adam"}}, "r2 r5 r6 r7"),
    ({"$or": [{"acc": {"$gt": 0.95}}, {"loss": {"$lt": 0.1}}]}, "r5 r6"),
    ({"$and": [{"acc": {"$gte": 0.85}}, {"loss": {"$lte": 0.2}}]}, "r1 r2"),
    ({"acc": {"$gt": 0.6}, "$or": [{"state": "crashed"}, {"tags": "base"}]}, "r1 r3 r6"),
    ({"acc": {"$gt": 0.98}, "loss": {"$gt": 0}, "state": {"$ne": "finished"}}, "r6"),  # tested one by one
    ({"nope": {"$gt": 0}}, ""),
    ({"nope": {"$ne": 0}}, ""),
    ({"tags": "never"}, ""),
])
def test_every_operator_through_the_api(folded: Settings, filters: dict[str, Any], expected: str) -> None:
    assert sorted(_ids(folded, filters)) == expected.split()


@pytest.mark.integration
@pytest.mark.skipif(not GROUPS, reason="mf.init has no group and job_type yet")
def test_group_and_job_type_filters(folded: Settings) -> None:
    assert sorted(_ids(folded, {"group": "g1"})) == ["r1", "r2"]
    assert sorted(_ids(folded, {"job_type": {"$in": ["eval", "none"]}})) == ["r2"]
    assert sorted(_ids(folded, {"group": {"$ne": "g1"}, "job_type": "train"})) == ["r3", "r6"]


@pytest.mark.integration
def test_the_page_is_sorted_and_cut_after_filtering_and_counts_the_matches(folded: Settings) -> None:
    finished_by_acc = ["r1", "r8", "r2", "r7", "r4"]  # r5 finished too but has no acc to sort by
    assert _ids(folded, {"state": "finished"}, order="-acc") == finished_by_acc
    for offset in range(5):  # limit 1: the read walks the sort index instead of sorting the matches
        assert _ids(folded, {"state": "finished"}, order="-acc", limit=1, offset=offset) == finished_by_acc[offset:offset + 1]
    assert _ids(folded, {"acc": {"$gt": 0.9}}, order="loss") == ["r1", "r8", "r3", "r6"]
    for order in ("-updated", "+updated", "-acc", "acc"):  # the page cut by walking the sort index, or by sorting
        every = _ids(folded, {"acc": {"$gt": 0.6}}, order=order)
        assert len(every) == 6 and [_ids(folded, {"acc": {"$gt": 0.6}}, order=order, limit=1, offset=n)[0]
                                    for n in range(6)] == every
    assert _ids(folded, {"tags": "a"}, order="-updated", limit=50) == _ids(folded, {"tags": {"$in": ["a"]}})
    with open_reader(folded) as reader:
        page = reader.read_table(PROJECT, sort="acc", where=parse_where(["state = finished"]), limit=2, columns=["acc"])
        assert (page.total, page.project_runs, [r["run_id"] for r in page.rows]) == (5, 8, ["r1", "r8"])
        assert page.rows[0]["values"] == {"acc": 0.95}
        page = reader.read_table(PROJECT, where=parse_where(["acc >= 0.91 or loss < 0.1", "state != crashed"]))
        assert (page.total, sorted(r["run_id"] for r in page.rows)) == (3, ["r1", "r5", "r8"])
        assert reader.read_table(PROJECT, where=parse_where(["unknown.path > 1"])).rows == []


@pytest.mark.integration
def test_the_cli_filters_and_exports_csv_and_refuses_a_malformed_filter(folded: Settings) -> None:
    done = metricfold_cli(folded, "runs", PROJECT, "--where", "acc > 0.9", "--where", "state = finished", "--sort",
                          "acc", "--columns", "acc,loss,lr\\.base", "--csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0] == ["run_id", "name", "state", "updated", "acc", "loss", "lr\\.base"]
    assert [(r[0], r[2], r[4], r[5], r[6]) for r in rows[1:]] == [("r1", "finished", "0.95", "0.1", "0.5"),
                                                                  ("r8", "finished", "0.91", "0.25", "")]
    assert int(rows[1][3]) > 0
    done = metricfold_cli(folded, "runs", PROJECT, "--where", "config.opt = adam", "--where", "tags != b")
    assert done.returncode == 0, done.stderr
    assert '3 of 3 runs, where config.opt = "adam" and tags != b' in done.stdout
    assert {line.split()[0] for line in done.stdout.splitlines()[3:]} == {"r1", "r4", "r8"}
    done = metricfold_cli(folded, "runs", PROJECT, "--where", "acc > high")
    assert done.returncode == 2 and done.stdout == ""
    assert "metricfold: error: filter 'acc > high': a summary path compares with numbers" in done.stderr


@pytest.mark.integration
def test_runs_folded_before_the_index_sets_existed_are_put_in_them_when_a_consumer_starts(folded: Settings) -> None:
    with Store(folded) as store:
        before = digest_generation(store)
        keys = store.keys
        # the generation as an earlier version left it: no index sets, no `indexes` key
        old = list(store.client.scan_iter(match=keys.index(PROJECT, "*", "*"), count=1000))
        assert len(old) > 10
        store.client.delete(*old, keys.indexes)
        assert _ids(folded, {"state": "crashed"}) == [] and _ids(folded, {"config.opt": "adam"}) == []

        consume_all(folded)  # a consumer starts: it puts the runs in their sets once

        assert sorted(_ids(folded, {"state": "crashed"})) == ["r3", "r6"]
        assert sorted(_ids(folded, {"tags": {"$in": ["b", "base"]}, "config.opt": {"$ne": "sgd"}})) == ["r1", "r3", "r5", "r7"]
        assert digest_generation(store) == before  # the very sets the fold made
        assert store.client.get(keys.indexes) == INDEX_VERSION.encode()
        assert store.ensure_indexes() == 0  # done once

        # a run whose meta changes between the read and the script is left to apply_runs (it moves the run itself)
        read = [None if v is None else v.decode() for v in store.client.hmget(keys.run(f"{PROJECT}/r4", "meta"), INDEXED_FIELDS)]
        assert read[0] == "finished"
        declared, rows = backfill_call(keys, PROJECT, [("r4", ["running", *read[1:]])])
        (reply,) = store.nodes.run([(store._index_runs, declared, [rows])])
        assert reply == 0 and not store.client.sismember(keys.index(PROJECT, "state", "running"), "r4")
        declared, rows = backfill_call(keys, PROJECT, [("r4", read)])
        assert store.nodes.run([(store._index_runs, declared, [rows])]) == [1]
        assert digest_generation(store) == before


def test_the_csv_keeps_text_that_a_spreadsheet_would_run_as_a_formula_as_text() -> None:
    rows = [
        {"run_id": "r1", "name": "=HYPERLINK(\"http://x\")", "state": "finished", "updated": 5,
         "values": {"note": "@SUM(A1)", "loss": -0.5, "tags": ["-x"]}},
        {"run_id": "r2", "name": "plain-name", "state": "running", "updated": 6, "values": {"note": "fine"}},
    ]
    page = TablePage(generation="g1", total=2, project_runs=2, rows=rows, paths=[])

    parsed = list(csv.reader(io.StringIO(runs_csv(page, ["note", "loss", "tags", "+col"]))))

    assert parsed[0] == ["run_id", "name", "state", "updated", "note", "loss", "tags", "'+col"]
    assert parsed[1] == ["r1", "'=HYPERLINK(\"http://x\")", "finished", "5", "'@SUM(A1)", "-0.5", '["-x"]', ""]
    assert parsed[2] == ["r2", "plain-name", "running", "6", "fine", "", "", ""]
