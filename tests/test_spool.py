"""The offline spool file: append-only Avro records of exactly the bytes that would have been sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producer.spool import SpoolWriter, read_spool, sync
from schemas.errors import BrokerUnavailable
from schemas.settings import Settings

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


def test_sync_skips_files_already_delivered_without_contacting_kafka(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "e/p/r", "pid")
    writer.append("e/p/r", b"x")
    writer.close()
    writer.path.with_name(writer.path.name + ".synced").write_text(json.dumps({"records": 1}))
    report = sync(tmp_path, UNREACHABLE)
    assert report.records == 0 and report.skipped == [writer.path]


def test_sync_without_kafka_fails_clearly_and_marks_nothing(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "e/p/r", "pid")
    writer.append("e/p/r", b"x")
    writer.close()
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        sync(tmp_path, UNREACHABLE, timeout_s=1.0)
    assert not writer.path.with_name(writer.path.name + ".synced").exists()
