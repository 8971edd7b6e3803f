"""`metricfold sync` against the real broker: what the SDK would not send is refused, a record too large for
Kafka does not hold up the others, and every file's fate is said (and the exit code), not a repr."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import producer as mf
from producer.spool import sync
from producer.spool_file import SpoolWriter, read_spool
from schemas.codec import default_codec
from schemas.limits import Limits
from schemas.settings import Settings

from support import sdk_spool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
ReadRecords = Callable[..., list[tuple[bytes, bytes]]]


class Producer:
    """Records of run e/p/<run_id> written straight with the codec (as a hand-edited or foreign spool would be)."""

    def __init__(self, run_id: str) -> None:
        self.path = f"e/p/{run_id}"
        self.envelope = {"entity": "e", "project": "p", "run_id": run_id, "producer_id": str(uuid.uuid4())}
        self.seq = 0

    def event(self, kind: str, /, **fields: Any) -> tuple[str, dict[str, Any]]:
        self.seq += 1
        return kind, {**self.envelope, "seq": self.seq - 1, "ts_ms": 1_700_000_000_000 + self.seq, **fields}

    def started(self, **fields: Any) -> tuple[str, dict[str, Any]]:
        return self.event("metricfold.RunStarted", **{"name": None, "config_json": "{}", "tags": [], **fields})

    def batch(self, *items: tuple[str, dict[str, Any]]) -> bytes:
        return default_codec().encode("metricfold.Batch", {**self.envelope, "items": list(items)})

    def spool(self, directory: Path, *values: bytes) -> Path:
        writer = SpoolWriter(directory, self.path, self.envelope["producer_id"])
        for value in values:
            writer.append(self.path, value)
        writer.close()
        return writer.path


def on_topic(settings: Settings, read_records: ReadRecords, at_least: int) -> list[bytes]:
    """Every record value on the topic (waits for *at_least* + 1 for a while, so that extra ones show)."""
    return [value for _, value in read_records(settings, at_least + 1, timeout=3.0)]


BAD: dict[str, tuple[Callable[[Producer], tuple[str, dict[str, Any]]], str]] = {
    "a tag with ESC": (lambda p: p.started(tags=["\x1b[31mevil"]), "tag"),
    "a lone surrogate in config": (lambda p: p.started(config_json=json.dumps({"path": "\udc00"})), "config"),
    "a bidi override in a summary key": (
        lambda p: p.event("metricfold.SummaryUpdate", set={"\u202eevil": 1.0}, remove=[]), "U+202E"),
    "a run id the SDK refuses": (lambda p: p.started(run_id="no/slash"), "run_id"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_record_the_sdk_would_refuse_is_not_published_and_the_rest_is(
    settings: Settings, read_records: ReadRecords, tmp_path: Path, case: str
) -> None:
    make_bad, words = BAD[case]
    producer = Producer("mixed")
    good_first = producer.batch(producer.started())
    bad = producer.batch(make_bad(producer))
    good_last = producer.batch(producer.event("metricfold.RunFinished", exit_code=0))
    mixed = producer.spool(tmp_path, good_first, bad, good_last)
    clean = sdk_spool(tmp_path, "clean")

    report = sync(tmp_path, settings)
    again = sync(tmp_path, settings)

    results = {r.path: r for r in report.results}
    assert (results[mixed].status, results[mixed].sent, results[mixed].refused) == ("refused", 2, 1)
    assert "record 2 of 3 refused" in results[mixed].reason and words in results[mixed].reason
    assert results[clean].status == "sent" and not report.ok
    values = on_topic(settings, read_records, report.records)
    assert sorted(values) == sorted([good_first, good_last, *(v for _, v in read_spool(clean))])
    # the next sync sends nothing again, and still says that the refused record is not on the topic
    again_results = {r.path: r for r in again.results}
    assert (again_results[mixed].status, again_results[mixed].already, again_results[mixed].refused) == ("refused", 2, 1)
    assert again_results[clean].status == "up to date" and again.records == 0


def test_a_record_too_large_for_kafka_is_refused_for_its_size_and_later_files_are_sent(
    settings: Settings, read_records: ReadRecords, tmp_path: Path
) -> None:
    producer = Producer("big")
    big = producer.spool(tmp_path, producer.batch(producer.started()) + b"\0" * (30 * 2**20))  # "a-..." sorts first
    big = big.rename(tmp_path / f"a-{big.name}")
    later = sdk_spool(tmp_path, "later")

    report = sync(tmp_path, settings)

    results = {r.path: r for r in report.results}
    assert (results[big].status, results[big].refused) == ("refused", 1)
    assert "30.0 MiB, more than the Kafka record limit of 24 MiB" in results[big].reason
    assert "did not acknowledge" not in results[big].reason
    assert results[later].status == "sent" and results[later].sent == len(read_spool(later))
    assert sorted(on_topic(settings, read_records, report.records)) == sorted(v for _, v in read_spool(later))


def test_a_refused_record_is_checked_again_and_sent_once_the_limits_allow_it(
    settings: Settings, read_records: ReadRecords, tmp_path: Path
) -> None:
    import numpy as np

    with pytest.warns(mf.SpoolWarning):
        run = mf.init(entity="e", project="p", run_id="tensor", mode="offline", spool_dir=tmp_path)
        run.summary["weights"] = np.zeros(4096)  # 32 KiB of .npy
        run.finish()
    assert run.report is not None and run.report.spool_path is not None
    path = run.report.spool_path
    records = len(read_spool(path))

    strict = sync(tmp_path, settings, limits=Limits(max_tensor_bytes=8192))
    relaxed = sync(tmp_path, settings)

    assert strict.results[0].status == "refused" and "max_tensor_bytes" in strict.results[0].reason
    assert relaxed.results[0].status == "sent" and relaxed.records == strict.results[0].refused
    assert json.loads(path.with_name(path.name + ".synced").read_text()) == {"records": records}
    assert len(on_topic(settings, read_records, records)) == records


def test_a_marker_of_minus_one_resends_nothing(settings: Settings, read_records: ReadRecords, tmp_path: Path) -> None:
    path = sdk_spool(tmp_path, "marked")
    path.with_name(path.name + ".synced").write_text('{"records": -1}')

    report = sync(tmp_path, settings)

    assert report.results[0].status == "skipped" and report.records == 0
    assert on_topic(settings, read_records, 0) == []


def test_a_torn_last_block_is_partial_and_the_complete_records_are_sent(
    settings: Settings, read_records: ReadRecords, tmp_path: Path
) -> None:
    path = sdk_spool(tmp_path, "torn")
    complete = [v for _, v in read_spool(path)]
    with path.open("ab") as torn:
        torn.write(b"\x02\x10partial")

    [result] = sync(tmp_path, settings).results

    assert result.status == "partial" and result.sent == len(complete) and "incomplete" in result.reason
    assert sorted(on_topic(settings, read_records, len(complete))) == sorted(complete)


def metricfold_sync(settings: Settings, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "sync", str(directory), "--kafka", settings.kafka, "--topic", settings.topic],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_the_command_prints_a_table_per_file_and_exits_non_zero_on_any_problem(settings: Settings, tmp_path: Path) -> None:
    clean_dir, mixed_dir = tmp_path / "clean", tmp_path / "mixed"
    clean = sdk_spool(clean_dir, "clean")
    sdk_spool(mixed_dir, "fine")
    (mixed_dir / "junk.spool.avro").write_bytes(b"not avro at all")

    ok = metricfold_sync(settings, clean_dir)
    bad = metricfold_sync(settings, mixed_dir)
    missing = metricfold_sync(settings, tmp_path / "nowhere")

    assert ok.returncode == 0, ok.stderr
    header, rule, row, total = ok.stdout.splitlines()
    assert header.split() == ["file", "sent", "already", "sent", "refused", "status"] and set(rule) <= {"-", " "}
    assert row.split()[:5] == [clean.name, str(len(read_spool(clean))), "0", "0", "sent"]
    assert total.startswith(f"{len(read_spool(clean))} records (5 events) sent to {settings.topic}")
    assert "SyncReport(" not in ok.stdout + bad.stdout
    assert bad.returncode == 1 and "junk.spool.avro" in bad.stdout and "skipped: not a spool file" in bad.stdout
    assert "1 of 2 spool files were not fully published" in bad.stderr
    assert missing.returncode == 2 and "does not exist" in missing.stderr and missing.stdout == ""
