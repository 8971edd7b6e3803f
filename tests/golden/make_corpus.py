"""Regenerate the golden corpus: one single-object encoded event of each type, plus a batch.

    .venv/bin/python tests/golden/make_corpus.py

Writes ``<name>.bin`` (the exact bytes) and ``corpus.json`` (what each file decodes to, with tuples as
``{"$record": name, "datum": ...}`` and bytes as ``{"$bytes": hex}``). Only regenerate when adding
events or changing a schema: bytes written by released schemas must keep decoding, so never rewrite an
existing .bin file. When a schema changes (its released version goes to ``schemas/history/<name>.<n>.avsc``),
rename ``<name>.bin`` to ``<name>.<n>.bin``, point its corpus entry there with ``"history": n``, then run this:
history entries are kept as they are (they must still decode; they are not re-encoded), and the current
version of each event is written to ``<name>.bin``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import numpy as np  # noqa: E402

from schemas.codec import encode  # noqa: E402
from schemas.tensors import to_npy  # noqa: E402

ENVELOPE = {"entity": "team", "project": "vision", "run_id": "golden01", "producer_id": "0b0e6c2e-4d55-4a4c-9c55-7f1d2b0a9e01"}
TENSOR = ("metricfold.Tensor", {"kind": "numpy.ndarray", "npy": to_npy(np.arange(40, dtype="<f4").reshape(5, 8))})
VALUES = {
    "null": None,
    "flag": True,
    "epoch": 3,
    "loss": 0.25,
    "nan": math.nan,
    "inf": -math.inf,
    "text": "héllo",
    "grad": ("metricfold.Subtree", {"values": {"norm": 1.5, "hist": ("metricfold.List", {"items": [1, 2.5, None, "x"]})}}),
    "weights": TENSOR,
}
EVENTS: dict[str, dict[str, Any]] = {
    "metricfold.RunStarted": {
        **ENVELOPE, "seq": 0, "ts_ms": 1700000000000, "name": "golden", "config_json": '{"lr": 0.1}', "tags": ["a", "b"],
        "notes": "baseline", "group": "sweep-1", "job_type": "train",
    },
    "metricfold.DefineMetric": {
        **ENVELOPE, "seq": 1, "ts_ms": 1700000000001, "name": "acc", "summary": ["max", "best"], "objective": "maximize",
        "step_metric": None, "hidden": False, "overwrite": False, "at_best": ["loss", "val/*"],
    },
    "metricfold.Log": {**ENVELOPE, "seq": 2, "ts_ms": 1700000000002, "step": 0, "values": VALUES},
    "metricfold.SummaryUpdate": {
        **ENVELOPE, "seq": 3, "ts_ms": 1700000000003, "set": {"best": 0.9, "w": TENSOR}, "remove": ["old"],
    },
    "metricfold.RunFinished": {**ENVELOPE, "seq": 6, "ts_ms": 1700000000006, "exit_code": 1},
}
BLOCK = {
    "first_seq": 4, "steps": [1, 2], "ts_ms": [1700000000004, 1700000000005], "paths": [["loss"], ["grad", "norm"]],
    "counts": [2, 1], "path_idx": [0, 1, 0], "values": [0.5, 1.25, 0.4],
    "extras": [{"event": 1, "path": 1, "value": ("metricfold.List", {"items": [1, 2]})}],
}
EVENTS["metricfold.Batch"] = {
    **ENVELOPE,
    "items": [
        ("metricfold.DefineMetric", EVENTS["metricfold.DefineMetric"]),
        ("metricfold.LogBlock", BLOCK),
        ("metricfold.RunFinished", EVENTS["metricfold.RunFinished"]),
    ],
}


def to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"$record": value[0], "datum": to_json(value[1])}
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def main() -> None:
    known = HERE / "corpus.json"
    corpus = [entry for entry in json.loads(known.read_text(encoding="utf-8")) if entry.get("history")] if known.exists() else []
    for name, datum in EVENTS.items():
        path = HERE / f"{name}.bin"
        if not path.exists():
            path.write_bytes(encode(name, datum))
        corpus.append({"file": path.name, "name": name, "datum": to_json(datum)})
    (HERE / "corpus.json").write_text(json.dumps(corpus, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
