"""Whatever the SDK accepts, the consumer folds: the two sides share one definition of every check and limit
(schemas.values, schemas.limits), proved here through the real broker, consumer and Redis.

- A property: hypothesis makes runs with arbitrary names, configs, tags, keys and values (lone surrogates,
  control and text-direction characters, odd numbers among them). Each is given to the SDK; what it accepts
  goes to Kafka, and the consumer must fold all of it: no dead letter, every event counted, the meta as given.
- The limits: at each limit the SDK accepts and the consumer folds; one past it the SDK refuses.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import producer as mf
from consumer.runner import Consumer
from consumer.store import Store
from schemas.errors import ValidationError
from schemas.limits import Limits
from schemas.settings import Settings

from support import read_full_records

pytestmark = pytest.mark.integration

#: characters that broke something once, or nearly: mixed into otherwise arbitrary text
_HOSTILE = st.sampled_from(["\udc00", "\ud800", "\x00", "\x1b", "\n", "\r", "\x85", "\u202e", "\u2066", "\u200f",
                            ".", "\\", "/", "*", "_", " ", "é", "日", "\U0001f600"])
_TEXT = st.text(st.one_of(_HOSTILE, st.characters(exclude_categories=())), min_size=0, max_size=10)
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), _TEXT)
_JSONISH = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                        max_leaves=6)


@dataclasses.dataclass
class _Sent:
    path: str
    name: str | None
    config: dict[str, Any]
    tags: list[str]
    events: int


def _consume(settings: Settings, limits: Limits | None = None) -> Any:
    consumer = Consumer(settings, limits=limits)
    try:
        return consumer.run(until_caught_up=True)
    finally:
        consumer.close()


def _try(action: Any) -> int:
    """1 if the SDK accepted the call (one event sent), 0 if it refused it with ValidationError."""
    try:
        action()
    except ValidationError:
        return 0
    return 1


def test_whatever_the_sdk_accepts_the_consumer_folds(settings: Settings, tmp_path: Any) -> None:
    sent: list[_Sent] = []
    refused = 0

    @hsettings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(name=st.none() | _TEXT, config=st.dictionaries(_TEXT, _JSONISH, max_size=4),
           tags=st.lists(_TEXT, max_size=4), logged=st.lists(st.dictionaries(_TEXT, _JSONISH, max_size=3), max_size=3),
           override=st.dictionaries(_TEXT, _JSONISH, max_size=2))
    def one_run(name: Any, config: Any, tags: Any, logged: Any, override: Any) -> None:
        nonlocal refused
        try:
            run = mf.init(entity="prop", project="agree", run_id=f"r{len(sent) + refused}", name=name, config=config,
                          tags=tags, settings=settings, spool_dir=tmp_path)
        except ValidationError:
            refused += 1
            return
        events = 1 + sum(_try(lambda values=values: run.log(values)) for values in logged)
        events += _try(lambda: run.summary.update(override)) if override else 0
        run.finish()
        sent.append(_Sent(run.path, name, json.loads(json.dumps(config, default=str)), list(tags), events + 1))

    one_run()
    assert sent and refused, f"the strategies should make both accepted and refused runs ({len(sent)}, {refused})"

    report = _consume(settings)

    dead = read_full_records(settings, 1, timeout=3, topic=settings.dead_letter_topic)
    assert [dict(r.headers)["reason"] for r in dead] == []
    assert report.dead_letters == report.undecodable == 0
    with Store(settings) as store:
        for run in sent:
            meta = store.read_run(run.path)["meta"]
            assert int(meta["events"]) == run.events, run
            assert json.loads(meta.get("tags", "[]")) == list(dict.fromkeys(run.tags))
            assert _same_json(json.loads(meta.get("config", "{}")), run.config)
            if run.name:  # None or "": the SDK makes one up (schemas.names)
                assert meta["name"] == run.name


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality where NaN equals NaN (the config may hold one in a list or dict that json accepted)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


SMALL = Limits(max_key_length=8, max_key_depth=2, max_values_per_event=3, max_string_length=5, max_tensor_bytes=2_000)

#: (what, the SDK call at the limit, the same one past it); `run` is an open run, `init` makes one
AT_AND_PAST = [
    ("tags", {"tags": ["t1", "t2", "t3"]}, {"tags": ["t1", "t2", "t3", "t4"]}),
    ("tag length", {"tags": ["t" * 8]}, {"tags": ["t" * 9]}),
    ("name length", {"name": "n" * 5}, {"name": "n" * 6}),
    ("key length", {"log": {"k" * 8: 1.0}}, {"log": {"k" * 9: 1.0}}),
    ("key depth", {"log": {"a": {"b": 1.0}}}, {"log": {"a": {"b": {"c": 1.0}}}}),
    ("values per event", {"log": {"a": 1, "b": 2, "c": 3}}, {"log": {"a": 1, "b": 2, "c": 3, "d": 4}}),
    ("string length", {"log": {"s": "x" * 5}}, {"log": {"s": "x" * 6}}),
    ("summary key length", {"summary": {"k" * 8: 1}}, {"summary": {"k" * 9: 1}}),
]


def _send(settings: Settings, run_id: str, call: dict[str, Any], tmp_path: Any) -> None:
    run = mf.init(entity="lim", project="agree", run_id=run_id, tags=call.get("tags"), name=call.get("name"),
                  settings=settings, limits=SMALL, spool_dir=tmp_path)
    try:
        if "log" in call:
            run.log(call["log"])
        if "summary" in call:
            run.summary.update(call["summary"])
    finally:
        run.finish()


def test_the_sdk_limits_are_the_consumer_limits(settings: Settings, tmp_path: Any) -> None:
    for i, (_what, at, past) in enumerate(AT_AND_PAST):
        _send(settings, f"at{i}", at, tmp_path)
        with pytest.raises(ValidationError):
            _send(settings, f"past{i}", past, tmp_path)

    report = _consume(settings, SMALL)

    assert report.dead_letters == report.undecodable == 0, "the consumer refused what the SDK accepted at a limit"
    with Store(settings) as store:
        for i, (what, at, _) in enumerate(AT_AND_PAST):
            meta = store.read_run(f"lim/agree/at{i}")["meta"]
            assert int(meta["events"]) == 2 + ("log" in at) + ("summary" in at), what
