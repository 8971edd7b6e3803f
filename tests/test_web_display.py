"""What readers show of text someone else logged (issue 20, item 2 "Terminal and display spoofing", and the
percentile bar of item 4): `metricfold summary` / `metricfold runs` escape anything unprintable, the page escapes it
too and isolates its direction, and every path the page lists can be pinned, sorted by and downloaded.

Keys, tags and names holding controls come from records written as an SDK before the rule (the SDK now refuses
them, the consumer still folds them): raw Avro on the real topic, folded by the real consumer.
"""

from __future__ import annotations

import html
import io
import math
import re
import uuid
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import numpy as np
import pytest
from kafka import KafkaProducer

import producer as mf
from consumer.cli import main
from consumer.web.server import ServerThread
from consumer.web.widgets import percentile_bar
from schemas import codec
from schemas.settings import Settings
from schemas.tensors import to_npy
from schemas.text import printable

from support import cli_env, consume_all

KEY_ESC = "\x1b[31mred"  # colours the terminal
KEY_LINES = "two\nlines"  # breaks a table row (and an HTML form cannot send it back)
KEY_BIDI = "\u202eevil"  # displays as "live"
TAG = "\u202eevil"
NAME = "\x1b]0;pwned\x07name"  # sets the terminal's title
NOTE = "a\r\nfake row\x00\u2066x"
TENSOR_KEY = "\x1b[2Jweights"  # clears the screen
# what must never reach a terminal or a page's text as it is
HOSTILE = frozenset("\x1b\x00\r\x07\x85\u202e\u2066\u200f")


def test_printable_escapes_controls_bidi_and_other_unprintables_and_keeps_the_rest() -> None:
    assert printable("loss.min") == "loss.min" and printable("Grüße ✓ 损失 a\\b") == "Grüße ✓ 损失 a\\b"
    assert printable(KEY_ESC) == "\\x1b[31mred"
    assert printable("a\x00b\r\nc\td\x7f\x85") == "a\\x00b\\x0d\\x0ac\\x09d\\x7f\\x85"
    assert printable(TAG) == "\\u202eevil"
    assert printable("\u2066\u2069\u200e\u200f\u202a\u00a0\u2028") == "\\u2066\\u2069\\u200e\\u200f\\u202a\\xa0\\u2028"
    assert printable("\U000e0001") == "\\U000e0001"


def publish_as_an_old_sdk(settings: Settings, run_id: str) -> None:
    """A run whose keys, tags, name and values hold controls and bidi characters."""
    envelope = {"entity": "team", "project": "spoof", "run_id": run_id, "producer_id": uuid.uuid4().hex, "ts_ms": 1}
    tensor = ("metricfold.Tensor", {"kind": "numpy.ndarray", "npy": to_npy(np.arange(100.0))})
    events = [
        ("metricfold.RunStarted", {**envelope, "seq": 0, "name": NAME, "config_json": '{"\\u202ekey": "\\u001bv"}',
                                   "tags": [TAG, "plain"]}),
        ("metricfold.Log", {**envelope, "seq": 1, "step": 0, "values": {KEY_ESC: 1.5, KEY_LINES: 2.5, KEY_BIDI: 3.5}}),
        ("metricfold.SummaryUpdate", {**envelope, "seq": 2, "set": {"note": NOTE, TENSOR_KEY: tensor}, "remove": []}),
        ("metricfold.RunFinished", {**envelope, "seq": 3, "exit_code": 0}),
    ]
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    for name, datum in events:
        producer.send(settings.topic, key=f"team/spoof/{run_id}".encode(), value=codec.encode(name, datum))
    producer.flush()
    producer.close()


@pytest.fixture
def spoof(settings: Settings) -> Settings:
    """team/spoof: r1 from an old SDK (hostile text), r2 from the SDK with a tensor of ±1.8e308."""
    publish_as_an_old_sdk(settings, "r1")
    with mf.init(entity="team", project="spoof", run_id="r2", name="huge", settings=settings) as run:
        run.summary["big"] = np.repeat([-1.8e308, 0.0, 1.8e308], 20)  # more than inline values: a tensor
    consume_all(settings)
    return settings


def _cli(capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str) -> str:
    with pytest.MonkeyPatch.context() as env:  # log in to Redis as the settings do (credentials only from the env)
        for name, value in cli_env(settings).items():
            env.setenv(name, value)
        code = main([*argv, "--redis", settings.redis, "--namespace", settings.namespace])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


@pytest.mark.integration
def test_summary_and_runs_print_unprintable_text_escaped_one_row_per_line(
    spoof: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = _cli(capsys, spoof, "summary", "team/spoof/r1")
    runs = _cli(capsys, spoof, "runs", "team/spoof", "--columns", f"{KEY_ESC},{KEY_LINES},{KEY_BIDI}")
    sorted_runs = _cli(capsys, spoof, "runs", "team/spoof", "--sort", KEY_ESC)

    for out in (summary, runs, sorted_runs):
        assert not HOSTILE & set(out), out
    assert "name=\\x1b]0;pwned\\x07name" in summary and "\\u202eevil" in summary
    rows = {line.split()[0]: line for line in summary.splitlines() if line.startswith(("\\", "two", "note"))}
    assert rows["\\x1b[31mred"].split()[-1] == "1.5" and rows["two\\x0alines"].split()[-1] == "2.5"
    assert rows["\\u202eevil"].split()[-1] == "3.5" and "a\\x0d\\x0afake row\\x00\\u2066x" in rows["note"]
    assert "tensor \\x1b[2Jweights:" in summary
    lines = runs.splitlines()
    assert len(lines) == 1 + 2 + 2  # the title, header and rule, one line per run
    assert "\\x1b[31mred" in lines[1] and "two\\x0alines" in lines[1] and "\\u202eevil" in lines[1]
    r1 = next(line for line in lines if line.startswith("r1 "))
    assert "\\x1b]0;pwned\\x07name" in r1 and r1.split()[-3:] == ["1.5", "2.5", "3.5"]
    assert "sorted by \\x1b[31mred" in sorted_runs


class _Text(HTMLParser):
    """The text a browser shows (character references decoded), without the markup and attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _shown(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return "".join(p for p in parser.parts if p.strip())


@pytest.mark.integration
def test_pages_show_user_text_escaped_and_direction_isolated(spoof: Settings) -> None:
    with ServerThread(spoof) as base, httpx.Client(base_url=base, timeout=10) as web:
        run_page = web.get("/runs/team/spoof/r1").text
        project_page = web.get("/projects/team/spoof", params=[("col", KEY_ESC), ("col", KEY_BIDI), ("sort", KEY_BIDI)]).text

    for page in (run_page, project_page):
        assert not HOSTILE & set(_shown(page))
    assert '<span class="tag"><bdi>\\u202eevil</bdi></span>' in run_page
    assert "<h1><bdi>\\x1b]0;pwned\\x07name</bdi></h1>" in run_page
    assert "<th><bdi>\\x1b[31mred</bdi></th>" in run_page and "<bdi>a\\x0d\\x0afake row\\x00\\u2066x</bdi>" in run_page
    assert "<th><bdi>\\u202ekey</bdi></th>" in run_page  # the config's key
    assert "<bdi>\\x1b]0;pwned\\x07name</bdi></a>" in project_page and "sorted by <bdi>\\u202eevil</bdi>" in project_page


@pytest.mark.integration
def test_api_error_messages_show_the_text_they_quote_escaped(spoof: Settings) -> None:
    with ServerThread(spoof) as base, httpx.Client(base_url=base, timeout=10) as web:
        bad_sort = web.get("/api/projects/team/spoof/runs", params={"sort": KEY_BIDI + KEY_ESC})
        no_page = web.get("/api/" + quote(KEY_BIDI + KEY_ESC))

    assert (bad_sort.status_code, no_page.status_code) == (400, 404)
    for answer in (bad_sort, no_page):
        message = answer.json()["message"]
        assert "\\u202eevil\\x1b[31mred" in message and not HOSTILE & set(message), message


def _listed(page: str) -> tuple[list[str], dict[str, list[str]]]:
    """The column picker: the paths of its check boxes, and for each path shown as a link, the columns it asks for."""
    boxes = [html.unescape(v) for v in re.findall(r'<input type="checkbox" name="col" value="([^"]*)"', page)]
    links = {
        html.unescape(col): parse_qs(urlsplit(html.unescape(href)).query, keep_blank_values=True).get("col", [])
        for href, col in re.findall(r'<a class="pin" href="([^"]*)" data-col="([^"]*)"', page)
    }
    return boxes, links


@pytest.mark.integration
def test_every_path_the_page_lists_can_be_pinned_sorted_by_and_downloaded(spoof: Settings) -> None:
    with ServerThread(spoof) as base, httpx.Client(base_url=base, timeout=10) as web:
        boxes, links = _listed(web.get("/projects/team/spoof").text)
        listed = boxes + list(links)
        answers = {
            path: (
                web.get("/api/projects/team/spoof/runs", params=[("sort", path), ("col", path)]),
                web.get("/projects/team/spoof", params=[("sort", path), ("col", path)]),
            )
            for path in listed
        }
        pinned = web.get("/api/projects/team/spoof/runs", params=[("col", c) for c in links[KEY_LINES]]).json()
        # a page pinning a path a form cannot carry offers only links (their URLs carry every path exactly)
        _, links_only = _listed(web.get("/projects/team/spoof", params={"col": KEY_LINES}).text)
        tensor_url = web.get("/api/runs/team/spoof/r1").json()["tensors"][TENSOR_KEY]["url"]
        tensor = web.get(tensor_url)

    assert {KEY_ESC, KEY_BIDI, KEY_LINES} <= set(listed)
    assert KEY_LINES in links and KEY_LINES not in boxes  # a form would send it back as "two\r\nlines"
    for path, (api, page) in answers.items():
        assert api.status_code == 200 and page.status_code == 200, (path, api.text)
        assert api.json()["columns"] == [path] and api.json()["sort"] == path
    values = {r["run_id"]: r["values"] for r in pinned["runs"]}
    assert values["r1"][KEY_LINES] == 2.5
    assert set(links_only) >= {KEY_ESC, KEY_BIDI, KEY_LINES}
    assert KEY_LINES not in links_only[KEY_LINES] and KEY_LINES in links_only[KEY_ESC]  # a link (un)pins its path
    assert tensor.status_code == 200 and 'filename="2Jweights.npy"' in tensor.headers["content-disposition"]
    assert np.array_equal(np.load(io.BytesIO(tensor.content), allow_pickle=False), np.arange(100.0))


_NUMBER_ATTRS = re.compile(r'\b(?:x|x1|x2|y|y1|y2|cx|cy|width|height)="([^"]*)"')


def _drawn(svg: str) -> list[float]:
    return [float(v) for v in _NUMBER_ATTRS.findall(svg)]


@pytest.mark.parametrize(
    "stats",
    [
        {"min": -1.8e308, "10%": -1.8e308, "25%": -1e308, "50%": 0.0, "75%": 1e308, "90%": 1.8e308, "max": 1.8e308,
         "mean": float("-inf")},
        {"min": float("-inf"), "10%": -3.0, "25%": -1.0, "50%": 0.0, "75%": 1.0, "90%": 3.0, "max": float("inf"),
         "mean": float("nan")},
        {"min": -1.0, "10%": float("nan"), "50%": float("nan"), "max": 1.0, "mean": 0.0},
    ],
)
def test_the_percentile_bar_draws_only_finite_coordinates(stats: dict[str, Any]) -> None:
    svg = percentile_bar(stats)

    assert svg.startswith("<svg") and _drawn(svg)
    assert all(math.isfinite(v) and 0 <= v <= 320 for v in _drawn(svg)), svg
    assert "nan" not in re.sub(r"<text[^>]*>[^<]*</text>|<title>[^<]*</title>", "", svg)


def test_the_percentile_bar_labels_non_finite_ends_and_is_left_out_without_any_finite_stat() -> None:
    svg = percentile_bar({"min": float("-inf"), "50%": 0.0, "max": 2.0})

    assert '<text x="6.0" y="33.0" class="axis">-inf</text>' in svg and ">2</text>" in svg
    assert percentile_bar({"min": float("nan"), "max": float("nan"), "mean": float("inf")}) == ""


@pytest.mark.integration
def test_the_run_page_bar_of_a_tensor_of_huge_values_has_finite_coordinates(spoof: Settings) -> None:
    with ServerThread(spoof) as base, httpx.Client(base_url=base, timeout=10) as web:
        page = web.get("/runs/team/spoof/r2").text

    bars = re.findall(r'<svg class="pbar".*?</svg>', page)
    assert len(bars) == 1 and _drawn(bars[0])
    assert all(math.isfinite(v) for v in _drawn(bars[0])), bars[0]
