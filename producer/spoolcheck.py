"""Checks of a spooled record before ``metricfold sync`` publishes it: is it what the SDK would have sent?

A spool file is a local file anyone can edit, copy or corrupt; what sync publishes lands in the permanent
topic. So each record is decoded (``schemas.codec``) and its values go through the SDK's own checks, the
entry points it calls before sending (``schemas.limits``, ``schemas.paths``, ``schemas.run_fields``,
``schemas.values``, ``producer.definitions``): run path parts, names, tags, config, keys, values and
tensors, limits. Nothing here restates a rule; it only turns the decoded event back into what the SDK's
functions take. The record's size is checked against the Kafka record limit first
(``Limits.kafka_max_record_bytes``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from producer.definitions import define_metric_datum
from schemas.codec import default_codec
from schemas.errors import LimitExceeded, ValidationError
from schemas.events import (
    BATCH,
    DEFINE_METRIC,
    EVENT_TYPES,
    LIST,
    LOG,
    LOG_BLOCK,
    RUN_FINISHED,
    RUN_STARTED,
    SUBTREE,
    SUMMARY_UPDATE,
    TENSOR,
)
from schemas.limits import Limits, check_run_part
from schemas.paths import check_key
from schemas.run_fields import check_config_json, check_run_label, check_run_name, check_run_notes, check_tags
from schemas.tensors import TENSOR_KINDS
from schemas.values import INT64_MAX, Converter, to_python

__all__ = ["check_record", "check_record_size"]

_RUN_EVENTS = frozenset(EVENT_TYPES) - {BATCH}


def check_record_size(key: str, value: bytes, limits: Limits) -> None:
    """Raise LimitExceeded if the record cannot be one Kafka record (the limit the SDK cuts its batches to)."""
    size = len(key.encode("utf-8", "surrogatepass")) + len(value)
    limit = limits.kafka_max_record_bytes
    if size > limit:
        raise LimitExceeded(
            f"the record is {size / 2**20:.1f} MiB, more than the Kafka record limit of {limit / 2**20:.0f} MiB "
            "(max_tensor_bytes + 8 MiB; METRICFOLD_MAX_TENSOR_BYTES): Kafka would refuse it",
            limit="kafka_max_record_bytes",
            maximum=limit,
        )


def check_record(key: str, value: bytes, limits: Limits) -> int:
    """Check one spooled record (its Kafka key and value) as the SDK checks what it sends; return how many events
    it holds. Raises CodecError if the value is not a metricfold event, ValidationError (or LimitExceeded) naming
    the first thing the SDK would have refused."""
    check_record_size(key, value, limits)
    name, datum = default_codec().decode(value)
    if name == BATCH:
        run_path = _envelope(datum)
        items = list(datum["items"])
        if not items:
            raise ValidationError("the batch holds no event")
        events = 0
        for item_name, item in items:
            if item_name != LOG_BLOCK and _envelope(item) != run_path:
                raise ValidationError(f"a {item_name} of run {_envelope(item)} in a batch of run {run_path}")
            events += _check_event(item_name, item, limits)
    elif name in _RUN_EVENTS:
        run_path = _envelope(datum)
        events = _check_event(name, datum, limits)
    else:
        raise ValidationError(f"a {name} is not an event the SDK sends on its own")
    if key != run_path:
        raise ValidationError(f"the record's key {key!r:.80} is not the run path {run_path!r} of its events")
    return events


def _envelope(datum: Mapping[str, Any]) -> str:
    parts = [check_run_part(part, datum[part]) for part in ("entity", "project", "run_id")]
    producer_id = datum["producer_id"]
    try:
        uuid.UUID(producer_id)
    except ValueError:
        raise ValidationError(f"producer id {producer_id!r:.80} is not a UUID, as the SDK makes them") from None
    return "/".join(parts)


def _check_seq(name: str, value: int, what: str = "seq") -> None:
    if not 0 <= value <= INT64_MAX:
        raise ValidationError(f"a {name} has {what} {value}: the SDK counts from 0")


def _check_event(name: str, datum: Mapping[str, Any], limits: Limits) -> int:
    if name == LOG_BLOCK:
        return _check_block(datum, limits)
    _check_seq(name, datum["seq"])
    if name == RUN_STARTED:
        check_run_name(datum["name"], limits)
        check_config_json(datum["config_json"])
        check_tags(datum["tags"], limits)
        check_run_notes(datum["notes"], limits)  # decoded to the current schema: null in older records
        check_run_label(datum["group"], "group", limits)
        check_run_label(datum["job_type"], "job_type", limits)
    elif name == LOG:
        _check_seq(name, datum["step"], "step")
        _check_logged({key: _python(wire) for key, wire in datum["values"].items()}, limits)
    elif name == SUMMARY_UPDATE:
        converter = Converter(limits)  # as Summary.update: one converter for the whole update
        for key, wire in datum["set"].items():
            check_key(key, limits)
            if wire is not None:
                converter.value(_python(wire), key)
        for key in datum["remove"]:
            check_key(key, limits)
    elif name == DEFINE_METRIC:
        define_metric_datum(
            datum["name"], step_metric=datum["step_metric"], hidden=datum["hidden"], summary=datum["summary"],
            objective=datum["objective"], goal=None, overwrite=datum["overwrite"], limits=limits,
            at_best=datum.get("at_best"),
        )
    elif name != RUN_FINISHED:
        raise ValidationError(f"a {name} is not an event the SDK sends in a batch")
    return 1


def _check_block(block: Mapping[str, Any], limits: Limits) -> int:
    """A LogBlock: each of its events rebuilt as the dict the SDK's log() took, then checked as log() checks it."""
    _check_seq("LogBlock", block["first_seq"], "first seq")
    steps, counts, paths, path_idx, values = (block[f] for f in ("steps", "counts", "paths", "path_idx", "values"))
    if not steps or len(block["ts_ms"]) != len(steps) or len(counts) != len(steps) or len(path_idx) != len(values) \
            or sum(counts) != len(values) or min(counts) < 0:
        raise ValidationError("a LogBlock's columns do not fit together (steps, ts_ms, counts, values)")
    logged: list[dict[tuple[str, ...], Any]] = [{} for _ in steps]
    pairs = iter(zip(path_idx, values, strict=True))
    for event, count in enumerate(counts):
        for _ in range(count):
            index, number = next(pairs)
            _put(logged[event], paths, index, number)
    for extra in block["extras"]:
        if not 0 <= extra["event"] < len(steps):
            raise ValidationError(f"a LogBlock extra names event {extra['event']} of {len(steps)}")
        _put(logged[extra["event"]], paths, extra["path"], _python(extra["value"]))
    for step, leaves in zip(steps, logged, strict=True):
        _check_seq("LogBlock", step, "step")
        _check_logged(_nested(leaves), limits)
    return len(steps)


def _put(leaves: dict[tuple[str, ...], Any], paths: list[list[str]], index: int, value: Any) -> None:
    if not 0 <= index < len(paths) or not paths[index]:
        raise ValidationError(f"a LogBlock value names path {index} of {len(paths)}")
    path = tuple(paths[index])
    if path in leaves:
        raise ValidationError(f"a LogBlock event has two values at {'.'.join(path)[:80]!r}")
    leaves[path] = value


def _nested(leaves: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    """Leaf paths -> the nested dict log() was given (a path that is also another's prefix is refused)."""
    root: dict[str, Any] = {}
    for path in sorted(leaves, key=len, reverse=True):  # deepest first: a shorter path then finds its dict
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValidationError(f"a LogBlock event has values at {'.'.join(path)[:80]!r} and above it")
        if path[-1] in node:
            raise ValidationError(f"a LogBlock event has values at {'.'.join(path)[:80]!r} and below it")
        node[path[-1]] = leaves[path]
    return root


def _check_logged(data: dict[str, Any], limits: Limits) -> None:
    Converter(limits).log_leaves(data, [], [])


def _python(wire: Any) -> Any:
    """The value the SDK was given for a wire value (tensors as their arrays), with each tensor's kind checked."""
    if type(wire) is tuple:
        name, datum = wire
        if name == TENSOR and datum["kind"] not in TENSOR_KINDS:
            raise ValidationError(f"tensor kind {datum['kind']!r:.80} is not one of {', '.join(TENSOR_KINDS)}")
        if name == SUBTREE:
            return {k: _python(v) for k, v in datum["values"].items()}
        if name == LIST:
            return [_python(v) for v in datum["items"]]
    return to_python(wire, "array")
