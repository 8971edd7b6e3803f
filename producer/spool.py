"""The offline spool: records that could not (or were not meant to) reach Kafka, kept in a local file.

One spool file per producer (per open run per process), ``<run_id>-<producer_id>.spool.avro``: an Avro
object container file of ``{key: string, value: bytes}`` records, where ``value`` is exactly the
single-object encoded record that would have been sent. It is append-only; each append is flushed to
the OS, and the file is fsynced when the run finishes.

``sync(directory, settings)`` publishes every spool file under *directory* and, once Kafka acknowledged a
file's records, writes ``<file>.synced`` with how many records were delivered. A second sync sends only
records appended since; even a resent record is harmless, because the consumer deduplicates events by
(producer id, seq).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from fastavro import parse_schema, reader
from fastavro.write import Writer

from producer.transport import KafkaTransport
from schemas.codec import default_codec
from schemas.errors import BrokerUnavailable, CodecError
from schemas.limits import Limits
from schemas.settings import Settings

__all__ = ["SPOOL_SUFFIX", "SpoolWriter", "SyncReport", "default_spool_dir", "read_spool", "sync"]

log = logging.getLogger("metricfold.producer")

SPOOL_SUFFIX = ".spool.avro"
_SCHEMA = parse_schema(
    {
        "type": "record",
        "name": "metricfold.SpoolRecord",
        "fields": [{"name": "key", "type": "string"}, {"name": "value", "type": "bytes"}],
    }
)


def default_spool_dir() -> Path:
    """``METRICFOLD_SPOOL_DIR`` or ``./metricfold-spool``."""
    return Path(os.environ.get("METRICFOLD_SPOOL_DIR") or "metricfold-spool")


class SpoolWriter:
    """Appends records to one spool file, creating it (and its directory) on first use."""

    def __init__(self, directory: Path, run_path: str, producer_id: str) -> None:
        run_id = run_path.rsplit("/", 1)[-1]
        self.path = Path(directory) / f"{run_id}-{producer_id}{SPOOL_SUFFIX}"
        self.run_path = run_path
        self.producer_id = producer_id
        self.records = 0
        self._file: IO[bytes] | None = None
        self._writer: Writer | None = None

    def append(self, key: str, value: bytes) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a+b")  # noqa: SIM115 - kept open for the run's lifetime
            metadata = {"metricfold.run_path": self.run_path, "metricfold.producer_id": self.producer_id}
            self._writer = Writer(self._file, _SCHEMA, metadata=metadata)
        assert self._file is not None
        self._writer.write({"key": key, "value": value})
        self._writer.flush()
        self._file.flush()
        self.records += 1

    def close(self) -> None:
        """Flush, fsync and close the file (no-op if nothing was spooled)."""
        if self._writer is not None and self._file is not None:
            self._writer.flush()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._writer = None
            self._file = None


def read_spool(path: Path) -> list[tuple[str, bytes]]:
    """Every complete record of a spool file, in order (a torn last block of a live file is left out)."""
    out: list[tuple[str, bytes]] = []
    with open(path, "rb") as fo:
        try:
            for record in reader(fo):
                assert isinstance(record, dict)
                out.append((record["key"], record["value"]))
        except (EOFError, ValueError, OSError) as exc:
            log.warning("metricfold: spool file %s ends in an incomplete block (%s); read %d records", path, exc,
                        len(out))
    return out


@dataclasses.dataclass
class SyncReport:
    """What sync() did: files with new records sent, files already synced, records and events sent."""

    files: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[Path] = dataclasses.field(default_factory=list)
    records: int = 0
    events: int = 0


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".synced")


def _synced_count(path: Path) -> int:
    try:
        return int(json.loads(_marker(path).read_text(encoding="utf-8"))["records"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _write_marker(path: Path, records: int) -> None:
    tmp = path.with_name(path.name + ".synced.tmp")
    tmp.write_text(json.dumps({"records": records}), encoding="utf-8")
    os.replace(tmp, _marker(path))


def _count_events(value: bytes) -> int:
    try:
        name, datum = default_codec().decode(value)
    except CodecError:
        return 1
    if name != "metricfold.Batch":
        return 1
    items: list[Any] = datum["items"]
    return sum(len(d["steps"]) if n == "metricfold.LogBlock" else 1 for n, d in items)


def sync(directory: Path | str, settings: Settings, *, limits: Limits | None = None, timeout_s: float = 60.0) -> SyncReport:
    """Publish every spool file under *directory* to Kafka, wait for the acks, and mark what was delivered.

    Raises BrokerUnavailable if Kafka cannot be reached or does not acknowledge every record; records
    acknowledged before the failure stay marked, so the next sync resumes after them.
    """
    report = SyncReport()
    paths = sorted(Path(directory).rglob("*" + SPOOL_SUFFIX))
    transport = KafkaTransport(settings, limits or Limits.from_env(), connect_timeout_s=min(timeout_s, 30.0))
    try:
        for path in paths:
            done = _synced_count(path)
            records = read_spool(path)
            todo = records[done:]
            if not todo:
                report.skipped.append(path)
                continue
            transport.connect()
            deliveries = [transport.send(key.encode(), value) for key, value in todo]
            transport.flush(timeout_s)
            acked = 0
            for delivery in deliveries:
                if not delivery.ok:
                    break
                acked += 1
            if acked:
                _write_marker(path, done + acked)
            report.records += acked
            report.events += sum(_count_events(value) for _, value in todo[:acked])
            if acked < len(todo):
                error = deliveries[acked].error or "not acknowledged in time"
                raise BrokerUnavailable(
                    f"Kafka at {settings.kafka} did not acknowledge record {done + acked} of {path}: {error}; "
                    "run sync again when it is back"
                )
            report.files.append(path)
    finally:
        transport.close(timeout_s=5.0)
    return report
