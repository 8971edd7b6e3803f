"""The SDK under hostile input (the client half of the fuzz suite; tests/chaos/test_fuzz.py is the consumer half).

For any input a trainer may throw at `log`, `run.summary[...]` or `define_metric` — huge maps, deep nesting,
giant strings, NaN/inf everywhere, strings that are not valid Unicode, odd types, negative steps — the call
either raises a MetricfoldError naming the problem and sends nothing, or is accepted and then delivered: no
input may pass the checks and later break the background sender (which would drop the whole batch).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import producer as mf
from producer.spool_file import read_spool
from schemas.codec import decode
from schemas.errors import MetricfoldError
from schemas.limits import Limits

#: small limits, so that hypothesis reaches them often
LIMITS = Limits(max_key_length=24, max_key_depth=4, max_values_per_event=40, max_string_length=64, max_tensor_bytes=4096)

hostile_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),  # lone surrogates
    st.text(min_size=60, max_size=80),  # around the string limit
    st.sampled_from(["", ".", "\\.", "a.b", "_x", "*", "\x00", "é", "\U0001f600"]),
)
hostile_scalar = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0]),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond int64 too
    st.booleans(),
    st.none(),
    hostile_text,
    st.binary(max_size=4),  # bytes: not a metric value
    st.builds(lambda n: np.full(n, np.nan), st.integers(0, 600)),  # tensors of NaN, some over the byte limit
)
hostile_values = st.recursive(
    hostile_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(hostile_text, inner, max_size=6),
    ),
    max_leaves=60,
)
hostile_logs = st.dictionaries(hostile_text, hostile_values, max_size=50)


def _events_in_spool(directory: Path) -> int:
    count = 0
    for path in directory.glob("*.spool.avro"):
        for _, value in read_spool(path):
            name, datum = decode(value)
            items = datum["items"] if name == "metricfold.Batch" else [(name, datum)]
            count += sum(len(d["steps"]) if n == "metricfold.LogBlock" else 1 for n, d in items)
    return count


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    logs=st.lists(st.tuples(hostile_logs, st.one_of(st.none(), st.integers(-5, 5))), max_size=8),
    overrides=st.lists(st.tuples(hostile_text, hostile_values), max_size=4),
    names=st.lists(hostile_text, max_size=3),
)
def test_every_hostile_call_is_refused_with_a_clear_error_or_delivered_whole(
    tmp_path_factory: pytest.TempPathFactory, logs: list[tuple[Any, int | None]], overrides: list[tuple[str, Any]],
    names: list[str],
) -> None:
    spool = tmp_path_factory.mktemp("spool")
    run = mf.init(project="fuzz", mode="offline", spool_dir=spool, limits=LIMITS)
    accepted = 1  # RunStarted
    calls: list[tuple[Any, ...]] = [(run.log, data, step) for data, step in logs]
    calls += [(run.summary.__setitem__, key, value) for key, value in overrides]
    calls += [(lambda name: run.define_metric(name, summary="min"), name) for name in names]
    for call, *args in calls:
        try:
            call(*args)
        except MetricfoldError as exc:
            assert str(exc)  # a message that says what is wrong
        else:
            accepted += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.SpoolWarning)
        run.finish()
    accepted += 1  # RunFinished

    assert run.report is not None and run.report.errors == 0
    assert _events_in_spool(spool) == accepted


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda run: run.log({"k\ud800": 1.0}), "not valid Unicode"),
        (lambda run: run.log({"s": "x\udcff"}), "not valid Unicode"),
        (lambda run: run.log({"grad": {"n\ud83d": 0.5}}), "not valid Unicode"),
        (lambda run: run.summary.update({"note": "\udc80"}), "not valid Unicode"),
        (lambda run: run.define_metric("acc\ud800", summary="max"), "not valid Unicode"),
        (lambda run: run.log({"a": {"b": {"c": {"d": {"e": 1.0}}}}}), "max_key_depth"),
        (lambda run: run.log({"big": {f"k{i}": 1.0 for i in range(41)}}), "max_values_per_event"),
        (lambda run: run.log({"s": "y" * 65}), "max_string_length"),
        (lambda run: run.log({"i": 2**63}), "64 bits"),
        (lambda run: run.log({"b": b"\xff\xfe"}), "unsupported type"),
        (lambda run: run.log({"a": 1.0}, step=-1), "step"),
    ],
    ids=["surrogate-key", "surrogate-string", "surrogate-nested-key", "surrogate-override", "surrogate-define",
         "deep-nesting", "huge-map", "giant-string", "int-beyond-int64", "bytes", "negative-step"],
)
def test_the_sdk_refuses_each_kind_of_bad_input_the_consumer_dead_letters(tmp_path: Path, call: Any, match: str) -> None:
    run = mf.init(project="fuzz", mode="offline", spool_dir=tmp_path, limits=LIMITS)
    with pytest.raises(MetricfoldError, match=match):
        call(run)
    with pytest.warns(mf.SpoolWarning):
        run.finish()
    assert run.report is not None and run.report.errors == 0
    assert _events_in_spool(tmp_path) == 2  # RunStarted, RunFinished: the refused call sent nothing
