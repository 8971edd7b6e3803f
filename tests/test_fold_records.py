"""Builders of decoded records for the fold's tests (the shapes of docs/ARCHITECTURE.md, "Decoded shapes"),
and tests that the builders agree with each other. No codec, no I/O."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from consumer.fold import RunState, fold_record, new_run_state, state_to_bytes, summary

ENTITY, PROJECT, RUN_ID = "team", "vision", "run1"
Record = tuple[str, dict[str, Any]]
Path = tuple[str, ...]


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def tensor(array: np.ndarray, kind: str = "numpy.ndarray") -> tuple[str, dict[str, Any]]:
    return ("metricfold.Tensor", {"kind": kind, "npy": npy(array)})


def wire(value: Any) -> Any:
    """A Python value as the decoder would give it: dict -> Subtree, list -> List, array -> Tensor."""
    if type(value) is tuple and len(value) == 2 and str(value[0]).startswith("metricfold."):
        return value  # already a wire value
    if isinstance(value, Mapping):
        return ("metricfold.Subtree", {"values": {k: wire(v) for k, v in value.items()}})
    if isinstance(value, list | tuple):
        return ("metricfold.List", {"items": [wire(v) for v in value]})
    if isinstance(value, np.ndarray):
        return tensor(value)
    return value


def envelope(producer: str = "p1", seq: int = 0, ts: int = 1_000, run: tuple[str, str, str] | None = None) -> dict[str, Any]:
    entity, project, run_id = run or (ENTITY, PROJECT, RUN_ID)
    return {"entity": entity, "project": project, "run_id": run_id, "producer_id": producer, "seq": seq, "ts_ms": ts}


def log(values: Mapping[str, Any], *, step: int = 0, **env: Any) -> Record:
    """A standalone metricfold.Log; nested dicts become Subtrees (split into leaves by the fold)."""
    return ("metricfold.Log", {**envelope(**env), "step": step, "values": {k: wire(v) for k, v in values.items()}})


def define(
    name: str,
    summary: str | Sequence[str] | None = None,
    *,
    objective: str | None = None,
    overwrite: bool = False,
    hidden: bool = False,
    step_metric: str | None = None,
    **env: Any,
) -> Record:
    options = summary.split(",") if isinstance(summary, str) else (list(summary) if summary is not None else None)
    return (
        "metricfold.DefineMetric",
        {
            **envelope(**env),
            "name": name,
            "summary": options,
            "objective": objective,
            "step_metric": step_metric,
            "hidden": hidden,
            "overwrite": overwrite,
        },
    )


def update(values: Mapping[str, Any] | None = None, remove: Sequence[str] = (), **env: Any) -> Record:
    """A summary update: set values (None removes), remove keys."""
    sets = {k: (None if v is None else wire(v)) for k, v in (values or {}).items()}
    return ("metricfold.SummaryUpdate", {**envelope(**env), "set": sets, "remove": list(remove)})


def started(name: str | None = None, config_json: str = "{}", tags: Sequence[str] = (), **env: Any) -> Record:
    return ("metricfold.RunStarted", {**envelope(**env), "name": name, "config_json": config_json, "tags": list(tags)})


def finished(exit_code: int = 0, **env: Any) -> Record:
    return ("metricfold.RunFinished", {**envelope(**env), "exit_code": exit_code})


def leaves(values: Mapping[str, Any], prefix: Path = ()) -> list[tuple[Path, Any]]:
    """Split a nested dict into (leaf path, value) pairs, as the SDK does for a LogBlock."""
    out: list[tuple[Path, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.extend(leaves(value, (*prefix, key)))
        else:
            out.append(((*prefix, key), value))
    return out


def log_block(events: Sequence[tuple[int, int, Sequence[tuple[Path, Any]]]], first_seq: int = 0) -> Record:
    """A LogBlock item from events (step, ts_ms, [(leaf path, python value)]): floats in columns, the rest extras."""
    paths: dict[Path, int] = {}
    block: dict[str, Any] = {
        "first_seq": first_seq,
        "steps": [],
        "ts_ms": [],
        "paths": [],
        "counts": [],
        "path_idx": [],
        "values": [],
        "extras": [],
    }
    for i, (step, ts, values) in enumerate(events):
        block["steps"].append(step)
        block["ts_ms"].append(ts)
        count = 0
        for path, value in values:
            index = paths.setdefault(tuple(path), len(paths))
            if type(value) is float:
                block["path_idx"].append(index)
                block["values"].append(value)
                count += 1
            else:
                block["extras"].append({"event": i, "path": index, "value": wire(value)})
        block["counts"].append(count)
    block["paths"] = [list(p) for p in paths]
    return ("metricfold.LogBlock", block)


def block_of_logs(records: Sequence[Record]) -> Record:
    """The LogBlock that carries these standalone Log records (one producer, consecutive seqs)."""
    events = [(r[1]["step"], r[1]["ts_ms"], leaves(_unwire_values(r[1]["values"]))) for r in records]
    return log_block(events, first_seq=records[0][1]["seq"])


def _unwire(value: Any) -> Any:
    if type(value) is tuple and value[0] == "metricfold.Subtree":
        return {k: _unwire(v) for k, v in value[1]["values"].items()}
    if type(value) is tuple and value[0] == "metricfold.List":
        return [_unwire(v) for v in value[1]["items"]]
    return value  # scalars, and tensors as they are


def _unwire_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _unwire(v) for k, v in values.items()}


def batch(items: Iterable[Record], producer: str = "p1", run: tuple[str, str, str] | None = None) -> Record:
    entity, project, run_id = run or (ENTITY, PROJECT, RUN_ID)
    return (
        "metricfold.Batch",
        {"entity": entity, "project": project, "run_id": run_id, "producer_id": producer, "items": list(items)},
    )


def fresh() -> RunState:
    return new_run_state(ENTITY, PROJECT, RUN_ID)


def fold_all(records: Iterable[Record], state: RunState | None = None) -> RunState:
    """Fold records into a (new) state, asserting none is refused."""
    state = state or fresh()
    for record in records:
        assert fold_record(state, record) == [], record
    return state


class Logger:
    """Numbers seqs of one producer, like the SDK: ``lg.log({...}, step=3)`` -> a record with the next seq."""

    def __init__(self, producer: str = "p1", ts: int = 1_000) -> None:
        self.producer = producer
        self.seq = 0
        self.ts = ts

    def _env(self) -> dict[str, Any]:
        env = {"producer": self.producer, "seq": self.seq, "ts": self.ts}
        self.seq += 1
        self.ts += 1
        return env

    def log(self, values: Mapping[str, Any], step: int = 0) -> Record:
        return log(values, step=step, **self._env())

    def define(self, name: str, summary: str | Sequence[str] | None = None, **options: Any) -> Record:
        return define(name, summary, **options, **self._env())

    def update(self, values: Mapping[str, Any] | None = None, remove: Sequence[str] = ()) -> Record:
        return update(values, remove, **self._env())

    def started(self, **options: Any) -> Record:
        return started(**options, **self._env())

    def finished(self, exit_code: int = 0) -> Record:
        return finished(exit_code, **self._env())


# --- the builders agree with each other -----------------------------------------------------------------


def test_a_log_block_folds_like_the_standalone_logs_it_carries() -> None:
    lg = Logger()
    logs = [lg.log({"loss": 1.0 / (i + 1), "acc": {"top1": 0.5 + i / 10}, "epoch": i}, step=i) for i in range(5)]

    one_by_one = fold_all(logs)
    in_a_block = fold_all([batch([block_of_logs(logs)])])

    assert state_to_bytes(in_a_block) == state_to_bytes(one_by_one)
    assert summary(in_a_block) == {"loss": 0.2, "acc": {"top1": 0.9}, "epoch": 4}
