"""Avro single-object encoding of metricfold's events (RULES.md §3, docs/ARCHITECTURE.md "Wire format").

    value = b"\\xc3\\x01" + fingerprint (8 bytes, little-endian CRC-64-AVRO) + Avro binary body

The fingerprint is taken over the *full* parsing canonical form of the writer schema: every named type
is written out at its first use, later uses are its full name. Schemas live in ``schemas/*.avsc`` (the
current version of each type, one file per named type, file name = full name) and, for writer schemas
that were released and later changed, in ``schemas/history/*.avsc`` (file name ``<full name>.<n>.avsc``,
each a complete schema of that type; named types it uses that are not inlined come from the current
files). Bytes written with any of them decode, resolved to the current schema of the same type (Avro
schema resolution: new fields take their defaults).

Decoded shapes: ``decode(data) -> (full_name, datum)``; unions of records come back as ``(name, datum)``
tuples (fastavro's ``return_record_name=True``), and ``encode`` accepts the same tuples.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from schemas.avro_schemas import Raw, SchemaVersion, collect, full_name, load_json, schema_version
from schemas.batch_writer import BatchWriter
from schemas.errors import CodecError, TruncatedError, UnknownSchemaError
from schemas.events import BATCH, EVENT_TYPES

__all__ = [
    "EVENT_TYPES",
    "HEADER_LENGTH",
    "MAGIC",
    "SCHEMA_DIR",
    "Codec",
    "SchemaVersion",
    "decode",
    "default_codec",
    "encode",
    "header",
]

MAGIC = b"\xc3\x01"
HEADER_LENGTH = 10
SCHEMA_DIR = Path(__file__).resolve().parent


class Codec:
    """Every schema of a directory: encode with the current one, decode bytes written with any of them."""

    def __init__(self, directory: Path | str = SCHEMA_DIR) -> None:
        directory = Path(directory)
        raw: dict[str, Raw] = {}
        for path in sorted(directory.glob("*.avsc")):
            schema = load_json(path)
            full = full_name(schema["name"], schema.get("namespace"))
            if full != path.stem:
                raise CodecError(f"schema file {path.name} must be named after its full name {full!r}")
            raw[full] = schema
        defs: dict[str, Raw] = {}
        for schema in raw.values():
            collect(schema, None, defs)
        self.current: dict[str, SchemaVersion] = {name: schema_version(name, raw[name], defs) for name in raw}
        self._batch_writer = BatchWriter.create(self.current)
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for version in self.current.values():
            self._register(version)
        for path in sorted((directory / "history").glob("*.avsc")):
            schema = load_json(path)
            full = full_name(schema["name"], schema.get("namespace"))
            if not path.name.startswith(full + "."):
                raise CodecError(f"history file {path.name} must be named '{full}.<n>.avsc'")
            self._register(schema_version(full, schema, defs))

    def _register(self, version: SchemaVersion) -> None:
        other = self.by_fingerprint.get(version.fingerprint)
        if other is not None and other.canonical != version.canonical:  # pragma: no cover - 2^-64
            raise CodecError(f"fingerprint collision between {other.name} and {version.name}")
        self.by_fingerprint.setdefault(version.fingerprint, version)

    def header(self, name: str) -> bytes:
        """``C3 01`` + the fingerprint of the current schema of *name*."""
        return MAGIC + self._current(name).fingerprint

    def _current(self, name: str) -> SchemaVersion:
        try:
            return self.current[name]
        except KeyError:
            raise CodecError(f"no schema named {name!r} in schemas/") from None

    def encode(self, name: str, datum: Any) -> bytes:
        """Single-object encoding of *datum* with the current schema of *name*."""
        version = self._current(name)
        buffer = io.BytesIO()
        buffer.write(MAGIC)
        buffer.write(version.fingerprint)
        try:
            schemaless_writer(buffer, version.parsed, datum)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(f"cannot encode {name}: {exc}") from exc
        return buffer.getvalue()

    def encode_batch(self, datum: dict[str, Any]) -> bytes:
        """``encode("metricfold.Batch", datum)``, byte for byte, but with LogBlock columns written by hand
        (struct, bytes.translate, numpy for long int columns; several times faster than fastavro's per-item
        loop; falls back to fastavro if the schemas changed)."""
        if self._batch_writer is None:
            return self.encode(BATCH, datum)
        try:
            body = self._batch_writer.write(datum)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise CodecError(f"cannot encode metricfold.Batch: {exc}") from exc
        return self.header(BATCH) + body

    def decode(self, data: bytes) -> tuple[str, Any]:
        """``(full_name, datum)`` of single-object encoded *data*, resolved to the current schema."""
        if len(data) < HEADER_LENGTH:
            raise TruncatedError(f"{len(data)} bytes are too short for a single-object header ({HEADER_LENGTH})")
        if data[:2] != MAGIC:
            raise CodecError(f"bytes do not start with the Avro single-object marker C3 01 but {data[:2].hex()}")
        fp = bytes(data[2:HEADER_LENGTH])
        writer = self.by_fingerprint.get(fp)
        if writer is None:
            raise UnknownSchemaError(
                f"writer schema fingerprint {fp.hex()} is not one of the {len(self.by_fingerprint)} schemas "
                "in schemas/ (an event from a newer client? add its schema to schemas/history/)"
            )
        reader = self.current.get(writer.name, writer)
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_LENGTH)
        try:
            datum = schemaless_reader(
                buffer,
                writer.parsed,
                None if reader is writer else reader.parsed,
                return_record_name=True,
            )
        except EOFError as exc:
            raise TruncatedError(f"{writer.name} event is truncated ({len(data)} bytes): {exc}") from exc
        except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError) as exc:
            raise CodecError(f"bytes are not a valid {writer.name}: {exc}") from exc
        if buffer.tell() != len(data):
            raise CodecError(f"{len(data) - buffer.tell()} unexpected bytes after the {writer.name} event")
        return writer.name, datum

    def names(self) -> Iterable[str]:
        return self.current.keys()


_DEFAULT: Codec | None = None


def default_codec() -> Codec:
    """The codec of the schemas shipped in this package (loaded once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Codec()
    return _DEFAULT


def encode(name: str, datum: Any) -> bytes:
    return default_codec().encode(name, datum)


def decode(data: bytes) -> tuple[str, Any]:
    return default_codec().decode(data)


def header(name: str) -> bytes:
    return default_codec().header(name)
