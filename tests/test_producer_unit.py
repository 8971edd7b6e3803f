"""The trainer SDK without a broker: offline runs write their events to a spool file, which we decode."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import producer as mf
from producer.spool_file import read_spool
from schemas.codec import decode
from schemas.errors import LimitExceeded, MetricfoldError, ValidationError
from schemas.limits import Limits
from schemas.tensors import from_npy, tensor_stats

REPO = Path(__file__).resolve().parent.parent


def flatten(name: str, datum: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Decoded record -> its events in order; LogBlock events as Log-like dicts {seq, step, values}."""
    if name != "metricfold.Batch":
        return [(name, datum)]
    events: list[tuple[str, dict[str, Any]]] = []
    for item_name, item in datum["items"]:
        if item_name != "metricfold.LogBlock":
            events.append((item_name, item))
            continue
        j = 0
        for i, step in enumerate(item["steps"]):
            values: dict[tuple[str, ...], Any] = {}
            for _ in range(item["counts"][i]):
                values[tuple(item["paths"][item["path_idx"][j]])] = item["values"][j]
                j += 1
            for extra in item["extras"]:
                if extra["event"] == i:
                    values[tuple(item["paths"][extra["path"]])] = extra["value"]
            seq = item["first_seq"] + i
            events.append(("log", {"seq": seq, "step": step, "ts_ms": item["ts_ms"][i], "values": values,
                                   "producer_id": datum["producer_id"]}))
    return events


def spooled_events(run: mf.Run) -> list[tuple[str, dict[str, Any]]]:
    assert run.report is not None and run.report.spool_path is not None
    events = []
    for key, value in read_spool(run.report.spool_path):
        assert key == run.path
        events.extend(flatten(*decode(value)))
    return events


def finish_quietly(run: mf.Run, exit_code: int = 0) -> list[tuple[str, dict[str, Any]]]:
    with pytest.warns(mf.SpoolWarning, match="metricfold sync"):
        run.finish(exit_code)
    return spooled_events(run)


@pytest.fixture
def offline(tmp_path: Path) -> Any:
    def start(**kwargs: Any) -> mf.Run:
        return mf.init(spool_dir=tmp_path, **{"project": "unit", "mode": "offline", **kwargs})

    yield start
    for run in mf.open_runs():
        with pytest.warns(mf.SpoolWarning):
            run.finish()


def test_public_exports_are_pinned() -> None:
    assert sorted(mf.__all__) == sorted([
        "Api", "ApiRun", "ApiSummary", "BrokerUnavailable", "ConfigError", "LimitExceeded", "Limits",
        "MetricfoldError", "Run", "SendReport", "SenderOptions", "Settings", "SpoolWarning", "Summary",
        "SyncReport", "ValidationError", "current_run", "define_metric", "finish", "init", "log", "open_runs",
        "run", "summary", "sync",
    ])
    for name in mf.__all__:
        if name not in ("run", "summary"):
            assert getattr(mf, name) is not None


def test_every_event_carries_path_producer_id_and_gapless_seq(offline: Any) -> None:
    run = offline(entity="team", run_id="abc", name="n", config={"lr": np.float32(0.5)}, tags=["x"])
    run.define_metric("loss", summary="min")
    run.log({"loss": 1.0})
    run.summary["best"] = 2
    events = finish_quietly(run)

    assert [name for name, _ in events] == [
        "metricfold.RunStarted", "metricfold.DefineMetric", "log", "metricfold.SummaryUpdate", "metricfold.RunFinished"
    ]
    assert [datum["seq"] for _, datum in events] == [0, 1, 2, 3, 4]
    assert {datum["producer_id"] for _, datum in events} == {run.producer_id}
    started = events[0][1]
    assert (started["entity"], started["project"], started["run_id"]) == ("team", "unit", "abc")
    assert (started["name"], started["config_json"], started["tags"]) == ("n", '{"lr": 0.5}', ["x"])
    assert run.path == "team/unit/abc" and run.id == "abc"


def test_fresh_run_ids_are_short_and_distinct(offline: Any) -> None:
    first, second = offline(), offline()
    assert first.id != second.id and len(first.id) == 8 and first.id.isalnum()
    assert first.producer_id != second.producer_id


def test_auto_step_counts_from_zero_and_continues_after_an_explicit_step(offline: Any) -> None:
    run = offline()
    run.log({"a": 1.0})
    run.log({"a": 1.0})
    run.log({"a": 1.0}, step=10)
    run.log({"a": 1.0})
    run.log({"a": 1.0}, step=3)
    run.log({"a": 1.0})
    logs = [d for n, d in finish_quietly(run) if n == "log"]
    assert [d["step"] for d in logs] == [0, 1, 10, 11, 3, 4]


def test_logged_values_arrive_as_leaf_paths_with_their_wire_values(offline: Any) -> None:
    run = offline()
    big = np.arange(100, dtype=np.int16)
    run.log({"loss": 0.5, "grad": {"norm": np.float64(2.0), "steps": 4}, "tag": "x", "small": np.ones(3), "w": big})
    (values,) = [d["values"] for n, d in finish_quietly(run) if n == "log"]
    assert values[("loss",)] == 0.5 and values[("grad", "norm")] == 2.0 and values[("grad", "steps")] == 4
    assert values[("tag",)] == "x"
    assert values[("small",)] == ("metricfold.List", {"items": [1.0, 1.0, 1.0]})
    name, tensor = values[("w",)]
    assert name == "metricfold.Tensor" and from_npy(tensor["npy"]).tobytes() == big.tobytes()


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({1: 1.0}, ValidationError, "non-empty strings"),
        ({"": 1.0}, ValidationError, "non-empty strings"),
        ({"ok": 1.0, "bad": object()}, ValidationError, "'bad' has unsupported type builtins.object"),
        ({"x" * 300: 1.0}, LimitExceeded, "max_key_length"),
        ({"s": "y" * 70_000}, LimitExceeded, "max_string_length"),
        ({f"k{i}": 1.0 for i in range(10_001)}, LimitExceeded, "max_values_per_event"),
        ({"t": np.zeros(3_000_000)}, LimitExceeded, "max_tensor_bytes"),
        ("not a dict", ValidationError, "dict"),
    ],
    ids=["int-key", "empty-key", "type", "key-length", "string-length", "values-per-event", "tensor-bytes", "not-dict"],
)
def test_invalid_log_raises_and_sends_nothing(offline: Any, data: Any, error: type[Exception], match: str) -> None:
    run = offline(limits=Limits(max_tensor_bytes=16 * 1024 * 1024))
    with pytest.raises(error, match=match):
        run.log(data)
    with pytest.raises(ValidationError, match="step"):
        run.log({"a": 1.0}, step=-1)
    events = finish_quietly(run)
    assert [name for name, _ in events] == ["metricfold.RunStarted", "metricfold.RunFinished"]
    assert [d["seq"] for _, d in events] == [0, 1]


def test_an_event_larger_than_a_kafka_record_is_refused(offline: Any) -> None:
    run = offline()
    with pytest.raises(LimitExceeded, match="Kafka record"):
        run.log({"a": np.zeros(2_000_000), "b": np.zeros(2_000_000)})  # 2 x 16 MB > 24 MiB
    finish_quietly(run)


def test_batches_are_cut_below_the_kafka_record_limit(offline: Any) -> None:
    run = offline()
    for i in range(7):
        run.log({"t": np.full(1_000_000, float(i))})  # 8 MB each
    with pytest.warns(mf.SpoolWarning):
        run.finish()
    assert run.report is not None and run.report.spool_path is not None
    records = read_spool(run.report.spool_path)
    assert all(len(value) <= Limits().kafka_max_record_bytes for _, value in records)
    assert len(records) > 1
    logs = [d for r in records for n, d in flatten(*decode(r[1])) if n == "log"]
    assert [from_npy(d["values"][("t",)][1]["npy"])[0] for d in logs] == [float(i) for i in range(7)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"summary": "min,median"}, "unknown summary option 'median'"),
        ({"summary": "best"}, "needs objective"),
        ({"summary": ["max"], "objective": "up"}, "minimize' or 'maximize"),
        ({"summary": ""}, "names no option"),
        ({"objective": "minimize", "goal": "maximize"}, "disagree"),
    ],
)
def test_invalid_define_metric_raises_and_sends_nothing(offline: Any, kwargs: dict[str, Any], match: str) -> None:
    run = offline()
    with pytest.raises(ValidationError, match=match):
        run.define_metric("acc", **kwargs)
    assert [n for n, _ in finish_quietly(run)] == ["metricfold.RunStarted", "metricfold.RunFinished"]


def test_define_metric_sends_normalised_options(offline: Any) -> None:
    run = offline()
    run.define_metric("acc", summary=" Best, MAX ,max", goal="Maximize", step_metric="epoch", hidden=True)
    run.define_metric("val/*", summary=["last", "mean"], overwrite=True)
    defs = [d for n, d in finish_quietly(run) if n == "metricfold.DefineMetric"]
    assert [(d["name"], d["summary"], d["objective"], d["step_metric"], d["hidden"], d["overwrite"]) for d in defs] == [
        ("acc", ["max", "best"], "maximize", "epoch", True, False),
        ("val/*", ["mean", "last"], None, None, False, True),
    ]


def test_summary_reads_its_own_writes_and_last_logged_values(offline: Any) -> None:
    run = offline()
    run.log({"loss": 0.5, "grad": {"norm": 1.0}})
    run.log({"loss": 0.25, "grad": {"max": 3}})
    weights = np.linspace(0, 1, 50)
    run.summary.update({"weights": weights, "cfg": {"a": 1}})
    run.summary["loss"] = 0.1
    assert run.summary["loss"] == 0.1  # the override wins
    assert run.summary["grad"] == {"norm": 1.0, "max": 3}
    assert run.summary["weights"] == tensor_stats(weights)
    assert run.summary.get_tensor("weights").tobytes() == weights.tobytes()
    assert run.summary["cfg"] == {"a": 1}
    del run.summary["loss"]
    assert "loss" not in run.summary  # removed keys stay hidden ...
    run.log({"loss": 0.3})
    assert run.summary["loss"] == 0.3  # ... until logged again
    run.summary["cfg"] = None  # None removes, like del
    assert "cfg" not in run.summary
    updates = [d for n, d in finish_quietly(run) if n == "metricfold.SummaryUpdate"]
    assert [(sorted(u["set"]), u["remove"]) for u in updates] == [
        (["cfg", "weights"], []), (["loss"], []), ([], ["loss"]), ([], ["cfg"])
    ]


def test_summary_rejects_bad_keys_and_sends_nothing(offline: Any) -> None:
    run = offline()
    with pytest.raises(ValidationError):
        run.summary[""] = 1
    with pytest.raises(ValidationError):
        run.summary.update({"ok": 1, "bad": object()})
    assert "ok" not in run.summary
    assert [n for n, _ in finish_quietly(run)] == ["metricfold.RunStarted", "metricfold.RunFinished"]


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [({"entity": "a/b"}, "entity"), ({"project": "p:q"}, "project"), ({"run_id": "{x}"}, "run_id"),
     ({"run_id": "has space"}, "run_id"), ({"mode": "dryrun"}, "mode"), ({"tags": "solo"}, "tags"),
     ({"config": {"x": object()}}, "JSON")],
)
def test_bad_run_paths_and_options_are_refused_before_anything_starts(offline: Any, kwargs: Any, what: str) -> None:
    before = len(mf.open_runs())
    with pytest.raises(ValidationError, match=what):
        offline(**kwargs)
    assert len(mf.open_runs()) == before


def test_module_level_twins_act_on_the_most_recent_open_run(offline: Any) -> None:
    first: mf.Run = offline()
    second: mf.Run = offline()
    assert mf.run is second and mf.current_run() is second
    mf.log({"a": 1.0})
    mf.define_metric("a", summary="max")
    mf.summary["x"] = 1
    finish_quietly(second)
    assert mf.run is first
    assert second.summary["x"] == 1 and "a" in second.summary
    with pytest.warns(mf.SpoolWarning):
        mf.finish()
    assert mf.run is None
    with pytest.raises(MetricfoldError, match="init"):
        mf.log({"a": 1.0})
    with pytest.raises(MetricfoldError, match="finished"):
        first.log({"a": 1.0})


def test_with_block_finishes_with_exit_code_one_on_an_exception(offline: Any) -> None:
    with pytest.warns(mf.SpoolWarning), pytest.raises(RuntimeError), offline() as run:
        raise RuntimeError("boom")
    assert run.finished
    assert spooled_events(run)[-1][1]["exit_code"] == 1


@pytest.mark.parametrize(("tail", "exit_code"), [("", 0), ("raise SystemError('crash')", 1)])
def test_open_runs_are_finished_at_exit(tmp_path: Path, tail: str, exit_code: int) -> None:
    script = textwrap.dedent(
        f"""
        import producer as mf
        run = mf.init(project="unit", run_id="atexit", mode="offline", spool_dir={str(tmp_path)!r})
        run.log({{"a": 1.0}})
        {tail}
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, check=False, timeout=120)
    (spool,) = tmp_path.glob("*.spool.avro")
    events = [e for _, v in read_spool(spool) for e in flatten(*decode(v))]
    assert [n for n, _ in events] == ["metricfold.RunStarted", "log", "metricfold.RunFinished"]
    assert events[-1][1]["exit_code"] == exit_code


class _Cluster:
    """The two ClusterMetadata calls the partitioners make, over a fixed partition set."""

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return {"events"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.partitions)

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.partitions)


@pytest.mark.parametrize("partitions", [[0], list(range(12)), [0, 2, 5, 7], list(range(100))])
def test_the_sdk_partitions_a_run_where_kafka_pythons_default_and_the_java_client_do(partitions: list[int]) -> None:
    from kafka.partitioner.default import DefaultPartitioner

    from producer.transport import _RunPartitioner

    ours, default = _RunPartitioner(), DefaultPartitioner()
    cluster = _Cluster(partitions)
    rng = np.random.default_rng(len(partitions))
    keys = [f"team/vision/{rng.integers(0, 2**63):x}".encode() for _ in range(300)]
    expected = [default.partition("events", None, key, None, None, cluster) for key in keys]
    assert [ours.partition("events", None, key, None, None, cluster) for key in keys] == expected
    assert [ours.partition("events", None, key, None, None, cluster) for key in keys] == expected  # hashes remembered
    assert set(expected) <= set(partitions) and (len(partitions) > 12 or set(expected) == set(partitions))
    assert ours.partition("events", None, None, None, None, cluster) in partitions  # no key: random, as the default


class _Acked:  # a Delivery Kafka acknowledged
    done, ok, error = True, True, None


def _counting_transport(monkeypatch: pytest.MonkeyPatch, sent: dict[str, int], delivery: Any = lambda run: _Acked()) -> None:
    """Replace the SDK's Kafka transport with one that counts the records of each run in *sent* and answers each
    with ``delivery(run path)``."""
    import producer.sender as sender_module

    class CountingTransport:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def connect(self) -> None:
            pass

        def send(self, key: bytes, value: bytes) -> object:
            run = key.decode()
            sent[run] = sent.get(run, 0) + 1
            return delivery(run)

        def flush(self, timeout_s: float | None) -> None:
            pass

        def close(self, timeout_s: float = 0.0) -> None:
            pass

    monkeypatch.setattr(sender_module, "KafkaTransport", CountingTransport)


def test_a_run_waiting_for_acks_does_not_hold_up_the_other_runs_of_its_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One dispatcher thread serves every run of a process. A run over max_inflight_bytes (its broker
    stalled) must wait for its acks without holding that thread: the other runs keep sending. Kafka is
    replaced by a transport whose records for one run are never acknowledged until the test fails them
    (as kafka-python's delivery timeout would), after which that run spools and finishes."""
    sent: dict[str, int] = {}
    stalled = [True]

    class Stalled:  # a Delivery that is acknowledged never, or fails once the stall "times out"
        @property
        def done(self) -> bool:
            return not stalled[0]

        ok = False
        error = "KafkaTimeoutError: delivery timed out (the test's stalled broker)"

    _counting_transport(monkeypatch, sent, lambda run: Stalled() if run.endswith("/stuck") else _Acked())
    options = mf.SenderOptions(linger_s=0.01, max_inflight_bytes=1, flush_timeout_s=1.0)
    runs = {name: mf.init(entity="team", project="p", run_id=name, spool_dir=tmp_path, sender_options=options)
            for name in ("stuck", "other")}
    for step in range(30):
        for run in runs.values():
            run.log({"loss": float(step)})
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while sent.get("team/p/other", 0) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sent.get("team/p/stuck") == 1, "the stalled run sent past its in-flight limit"
    assert sent.get("team/p/other", 0) >= 10, f"the other run was held up: {sent}"

    runs["other"].finish()
    assert runs["other"].report is not None and runs["other"].report.records_sent == sent["team/p/other"]
    stalled[0] = False  # the stuck run's record fails: it goes to its spool with everything after it
    with pytest.warns(mf.SpoolWarning, match="timed out"):
        runs["stuck"].finish()
    report = runs["stuck"].report
    assert report is not None and report.records_sent == 0 and report.records_spooled >= 2


def test_the_ticks_of_a_process_stretch_when_many_of_its_runs_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each logging run sends one record per tick, and the consumer's cost is mostly per record: a process
    sends about max_records_per_s records a second, its ticks stretching to (runs logging) / max_records_per_s
    apart when linger_s would send more."""
    import producer.sender as sender_module

    sent: dict[str, int] = {}
    _counting_transport(monkeypatch, sent)
    ticks = [sender_module.tick_s(mf.SenderOptions(), runs) for runs in (1, 40, 50, 200, 1000)]
    assert ticks == [0.2, 0.2, 0.25, 1.0, 1.0]
    for bad in ({"max_records_per_s": 0}, {"max_linger_s": float("nan")}, {"linger_s": -1.0}, {"max_batch_events": "8"}):
        with pytest.raises(ValidationError, match=f"SenderOptions.{next(iter(bad))} must be a number"):
            mf.SenderOptions(**bad)

    def records_per_run(runs: int) -> float:
        options = mf.SenderOptions(linger_s=0.05, max_records_per_s=40)
        opened = [mf.init(entity="team", project="tick", run_id=f"n{runs}r{i}", spool_dir=tmp_path, sender_options=options)
                  for i in range(runs)]
        began = time.monotonic()
        while time.monotonic() - began < 1.5:
            for run in opened:
                run.log({"loss": 1.0})
            time.sleep(0.01)
        for run in opened:
            run.finish()
        return sum(sent[f"team/tick/n{runs}r{i}"] for i in range(runs)) / runs

    alone, crowded = records_per_run(1), records_per_run(20)  # ticks 0.05 s apart, then 20 / 40 = 0.5 s
    assert alone >= 15, f"one run sent {alone} records in 1.5 s with 0.05 s ticks"
    assert crowded <= 8, f"20 runs sent {crowded} records each in 1.5 s: the ticks did not stretch to 0.5 s"
