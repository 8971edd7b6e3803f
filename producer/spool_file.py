"""The spool file: records that could not (or were not meant to) reach Kafka, kept in a local file.

One spool file per producer (per open run per process), ``<run_id>-<producer_id>.spool.avro``: an Avro
object container file of ``{key: string, value: bytes}`` records, where ``value`` is exactly the
single-object encoded record that would have been sent. It is append-only; each append is flushed to
the OS, and the file is fsynced when the run finishes. ``producer.spool.sync`` publishes spool files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO, Any

from fastavro import parse_schema, reader
from fastavro.write import Writer

from schemas.errors import CodecError
from schemas.events import SPOOL_RECORD

__all__ = ["SPOOL_SUFFIX", "SkipFile", "SpoolWriter", "default_spool_dir", "read_container", "read_spool"]

log = logging.getLogger("metricfold.producer")

SPOOL_SUFFIX = ".spool.avro"
_SCHEMA_JSON: dict[str, Any] = {
    "type": "record",
    "name": SPOOL_RECORD,
    "fields": [{"name": "key", "type": "string"}, {"name": "value", "type": "bytes"}],
}
_SCHEMA = parse_schema(_SCHEMA_JSON)


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
    """Every complete record of a spool file, in order (a torn last block of a live file is left out, with a
    warning). Raises CodecError if the file is not a spool file."""
    try:
        records, torn = read_container(path)
    except SkipFile as exc:
        raise CodecError(f"{path}: {exc}") from None
    if torn:
        log.warning("metricfold: spool file %s: %s; read %d records", path, torn, len(records))
    return records


class SkipFile(Exception):
    """sync skips this file, sending none of it (the message says why): not a spool file, or a marker it cannot trust."""


def read_container(path: Path) -> tuple[list[tuple[str, bytes]], str | None]:
    """The complete records of a spool file, and why it ends early (an incomplete last block) or None.
    Raises SkipFile if the file is not a spool file: not an Avro container, or one of other records."""
    out: list[tuple[str, bytes]] = []
    with open(path, "rb") as fo:
        try:
            container = reader(fo)
        except Exception as exc:  # any bytes: fastavro raises ValueError, EOFError, ... on them
            raise SkipFile(f"not a spool file: not an Avro container file ({exc})") from None
        if container.writer_schema != _SCHEMA_JSON:
            named = container.writer_schema.get("name") if isinstance(container.writer_schema, dict) else None
            raise SkipFile(f"not a spool file: an Avro file of {named or 'other'!r:.80} records, not {_SCHEMA_JSON['name']}")
        try:
            for record in container:
                assert isinstance(record, dict)
                out.append((record["key"], record["value"]))
        except Exception as exc:  # a torn or corrupt block: keep what came before it
            return out, (f"the file ends in an incomplete or corrupt block after record {len(out)} ({exc}): a run "
                         "still writing it, or a torn write")
    return out, None
