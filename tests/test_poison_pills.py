"""One bad record never stops the stream: whatever fails while decoding, folding or writing one run's records
goes to the dead-letter topic with its reason, and every valid record around it is folded, live and in replay.

Each test puts a failing record between valid ones of the same run (and of a second run), on the real broker,
and folds the topic with the real consumer into the real Redis. Where no real input makes a stage fail any
more (the checks now refuse it earlier), the stage's failure is injected around the real code: the fold
raising after it changed the state half-way, the checks that would have refused a lone surrogate taken out
(so that it reaches the Redis encoding), the Lua write handed a document it cannot parse.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaProducer

import consumer.consume.batch_fold
import consumer.fold.handlers
import consumer.store.calls
import consumer.store.client
from consumer.digest import digest_generation
from consumer.replay import replay
from consumer.store import Store
from schemas import codec
from schemas.settings import Settings

from support import consume_all, read_full_records

pytestmark = pytest.mark.integration

R1, R2 = "team/vision/r1", "team/vision/r2"
ENVELOPE = {"entity": "team", "project": "vision", "producer_id": "p-1", "ts_ms": 1}


def _log(run_id: str, seq: int, values: dict[str, Any]) -> bytes:
    return codec.encode("metricfold.Log", {**ENVELOPE, "run_id": run_id, "seq": seq, "step": seq, "values": values})


def _started(run_id: str, seq: int, config_json: str) -> bytes:
    return codec.encode("metricfold.RunStarted", {**ENVELOPE, "run_id": run_id, "seq": seq, "name": "poisoned",
                                                  "config_json": config_json, "tags": ["t"]})


def _publish(settings: Settings, bad: bytes) -> bytes:
    """r1: two valid logs, the bad record, two valid logs; r2's valid logs interleaved. Returns the bad one."""
    records = [
        (R1, _log("r1", 0, {"loss": 0.5})),
        (R2, _log("r2", 0, {"loss": 5.0})),
        (R1, _log("r1", 1, {"loss": 0.4})),
        (R1, bad),
        (R2, _log("r2", 1, {"loss": 4.0})),
        (R1, _log("r1", 3, {"loss": 0.3})),
        (R1, _log("r1", 4, {"loss": 0.2, "acc": 0.9})),
    ]
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    for key, value in records:
        producer.send(settings.topic, key=key.encode(), value=value)
    producer.flush()
    producer.close()
    return bad


def _assert_valid_ones_folded(store: Store) -> None:
    r1, r2 = store.read_run(R1), store.read_run(R2)
    assert r1["summary"]["loss"] == 0.2 and r1["summary"]["acc"] == 0.9
    assert "poison" not in r1["summary"] and not any("poison" in path for path in r1["flat"])
    assert int(r1["meta"]["events"]) == 4  # the four valid logs; the bad record counts as a dead letter
    assert r2["summary"]["loss"] == 4.0 and int(r2["meta"]["events"]) == 2


def _check_live_and_replay(settings: Settings, bad: bytes, reason: str) -> None:
    """Live: the valid records folded, the bad one dead-lettered once with *reason*. Replay: the same state."""
    report = consume_all(settings)
    with Store(settings) as store:
        _assert_valid_ones_folded(store)
        live = digest_generation(store)
    dead = read_full_records(settings, 1, topic=settings.dead_letter_topic)
    assert [r.value for r in dead] == [bad]
    assert reason in dict(dead[0].headers)["reason"].decode()
    assert report.dead_letters + report.undecodable == 1

    replayed = replay(settings, switch=True, progress=False)
    with Store(settings) as store:
        _assert_valid_ones_folded(store)
    assert replayed.digest == live
    # the replay counted the bad record (the same stats, so the same digest) but did not send it again
    assert [r.value for r in read_full_records(settings, 2, timeout=5, topic=settings.dead_letter_topic)] == [bad]


def test_an_undecodable_record_between_valid_ones(settings: Settings) -> None:
    bad = _publish(settings, b"\xc3\x01" + b"\x00" * 20)
    _check_live_and_replay(settings, bad, "undecodable")


def test_a_lone_surrogate_in_a_config_sent_by_an_old_sdk_is_refused_by_the_fold(settings: Settings) -> None:
    """The SDK refuses it now; a record from an SDK before that fix (or any other writer) holds it as a JSON
    escape, which used to stop the consumer in hiredis on every restart."""
    bad = _publish(settings, _started("r1", 2, '{"x": "\\udc00"}'))
    _check_live_and_replay(settings, bad, "not valid Unicode")


@pytest.fixture
def fold_raises_on_poison(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fold applies a record holding "poison" to the state, then raises (a bug, half-way through)."""
    real = consumer.consume.batch_fold.fold_record

    def fold_record(state: Any, record: Any, **kwargs: Any) -> Any:
        refused = real(state, record, **kwargs)
        if "poison" in repr(record):
            raise RuntimeError("a bug in the fold")
        return refused

    monkeypatch.setattr(consumer.consume.batch_fold, "fold_record", fold_record)
    yield


def test_an_exception_from_the_fold_between_valid_ones(settings: Settings, fold_raises_on_poison: None) -> None:
    bad = _publish(settings, _log("r1", 2, {"poison": 1.0}))
    _check_live_and_replay(settings, bad, "a bug in the fold")


@pytest.fixture
def checks_let_surrogates_through(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The consumer's config check without its Unicode check, as before the fix: the text reaches Redis."""
    def check_config_json(text: object) -> dict[str, Any]:
        config = json.loads(str(text))
        assert isinstance(config, dict)
        return config

    monkeypatch.setattr(consumer.fold.handlers, "check_config_json", check_config_json)
    yield


def test_a_record_that_cannot_be_encoded_for_redis_between_valid_ones(
    settings: Settings, checks_let_surrogates_through: None
) -> None:
    bad = _publish(settings, _started("r1", 2, '{"x": "\\udc00"}'))
    _check_live_and_replay(settings, bad, "surrogates not allowed")  # the changes, or the fold state, alone


@pytest.fixture
def lua_refuses_poison(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], int]]:
    """apply_runs gets a document Lua's JSON parser refuses whenever the runs' changes hold "poison": the real
    script fails in the real Redis. Yields how many calls were refused."""
    real = consumer.store.calls._encode_runs
    refused = 0

    def encode_runs(runs: Any, writes: Any) -> bytes:
        nonlocal refused
        document = real(runs, writes)
        if b"poison" in document:
            refused += 1
            return b"{not json"
        return document

    monkeypatch.setattr(consumer.store.calls, "_encode_runs", encode_runs)
    yield lambda: refused


def test_a_write_the_lua_script_refuses_between_valid_ones(
    settings: Settings, lua_refuses_poison: Callable[[], int]
) -> None:
    bad = _publish(settings, _log("r1", 2, {"poison": 1.0}))
    _check_live_and_replay(settings, bad, "Redis refused a write")
    assert lua_refuses_poison() >= 2  # the whole batch, then the record alone


def test_events_refused_in_a_batch_that_failed_are_dead_lettered_once(
    settings: Settings, lua_refuses_poison: Callable[[], int]
) -> None:
    """The first pass sends the refused define to the dead letters, then the batch's write fails; reading it
    again (one record at a time) must not send it a second time."""
    refused_define = codec.encode("metricfold.DefineMetric", {
        **ENVELOPE, "run_id": "r1", "seq": 5, "name": "acc", "summary": ["best"], "objective": None,
        "step_metric": None, "hidden": False, "overwrite": False})
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    producer.send(settings.topic, key=R1.encode(), value=refused_define)
    producer.flush()
    producer.close()
    bad = _publish(settings, _log("r1", 2, {"poison": 1.0}))

    report = consume_all(settings)

    dead = read_full_records(settings, 3, timeout=5, topic=settings.dead_letter_topic)
    assert sorted(r.value for r in dead) == sorted([refused_define, bad])
    assert report.dead_letters == 2 and lua_refuses_poison() >= 2
    with Store(settings) as store:
        _assert_valid_ones_folded(store)


def test_only_errors_a_script_raised_on_its_data_count_as_the_records_fault() -> None:
    """A record is dead-lettered for a script error on its data; Redis unable to take writes (out of memory,
    read-only, loading, busy, a permission the consumer's user lacks) is waited out instead."""
    import redis

    data = redis.exceptions.ResponseError("user_script:1: Expected value but found invalid token script: 3684ed")
    assert consumer.store.client._script_error(data)
    for setup in (
        redis.exceptions.ResponseError("The user executing the script can't run this command or subcommand script: a60f"),
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'. script: a60f"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica. script: a60f"),
        redis.exceptions.ResponseError("BUSY Redis is busy running a script."),
        redis.exceptions.ResponseError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.NoPermissionError("this user has no permissions to run the 'evalsha' command"),
    ):
        assert not consumer.store.client._script_error(setup), setup
