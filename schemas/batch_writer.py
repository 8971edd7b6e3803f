"""The Batch writer of the SDK's hot path: ``Codec.encode_batch`` writes a Batch body byte for byte as fastavro
would, but its envelope and LogBlock columns by hand (struct, bytes.translate, numpy for long int columns),
several times faster than fastavro's per-item loop. Any other item goes through fastavro; a changed schema
(fields it does not know) makes ``BatchWriter.create`` return None, and the codec uses fastavro for all.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastavro import parse_schema, schemaless_writer

from schemas.avro_schemas import SchemaVersion
from schemas.events import BATCH, LOG_BLOCK

__all__ = ["BatchWriter"]

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


class BatchWriter:
    """Writes Batch bodies: envelope and LogBlock columns by hand, other items with fastavro."""

    def __init__(self, branches: dict[str, tuple[int, Any]], extras: Any) -> None:
        self.branches = branches  #: item type -> (union index, parsed schema of the item)
        self.extras = extras  #: parsed schema of LogBlock.extras

    @classmethod
    def create(cls, current: Mapping[str, SchemaVersion]) -> BatchWriter | None:
        batch, block = current.get(BATCH), current.get(LOG_BLOCK)
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
                if name == LOG_BLOCK:
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
