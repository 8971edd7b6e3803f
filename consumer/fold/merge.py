"""Merge consecutive log-only records of one producer into one LogBlock before folding (pure code).

A live trainer sends a small record every ~100 ms, each one LogBlock of a few events; the fold has a fixed
cost per block, so a poll holding many small records of a run is folded faster as one block. Folding the
merged block gives byte-identical state (the fold is invariant under any split of a LogBlock: property tests
in tests/test_fold_properties.py), so this changes speed only. Records merge when each is a Batch with a
single LogBlock item, of the same producer, and the seqs continue without a gap.
"""

from __future__ import annotations

from typing import Any

from schemas.events import BATCH, LOG_BLOCK

__all__ = ["merge_log_records"]

Decoded = tuple[str, Any]


def _single_block(decoded: Decoded) -> dict[str, Any] | None:
    """The LogBlock of a Batch that holds only one, if that block is well formed (a bad block is never merged:
    the fold refuses it whole, and it must not take its neighbours with it)."""
    name, datum = decoded
    if name != BATCH or len(datum.get("items", ())) != 1:
        return None
    item_name, block = datum["items"][0]
    if item_name != LOG_BLOCK:
        return None
    events, paths = len(block["steps"]), len(block["paths"])
    counts, path_idx = block["counts"], block["path_idx"]
    if not (events == len(block["ts_ms"]) == len(counts)) or (counts and min(counts) < 0):
        return None
    if not (sum(counts) == len(path_idx) == len(block["values"])):
        return None
    if path_idx and (min(path_idx) < 0 or max(path_idx) >= paths):
        return None
    last = -1
    for extra in block["extras"]:
        if not (last <= extra["event"] < events and 0 <= extra["path"] < paths):
            return None
        last = extra["event"]
    well_formed: dict[str, Any] = block
    return well_formed


def _append(into: dict[str, Any], block: dict[str, Any]) -> None:
    index = {tuple(p): i for i, p in enumerate(into["paths"])}
    remap = []
    for path in block["paths"]:
        key = tuple(path)
        if key not in index:
            index[key] = len(into["paths"])
            into["paths"].append(list(path))
        remap.append(index[key])
    shift = len(into["steps"])
    into["steps"].extend(block["steps"])
    into["ts_ms"].extend(block["ts_ms"])
    into["counts"].extend(block["counts"])
    if remap == list(range(len(remap))):  # the usual case: the same keys in the same order
        into["path_idx"].extend(block["path_idx"])
    else:
        into["path_idx"].extend([remap[i] for i in block["path_idx"]])
    into["values"].extend(block["values"])
    into["extras"].extend(
        {"event": e["event"] + shift, "path": remap[e["path"]], "value": e["value"]} for e in block.get("extras", ())
    )


def merge_log_records(units: list[tuple[list[Any], Decoded]]) -> list[tuple[list[Any], Decoded]]:
    """[(records, decoded)] in order -> the same, with mergeable neighbours joined (their records listed together)."""
    if len(units) < 2:  # a live run's poll usually holds one record
        return units
    merged: list[tuple[list[Any], Decoded]] = []
    open_block: dict[str, Any] | None = None
    open_producer: str | None = None
    for records, decoded in units:
        block = _single_block(decoded)
        producer = decoded[1].get("producer_id")
        if (
            block is not None
            and open_block is not None
            and producer == open_producer
            and block["first_seq"] == open_block["first_seq"] + len(open_block["steps"])
        ):
            _append(open_block, block)
            merged[-1][0].extend(records)
            continue
        if block is not None:
            fresh = {
                "first_seq": block["first_seq"],
                "steps": list(block["steps"]),
                "ts_ms": list(block["ts_ms"]),
                "paths": [list(p) for p in block["paths"]],
                "counts": list(block["counts"]),
                "path_idx": list(block["path_idx"]),
                "values": list(block["values"]),
                "extras": list(block.get("extras", ())),
            }
            header = {k: v for k, v in decoded[1].items() if k != "items"}
            merged.append((list(records), (BATCH, {**header, "items": [(LOG_BLOCK, fresh)]})))
            open_block, open_producer = fresh, producer
        else:
            merged.append((list(records), decoded))
            open_block, open_producer = None, None
    return merged
