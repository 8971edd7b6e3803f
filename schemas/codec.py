"""Avro single-object encoding of metricfold's events (SPEC §3, docs/ARCHITECTURE.md "Wire format").

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
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas.errors import CodecError, TruncatedError, UnknownSchemaError

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
#: The top-level types a Kafka record value may hold.
EVENT_TYPES = (
    "metricfold.RunStarted",
    "metricfold.Log",
    "metricfold.DefineMetric",
    "metricfold.SummaryUpdate",
    "metricfold.RunFinished",
    "metricfold.Batch",
)
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_Raw = Any  # a schema as loaded from JSON


@dataclass(frozen=True)
class SchemaVersion:
    """One writer schema: its full name, expanded schema, canonical form and fingerprint."""

    name: str
    expanded: dict[str, Any]
    canonical: str
    fingerprint: bytes  #: 8 bytes, little-endian CRC-64-AVRO
    parsed: Any  #: fastavro's parsed form, self-contained


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect(node: _Raw, namespace: str | None, into: dict[str, _Raw]) -> None:
    """Record every named type defined anywhere in *node* (inline definitions too) by full name."""
    if isinstance(node, list):
        for item in node:
            _collect(item, namespace, into)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in _NAMED:
            full = _full_name(node["name"], node.get("namespace", namespace))
            into.setdefault(full, node)
            namespace = full.rpartition(".")[0] or None
            for field in node.get("fields", []):
                _collect(field["type"], namespace, into)
        elif kind == "array":
            _collect(node["items"], namespace, into)
        elif kind == "map":
            _collect(node["values"], namespace, into)


def _expand(node: _Raw, namespace: str | None, defs: dict[str, _Raw], seen: set[str]) -> _Raw:
    """Inline every named type at its first use (fully qualified); later uses are the full name."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = _full_name(node, namespace)
        if full in seen:
            return full
        if full not in defs:
            raise CodecError(f"schema refers to unknown type {full!r}")
        return _expand(defs[full], full.rpartition(".")[0] or None, defs, seen)
    if isinstance(node, list):
        return [_expand(item, namespace, defs, seen) for item in node]
    kind = node["type"]
    if kind in _NAMED:
        full = _full_name(node["name"], node.get("namespace", namespace))
        if full in seen:
            return full
        seen.add(full)
        inner = full.rpartition(".")[0] or None
        out = {k: v for k, v in node.items() if k not in ("namespace", "name", "fields")}
        out["name"] = full
        if "fields" in node:
            out["fields"] = [{**f, "type": _expand(f["type"], inner, defs, seen)} for f in node["fields"]]
        return out
    if kind == "array":
        return {**node, "items": _expand(node["items"], namespace, defs, seen)}
    if kind == "map":
        return {**node, "values": _expand(node["values"], namespace, defs, seen)}
    if isinstance(kind, (dict, list)) or kind not in _PRIMITIVES:
        return _expand(kind, namespace, defs, seen)
    return node


def _version(name: str, raw: _Raw, defs: dict[str, _Raw]) -> SchemaVersion:
    local = dict(defs)
    _collect(raw, None, local)
    local[name] = raw
    expanded = _expand(name, None, local, set())
    canonical = to_parsing_canonical_form(expanded)
    digest = bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))
    return SchemaVersion(name, expanded, canonical, digest, parse_schema(expanded))


def _load_json(path: Path) -> _Raw:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CodecError(f"cannot read schema file {path}: {exc}") from exc


class Codec:
    """Every schema of a directory: encode with the current one, decode bytes written with any of them."""

    def __init__(self, directory: Path | str = SCHEMA_DIR) -> None:
        directory = Path(directory)
        raw: dict[str, _Raw] = {}
        for path in sorted(directory.glob("*.avsc")):
            schema = _load_json(path)
            full = _full_name(schema["name"], schema.get("namespace"))
            if full != path.stem:
                raise CodecError(f"schema file {path.name} must be named after its full name {full!r}")
            raw[full] = schema
        defs: dict[str, _Raw] = {}
        for schema in raw.values():
            _collect(schema, None, defs)
        self.current: dict[str, SchemaVersion] = {name: _version(name, raw[name], defs) for name in raw}
        self._batch_writer = _BatchWriter.create(self.current)
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for version in self.current.values():
            self._register(version)
        for path in sorted((directory / "history").glob("*.avsc")):
            schema = _load_json(path)
            full = _full_name(schema["name"], schema.get("namespace"))
            if not path.name.startswith(full + "."):
                raise CodecError(f"history file {path.name} must be named '{full}.<n>.avsc'")
            self._register(_version(full, schema, defs))

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
            return self.encode("metricfold.Batch", datum)
        try:
            body = self._batch_writer.write(datum)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise CodecError(f"cannot encode metricfold.Batch: {exc}") from exc
        return self.header("metricfold.Batch") + body

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


_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)
_SEVEN_BITS = np.uint64(0x7F)
#: The LogBlock layout the hand-written writer knows; any other (a changed schema) uses fastavro.
_LOGBLOCK_FIELDS = (
    ("first_seq", "long"),
    ("steps", {"type": "array", "items": "long"}),
    ("ts_ms", {"type": "array", "items": "long"}),
    ("paths", {"type": "array", "items": {"type": "array", "items": "string"}}),
    ("counts", {"type": "array", "items": "int"}),
    ("path_idx", {"type": "array", "items": "int"}),
    ("values", {"type": "array", "items": "double"}),
)
_BATCH_FIELDS = ("entity", "project", "run_id", "producer_id")


def _long(value: int) -> bytes:
    """Avro's zig-zag varint of one long."""
    small = _ONE_BYTE.get(value)
    if small is not None:
        return small
    return _zigzag_bytes((value << 1) ^ (value >> 63))


_ONE_BYTE = {v: bytes([(v << 1) ^ (v >> 63)]) for v in range(-64, 64)}  # lengths, counts, indexes
_ZIGZAG_ONE = [bytes([z]) for z in range(128)]  # a zig-zag value below 128 is its own varint


def _string(value: str) -> bytes:
    data = value.encode()
    return _long(len(data)) + data


#: Below this many items a long array is written with a Python loop: numpy's fixed cost per call is larger
#: there (a live run's block holds 5-20 events; crossover measured at ~48 on 2026-11-29). Property tests run
#: both paths (tests/test_codec.py). Doubles always go through struct: faster than numpy from 512 to 100,000
#: values, even at 1,000,000 (measured the same day).
VECTOR_MIN_LONGS = 48
_DOUBLED = bytes((2 * b) & 0xFF for b in range(256))  # zig-zag of 0..63 is one byte: the value doubled
_CONTINUED = [bytes([b | 0x80]) for b in range(128)]  # a varint's low 7 bits when more bytes follow


def _zigzag_bytes(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _long_array(values: list[int]) -> bytes:
    """An Avro array of long/int as one block: count, zig-zag varints, 0."""
    n = len(values)
    if n == 0:
        return b"\x00"
    lo, hi = min(values), max(values)
    if lo < -(2**63) or hi >= 2**63:  # as numpy refuses it (encode_batch turns it into a CodecError)
        raise OverflowError(f"{lo if lo < 0 else hi} is outside Avro's long")
    if lo >= 0 and hi < 64:  # indexes and counts: one byte each
        return _long(n) + bytes(values).translate(_DOUBLED) + b"\x00"
    if n < VECTOR_MIN_LONGS:
        # varint(z) = low 7 bits with the continuation bit, then varint(z >> 7): steps and timestamps of a block
        # are close together, so z >> 7 repeats and its bytes are made once per run of equal values
        out = [_long(n)]
        append = out.append
        last_high, tail = -1, b""
        for v in values:
            zz = (v << 1) ^ (v >> 63)
            if zz < 0x80:
                append(_ZIGZAG_ONE[zz])
                continue
            high = zz >> 7
            if high != last_high:
                last_high, tail = high, _zigzag_bytes(high)
            append(_CONTINUED[zz & 0x7F] + tail)
        append(b"\x00")
        return b"".join(out)
    a = np.fromiter(values, dtype=np.int64, count=n)
    z = ((a << 1) ^ (a >> 63)).view(np.uint64)
    top = int(z.max())
    width = (top.bit_length() + 6) // 7
    shifted = z[:, None] >> _SHIFTS[:width]
    more = shifted[:, 1:] != 0
    table = (shifted & _SEVEN_BITS).astype(np.uint8)
    table[:, :-1] |= more.astype(np.uint8) << 7
    keep = np.empty(table.shape, dtype=bool)
    keep[:, 0] = True
    keep[:, 1:] = more
    return _long(n) + table[keep].tobytes() + b"\x00"


class _BatchWriter:
    """Writes Batch bodies: envelope and LogBlock columns by hand, other items with fastavro."""

    def __init__(self, branches: dict[str, tuple[int, Any]], extras: Any) -> None:
        self.branches = branches  #: item type -> (union index, parsed schema of the item)
        self.extras = extras  #: parsed schema of LogBlock.extras

    @classmethod
    def create(cls, current: dict[str, SchemaVersion]) -> _BatchWriter | None:
        batch, block = current.get("metricfold.Batch"), current.get("metricfold.LogBlock")
        if batch is None or block is None:
            return None
        fields = batch.expanded["fields"]
        if [f["name"] for f in fields[:4]] != list(_BATCH_FIELDS) or len(fields) != 5:
            return None
        if any(f["type"] != "string" for f in fields[:4]) or fields[4]["name"] != "items":
            return None
        block_fields = [(f["name"], f["type"]) for f in block.expanded["fields"]]
        if tuple(block_fields[:-1]) != _LOGBLOCK_FIELDS or block_fields[-1][0] != "extras":
            return None
        branches: dict[str, tuple[int, Any]] = {}
        for index, branch in enumerate(fields[4]["type"]["items"]):
            name = branch if isinstance(branch, str) else branch["name"]
            if name not in current:
                return None
            branches[name] = (index, current[name].parsed)
        return cls(branches, parse_schema(block.expanded["fields"][-1]["type"]))

    def write(self, datum: dict[str, Any]) -> bytes:
        out = [_string(datum[name]) for name in _BATCH_FIELDS]
        items = datum["items"]
        if items:
            out.append(_long(len(items)))
            for name, item in items:
                index, parsed = self.branches[name]
                out.append(_long(index))
                if name == "metricfold.LogBlock":
                    out.append(self._logblock(item))
                else:
                    buffer = io.BytesIO()
                    schemaless_writer(buffer, parsed, item)
                    out.append(buffer.getvalue())
        out.append(b"\x00")
        return b"".join(out)

    def _logblock(self, block: dict[str, Any]) -> bytes:
        paths: list[list[str]] = block["paths"]
        out = [_long(block["first_seq"]), _long_array(block["steps"]), _long_array(block["ts_ms"])]
        if paths:
            out.append(_long(len(paths)))
            for path in paths:
                out.append(_long(len(path)))
                out.extend(_string(part) for part in path)
                out.append(b"\x00")
        out.append(b"\x00")
        out.append(_long_array(block["counts"]))
        out.append(_long_array(block["path_idx"]))
        values: list[float] = block["values"]
        if values:
            n = len(values)
            out.append(_long(n))
            out.append(struct.pack(f"<{n}d", *values))
        out.append(b"\x00")
        extras = block.get("extras")
        if extras:
            buffer = io.BytesIO()
            schemaless_writer(buffer, self.extras, extras)
            out.append(buffer.getvalue())
        else:
            out.append(b"\x00")  # an empty array
        return b"".join(out)


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
