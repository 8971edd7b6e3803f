"""The wire format: Avro single-object encoding over the schemas in schemas/ (RULES.md §3)."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas.batch_writer as batch_writer_module
from schemas.codec import EVENT_TYPES, MAGIC, SCHEMA_DIR, Codec, decode, default_codec, encode
from schemas.errors import CodecError, TruncatedError, UnknownSchemaError

GOLDEN = Path(__file__).resolve().parent / "golden"


def from_json(value: Any) -> Any:
    if isinstance(value, dict) and "$record" in value:
        return (value["$record"], from_json(value["datum"]))
    if isinstance(value, dict) and "$bytes" in value:
        return bytes.fromhex(value["$bytes"])
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def assert_same(decoded: Any, expected: Any, where: str = "") -> None:
    """Equal, NaN equal to NaN; decoded records may carry extra fields (defaults of newer schemas)."""
    if isinstance(expected, dict):
        assert isinstance(decoded, dict), where
        for key, value in expected.items():
            assert key in decoded, f"{where}.{key} missing"
            assert_same(decoded[key], value, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert type(decoded) is type(expected) and len(decoded) == len(expected), where
        for i, (a, b) in enumerate(zip(decoded, expected, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(decoded, float) and math.isnan(decoded), where
    else:
        assert type(decoded) is type(expected) and decoded == expected, f"{where}: {decoded!r} != {expected!r}"


def golden() -> list[dict[str, Any]]:
    corpus: list[dict[str, Any]] = json.loads((GOLDEN / "corpus.json").read_text(encoding="utf-8"))
    return corpus


@pytest.mark.parametrize("entry", golden(), ids=lambda e: e["file"])
def test_golden_corpus_decodes_to_what_was_encoded(entry: dict[str, Any]) -> None:
    data = (GOLDEN / entry["file"]).read_bytes()
    name, datum = decode(data)
    assert name == entry["name"]
    assert_same(datum, from_json(entry["datum"]), name)


def test_golden_corpus_covers_every_event_type() -> None:
    assert {entry["name"] for entry in golden()} == set(EVENT_TYPES)


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_header_is_magic_and_little_endian_crc64_of_full_canonical_form(name: str) -> None:
    version = default_codec().current[name]
    expected = bytes.fromhex(fingerprint(to_parsing_canonical_form(version.expanded), "CRC-64-AVRO"))
    data = (GOLDEN / f"{name}.bin").read_bytes()
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:10] == expected == version.fingerprint


def test_full_canonical_form_defines_each_named_type_once_at_first_use() -> None:
    canonical = default_codec().current["metricfold.Batch"].canonical
    for named in ("metricfold.Subtree", "metricfold.List", "metricfold.Tensor", "metricfold.LogBlock"):
        assert canonical.count(f'{{"name":"{named}","type":"record"') == 1, named
        first = canonical.index(f'"{named}"')
        assert canonical[first - 7 : first] == '"name":', f"{named} is referenced before it is defined"
    assert canonical.count('"metricfold.Subtree"') > 1  # later uses are references by full name


def test_different_types_have_different_fingerprints() -> None:
    prints = [version.fingerprint for version in default_codec().current.values()]
    assert len(set(prints)) == len(prints)


def test_fingerprint_matches_a_schema_built_by_fastavro_from_shared_named_schemas() -> None:
    named: dict[str, Any] = {}
    order = ["Tensor", "Subtree", "RunStarted", "Log", "DefineMetric", "SummaryUpdate", "RunFinished", "LogBlock"]
    for stem in order:
        parse_schema(json.loads((SCHEMA_DIR / f"metricfold.{stem}.avsc").read_text()), named_schemas=named)
    assert set(named) >= {f"metricfold.{stem}" for stem in order} | {"metricfold.List", "metricfold.LogExtra"}
    # the writer schema registered for a single-type file decodes bytes written by fastavro's own parse
    parsed = parse_schema(json.loads((SCHEMA_DIR / "metricfold.RunFinished.avsc").read_text()))
    body = _write(parsed, {"entity": "e", "project": "p", "run_id": "r", "producer_id": "x", "seq": 1, "ts_ms": 2,
                           "exit_code": 3})
    assert decode(default_codec().header("metricfold.RunFinished") + body)[1]["exit_code"] == 3


def _write(schema: Any, datum: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, datum)
    return buffer.getvalue()


def test_unknown_fingerprint_is_a_clear_error() -> None:
    data = bytearray((GOLDEN / "metricfold.RunFinished.bin").read_bytes())
    data[2:10] = b"\x00" * 8
    with pytest.raises(UnknownSchemaError, match="0000000000000000"):
        decode(bytes(data))


@pytest.mark.parametrize("cut", [0, 1, 5, 9, 12, -1])
def test_truncated_bytes_are_a_clear_error(cut: int) -> None:
    data = (GOLDEN / "metricfold.Log.bin").read_bytes()
    with pytest.raises(TruncatedError):
        decode(data[:cut])


def test_bytes_without_the_marker_are_refused() -> None:
    with pytest.raises(CodecError, match="C3 01"):
        decode(b"\x00\x01" + (GOLDEN / "metricfold.Log.bin").read_bytes()[2:])


def test_trailing_garbage_is_refused() -> None:
    with pytest.raises(CodecError, match="unexpected bytes"):
        decode((GOLDEN / "metricfold.RunFinished.bin").read_bytes() + b"\x00")


def test_old_writer_bytes_decode_with_the_new_reader(tmp_path: Path) -> None:
    """Evolution: a released RunStarted without config_json and tags (added later with defaults)."""
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, tmp_path / path.name)
    old = json.loads((SCHEMA_DIR / "metricfold.RunStarted.avsc").read_text())
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("config_json", "tags", "notes", "group", "job_type")]
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "metricfold.RunStarted.1.avsc").write_text(json.dumps(old))
    codec = Codec(tmp_path)
    old_version = next(v for v in codec.by_fingerprint.values() if v.name == "metricfold.RunStarted" and
                       v is not codec.current["metricfold.RunStarted"])
    envelope = {"entity": "e", "project": "p", "run_id": "r", "producer_id": "x", "seq": 0, "ts_ms": 5}
    old_bytes = MAGIC + old_version.fingerprint + _write(old_version.parsed, {**envelope, "name": "n"})

    name, datum = codec.decode(old_bytes)

    assert name == "metricfold.RunStarted"
    assert datum == {**envelope, "name": "n", "config_json": "{}", "tags": [], "notes": None, "group": None, "job_type": None}
    with pytest.raises(UnknownSchemaError):
        default_codec().decode(old_bytes)  # without the history file the old writer is unknown


def test_schema_files_must_be_named_by_full_name(tmp_path: Path) -> None:
    shutil.copy(SCHEMA_DIR / "metricfold.Tensor.avsc", tmp_path / "Tensor.avsc")
    with pytest.raises(CodecError, match="full name"):
        Codec(tmp_path)


@pytest.mark.parametrize("entry", [e for e in golden() if not e.get("history")], ids=lambda e: e["name"])
def test_encoding_the_decoded_datum_gives_the_same_bytes(entry: dict[str, Any]) -> None:
    """The current schemas' bytes (history entries were written by older schemas: they only decode)."""
    data = (GOLDEN / entry["file"]).read_bytes()
    name, datum = decode(data)
    assert encode(name, datum) == data


_WIRE_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=5)
)
_WIRE = st.recursive(
    _WIRE_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: ("metricfold.List", {"items": items})),
        st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3).map(
            lambda values: ("metricfold.Subtree", {"values": values})
        ),
    ),
    max_leaves=8,
)


@st.composite
def _longs(draw: st.DrawFn, n: int, lo: int, hi: int) -> list[int]:
    """n longs in [lo, hi]: independent, small (one or two bytes), or close together (steps, timestamps: the
    writer reuses their shared high bytes)."""
    kind = draw(st.sampled_from(["any", "small", "close"]))
    if kind == "any":
        return [draw(st.integers(lo, hi)) for _ in range(n)]
    if kind == "small":
        return [draw(st.integers(max(lo, -200), min(hi, 200))) for _ in range(n)]
    stride = draw(st.integers(-300, 300))
    base = draw(st.integers(lo + 300 * n, hi - 300 * n))
    return [base + i * stride for i in range(n)]


@contextlib.contextmanager
def writer_path(path: str) -> Iterator[None]:
    """The hand-written writer's loops (as configured), or its numpy path for every long array."""
    saved = batch_writer_module.VECTOR_MIN_LONGS
    if path == "numpy":
        batch_writer_module.VECTOR_MIN_LONGS = 1
    try:
        yield
    finally:
        batch_writer_module.VECTOR_MIN_LONGS = saved


@st.composite
def log_blocks(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.one_of(st.integers(0, 6), st.integers(30, 60)))
    paths = draw(st.lists(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3), min_size=1, max_size=4))
    counts = [draw(st.integers(0, 3)) for _ in range(n)]
    total = sum(counts)
    return {
        "first_seq": draw(st.integers(0, 2**62)),
        "steps": draw(_longs(n, -(2**63), 2**63 - 1)),
        "ts_ms": draw(_longs(n, 0, 2**45)),
        "paths": paths,
        "counts": counts,
        "path_idx": [draw(st.integers(0, len(paths) - 1)) for _ in range(total)],
        "values": [draw(st.floats(allow_nan=False, width=64)) for _ in range(total)],
        "extras": [
            {"event": draw(st.integers(0, max(n - 1, 0))), "path": 0, "value": draw(_WIRE)}
            for _ in range(draw(st.integers(0, 2)))
        ],
    }


@settings(max_examples=150, deadline=None)
@given(blocks=st.lists(log_blocks(), max_size=3), finished=st.booleans(), path=st.sampled_from(["loops", "numpy"]))
def test_fast_batch_writer_is_byte_identical_to_fastavro(blocks: list[dict[str, Any]], finished: bool, path: str) -> None:
    items: list[tuple[str, dict[str, Any]]] = [("metricfold.LogBlock", block) for block in blocks]
    if finished:
        envelope = {"entity": "e", "project": "p", "run_id": "r", "producer_id": "x"}
        items.append(("metricfold.RunFinished", {**envelope, "seq": 9, "ts_ms": 1, "exit_code": -1}))
    datum = {"entity": "é", "project": "p", "run_id": "r", "producer_id": "x", "items": items}
    codec = default_codec()
    with writer_path(path):
        data = codec.encode_batch(datum)
    assert data == codec.encode("metricfold.Batch", datum)
    assert codec.decode(data) == ("metricfold.Batch", datum)


@pytest.mark.parametrize("path", ["loops", "numpy"])
@pytest.mark.parametrize("events", [1, 40])
def test_a_step_outside_avro_long_is_a_codec_error_on_both_writer_paths(events: int, path: str) -> None:
    block = {"first_seq": 0, "steps": [2**63] * events, "ts_ms": [0] * events, "paths": [["x"]],
             "counts": [1] * events, "path_idx": [0] * events, "values": [1.0] * events, "extras": []}
    datum = {"entity": "e", "project": "p", "run_id": "r", "producer_id": "x", "items": [("metricfold.LogBlock", block)]}
    with writer_path(path), pytest.raises(CodecError, match=r"cannot encode metricfold\.Batch"):
        default_codec().encode_batch(datum)
