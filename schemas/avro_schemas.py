"""The Avro schema files of ``schemas/``: loading them, expanding named types, and their fingerprints.

A schema file holds one named type (file name = its full name); named types it uses come from the other
files. ``schema_version(name, raw, defs)`` expands every named type at its first use, as the parsing
canonical form requires, and takes the CRC-64-AVRO fingerprint over that form (``schemas.codec`` puts it in
each value's header).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas.errors import CodecError

__all__ = ["Raw", "SchemaVersion", "collect", "full_name", "load_json", "schema_version"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
Raw = Any  # a schema as loaded from JSON


@dataclass(frozen=True)
class SchemaVersion:
    """One writer schema: its full name, expanded schema, canonical form and fingerprint."""

    name: str
    expanded: dict[str, Any]
    canonical: str
    fingerprint: bytes  #: 8 bytes, little-endian CRC-64-AVRO
    parsed: Any  #: fastavro's parsed form, self-contained


def full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def collect(node: Raw, namespace: str | None, into: dict[str, Raw]) -> None:
    """Record every named type defined anywhere in *node* (inline definitions too) by full name."""
    if isinstance(node, list):
        for item in node:
            collect(item, namespace, into)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in _NAMED:
            full = full_name(node["name"], node.get("namespace", namespace))
            into.setdefault(full, node)
            namespace = full.rpartition(".")[0] or None
            for field in node.get("fields", []):
                collect(field["type"], namespace, into)
        elif kind == "array":
            collect(node["items"], namespace, into)
        elif kind == "map":
            collect(node["values"], namespace, into)


def _expand(node: Raw, namespace: str | None, defs: dict[str, Raw], seen: set[str]) -> Raw:
    """Inline every named type at its first use (fully qualified); later uses are the full name."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = full_name(node, namespace)
        if full in seen:
            return full
        if full not in defs:
            raise CodecError(f"schema refers to unknown type {full!r}")
        return _expand(defs[full], full.rpartition(".")[0] or None, defs, seen)
    if isinstance(node, list):
        return [_expand(item, namespace, defs, seen) for item in node]
    kind = node["type"]
    if kind in _NAMED:
        full = full_name(node["name"], node.get("namespace", namespace))
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


def schema_version(name: str, raw: Raw, defs: dict[str, Raw]) -> SchemaVersion:
    local = dict(defs)
    collect(raw, None, local)
    local[name] = raw
    expanded = _expand(name, None, local, set())
    canonical = to_parsing_canonical_form(expanded)
    digest = bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))
    return SchemaVersion(name, expanded, canonical, digest, parse_schema(expanded))


def load_json(path: Path) -> Raw:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CodecError(f"cannot read schema file {path}: {exc}") from exc
