"""The trainer SDK against the real broker: what is logged is what reaches the topic, exactly once."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_producer_unit import flatten

import producer as mf
from producer.sender import SenderOptions
from schemas.codec import decode, default_codec
from schemas.settings import Settings
from schemas.tensors import from_npy

from support import consume_all

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
ReadRecords = Callable[..., list[tuple[bytes, bytes]]]


def events_on_topic(settings: Settings, read_records: ReadRecords, count: int) -> list[tuple[str, dict[str, Any]]]:
    records = read_records(settings, count)
    assert len(records) == count
    return [event for _, value in records for event in flatten(*decode(value))]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_events_of_every_type_round_trip_through_kafka(settings: Settings, read_records: ReadRecords) -> None:
    weights = np.random.default_rng(7).standard_normal((16, 16)).astype(np.float32)
    run = mf.init(entity="team", project="it", name="round-trip", config={"lr": 0.1}, tags=["t"], settings=settings)
    run.define_metric("acc", summary="best", objective="maximize")
    run.log({"loss": 0.5, "acc": 0.75})
    run.log({"grad": {"norm": 1.5}, "epoch": 2, "note": "hi", "nan": float("nan"), "w": weights}, step=7)
    run.summary.update({"final": weights, "best": 0.9})
    del run.summary["best"]
    run.finish(exit_code=3)
    assert run.report is not None and run.report.records_spooled == 0

    records = read_records(settings, run.report.records_sent)
    assert {key for key, _ in records} == {run.path.encode()}
    events = [event for _, value in records for event in flatten(*decode(value))]

    assert [name for name, _ in events] == [
        "metricfold.RunStarted", "metricfold.DefineMetric", "log", "log", "metricfold.SummaryUpdate",
        "metricfold.SummaryUpdate", "metricfold.RunFinished",
    ]
    assert [d["seq"] for _, d in events] == list(range(7))
    started, define, first, second, update, remove, finished = (d for _, d in events)
    assert (started["name"], started["config_json"], started["tags"]) == ("round-trip", '{"lr": 0.1}', ["t"])
    assert (define["name"], define["summary"], define["objective"]) == ("acc", ["best"], "maximize")
    assert (first["step"], first["values"]) == (0, {("loss",): 0.5, ("acc",): 0.75})
    assert second["step"] == 7 and second["values"][("grad", "norm")] == 1.5
    assert second["values"][("epoch",)] == 2 and second["values"][("note",)] == "hi"
    assert second["values"][("nan",)] != second["values"][("nan",)]
    kind, tensor = second["values"][("w",)]
    assert kind == "metricfold.Tensor" and tensor["kind"] == "numpy.ndarray"
    logged = from_npy(tensor["npy"])
    assert logged.dtype == weights.dtype and logged.shape == weights.shape and logged.tobytes() == weights.tobytes()
    assert from_npy(update["set"]["final"][1]["npy"]).tobytes() == weights.tobytes()
    assert update["set"]["best"] == 0.9 and remove["remove"] == ["best"]
    assert finished["exit_code"] == 3


def test_every_record_starts_with_magic_and_the_writer_fingerprint(settings: Settings, read_records: ReadRecords) -> None:
    run = mf.init(project="it", settings=settings)
    run.log({"a": 1.0})
    run.finish()
    assert run.report is not None
    for _, value in read_records(settings, run.report.records_sent):
        name, _ = decode(value)
        assert value[:2] == b"\xc3\x01"
        assert value[:10] == default_codec().header(name)


def test_refused_log_calls_send_nothing(settings: Settings, read_records: ReadRecords) -> None:
    run = mf.init(project="it", settings=settings)
    with pytest.raises(mf.ValidationError):
        run.log({"ok": 1.0, "bad": {1: 2.0}})
    with pytest.raises(mf.ValidationError):
        run.define_metric("x", summary="best")
    run.log({"ok": 2.0})
    run.finish()
    assert run.report is not None
    events = events_on_topic(settings, read_records, run.report.records_sent)
    assert [(n, d["seq"]) for n, d in events] == [("metricfold.RunStarted", 0), ("log", 1), ("metricfold.RunFinished", 2)]
    assert events[1][1]["values"] == {("ok",): 2.0}


def test_log_without_broker_spools_and_sync_delivers_each_event_once(
    settings: Settings, read_records: ReadRecords, tmp_path: Path
) -> None:
    unreachable = dataclasses.replace(settings, kafka=f"127.0.0.1:{closed_port()}")
    run = mf.init(project="it", settings=unreachable, spool_dir=tmp_path,
                  sender_options=SenderOptions(connect_timeout_s=1.0))
    for step in range(5000):
        run.log({"loss": 1.0 / (step + 1), "acc": step / 5000})
    run.summary["note"] = "offline"
    with pytest.warns(mf.SpoolWarning, match=str(tmp_path)):
        run.finish()
    assert run.report is not None and run.report.records_sent == 0 and run.report.records_spooled > 0

    first = mf.sync(tmp_path, settings)
    again = mf.sync(tmp_path, settings)

    assert first.records == run.report.records_spooled and first.events == 5003
    assert again.records == 0 and again.up_to_date == first.files and first.ok and again.ok
    events = events_on_topic(settings, read_records, first.records)
    ids = Counter((d.get("producer_id", run.producer_id), d["seq"]) for _, d in events)
    assert sorted(seq for _, seq in ids) == list(range(5003)) and set(ids.values()) == {1}


def test_runs_of_one_process_wait_for_unanswering_brokers_once_not_each(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thread delivers for every run of a process: when the brokers do not answer (connects time out),
    the first run's failed connect is remembered and the others go to the spool at once."""
    from producer import transport

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    filler = socket.create_connection(server.getsockname(), 1.0)  # the accept queue is full: SYNs now go unanswered
    probes: list[str] = []
    real_probe = transport.KafkaTransport._probe

    def counted_probe(self: transport.KafkaTransport) -> None:
        probes.append(self.settings.kafka)
        real_probe(self)

    monkeypatch.setattr(transport.KafkaTransport, "_probe", counted_probe)
    silent = dataclasses.replace(settings, kafka=f"127.0.0.1:{server.getsockname()[1]}")
    try:
        runs = [mf.init(project="it", settings=silent, spool_dir=tmp_path, sender_options=SenderOptions(connect_timeout_s=1.0))
                for _ in range(5)]
        for run in runs:
            run.log({"x": 1.0})
        with pytest.warns(mf.SpoolWarning):
            for run in runs:
                run.finish()
    finally:
        filler.close()
        server.close()
    assert all(run.report is not None and run.report.records_spooled > 0 and run.report.records_sent == 0 for run in runs)
    assert len(probes) == 1, probes  # without the memory: one timed-out connect per run, one after the other
    assert all("unreachable" in (run.report.reason or "") for run in runs if run.report is not None)


def test_two_processes_writing_one_run_keep_distinct_producer_ids(
    settings: Settings, read_records: ReadRecords
) -> None:
    script = textwrap.dedent(
        """
        import sys
        import producer as mf
        run = mf.init(entity="team", project="it", run_id="ranked", name=f"rank{sys.argv[1]}")
        for step in range(100):
            run.log({"loss": float(step)})
        run.finish()
        print(run.report.records_sent)
        """
    )
    env = {**os.environ, "METRICFOLD_KAFKA": settings.kafka, "METRICFOLD_TOPIC": settings.topic}
    ranks = [
        subprocess.Popen([sys.executable, "-c", script, str(rank)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        for rank in range(2)
    ]
    sent = [int(proc.communicate(timeout=120)[0].strip()) for proc in ranks]
    assert all(proc.returncode == 0 for proc in ranks)

    records = read_records(settings, sum(sent))
    assert {key for key, _ in records} == {b"team/it/ranked"}
    per_producer: dict[str, list[int]] = {}
    for _, value in records:
        name, datum = decode(value)
        for _, event in flatten(name, datum):
            per_producer.setdefault(datum["producer_id"], []).append(event["seq"])
    assert len(per_producer) == 2
    assert all(sorted(seqs) == list(range(102)) for seqs in per_producer.values())


def test_api_summary_updates_publish_only_the_changed_keys(settings: Settings, read_records: ReadRecords) -> None:
    run = mf.init(project="it", run_id="edited", settings=settings)
    run.log({"loss": 0.5})
    run.finish()
    assert run.report is not None
    consume_all(settings)  # the handle reads the folded summary first

    with mf.Api(settings).run(run.path) as handle:
        assert handle.summary["loss"] == 0.5
        handle.summary["note"] = "checked"
        handle.summary.update({"weights": np.arange(40.0), "extra": 1})
        del handle.summary["extra"]
        handle.summary.update()  # nothing changed in place: publishes nothing
        assert handle.summary["note"] == "checked" and "extra" not in handle.summary

    records = read_records(settings, run.report.records_sent + 3)
    updates = [decode(value)[1] for _, value in records[run.report.records_sent :]]
    assert [(sorted(u["set"]), u["remove"], u["seq"]) for u in updates] == [
        (["note"], [], 0), (["extra", "weights"], [], 1), ([], ["extra"], 2)
    ]
    assert len({u["producer_id"] for u in updates}) == 1 and updates[0]["producer_id"] != run.producer_id
