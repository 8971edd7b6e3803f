"""The offline spool file: append-only Avro records of exactly the bytes that would have been sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastavro import parse_schema, writer

from producer.spool import sync
from producer.spool_file import SpoolWriter, read_spool
from schemas.errors import ConfigError
from schemas.settings import Settings

from support import sdk_spool

UNREACHABLE = Settings(kafka="127.0.0.1:9")  # discard port: nothing listens there


def test_spooled_records_read_back_in_order(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "e/p/r", "pid")
    for i in range(3):
        writer.append("e/p/r", bytes([i]) * 5)
    writer.close()
    assert read_spool(writer.path) == [("e/p/r", bytes([i]) * 5) for i in range(3)]


def test_a_torn_last_block_of_a_live_file_is_left_out(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "e/p/r", "pid")
    writer.append("e/p/r", b"first")
    writer.close()
    with open(writer.path, "ab") as torn:
        torn.write(b"\x02\x10partial")
    assert read_spool(writer.path) == [("e/p/r", b"first")]


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".synced")


def test_sync_skips_files_already_delivered_without_contacting_kafka(tmp_path: Path) -> None:
    path = sdk_spool(tmp_path)
    _marker(path).write_text(json.dumps({"records": len(read_spool(path))}))
    report = sync(tmp_path, UNREACHABLE)
    assert report.records == 0 and report.up_to_date == [path] and report.ok


def test_sync_without_kafka_says_so_per_file_and_marks_nothing(tmp_path: Path) -> None:
    path = sdk_spool(tmp_path)
    report = sync(tmp_path, UNREACHABLE, timeout_s=1.0)
    [result] = report.results
    assert not report.ok and result.status == "not sent" and "unreachable" in result.reason
    assert result.sent == 0 and not _marker(path).exists()


def test_a_missing_directory_or_a_plain_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        sync(tmp_path / "nowhere", UNREACHABLE)
    path = sdk_spool(tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        sync(path, UNREACHABLE)


def test_files_that_are_not_spool_files_are_skipped_with_the_reason_not_crashed_on(tmp_path: Path) -> None:
    (tmp_path / "random.spool.avro").write_bytes(bytes(range(256)) * 4)
    with (tmp_path / "other.spool.avro").open("wb") as fo:
        writer(fo, parse_schema({"type": "record", "name": "x.Other", "fields": [{"name": "a", "type": "int"}]}),
               [{"a": 1}])
    (tmp_path / "dir.spool.avro").mkdir()

    report = sync(tmp_path, UNREACHABLE)

    reasons = {r.path.name: (r.status, r.reason) for r in report.results}
    assert reasons == {
        "dir.spool.avro": ("skipped", "a directory, not a spool file"),
        "other.spool.avro": ("skipped", "not a spool file: an Avro file of 'x.Other' records, not metricfold.SpoolRecord"),
        "random.spool.avro": ("skipped", reasons["random.spool.avro"][1]),
    }
    assert reasons["random.spool.avro"][1].startswith("not a spool file: not an Avro container file")
    assert not report.ok


@pytest.mark.parametrize("marker", ['{"records": -1}', '{"records": true}', '{"records": 99}', "not json", "[]"])
def test_a_marker_sync_did_not_write_is_reported_and_nothing_is_sent(tmp_path: Path, marker: str) -> None:
    path = sdk_spool(tmp_path)
    _marker(path).write_text(marker)
    [result] = sync(tmp_path, UNREACHABLE).results  # Kafka is not even tried
    assert result.status == "skipped" and "marker" in result.reason and "delete it" in result.reason
    assert _marker(path).read_text() == marker
