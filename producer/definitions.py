"""Checks and normalisation of define_metric's arguments (RULES.md §4 rules 9, 12, 13, 20; the options and
``at_best`` themselves are ``schemas.summary_options``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.errors import LimitExceeded, ValidationError
from schemas.limits import Limits
from schemas.summary_options import (
    SUMMARY_OPTIONS,
    check_at_best,
    check_best_has_objective,
    objective_of,
    summary_options_in,
)
from schemas.text import check_label

__all__ = ["define_metric_datum", "normalize_objective", "normalize_summary"]


def normalize_summary(summary: str | Iterable[str] | None) -> list[str] | None:
    """``"Min, max"`` or ``["MAX", "min"]`` -> ``["min", "max"]``; unknown options raise ValidationError."""
    if summary is None:
        return None
    if isinstance(summary, str):
        parts = [summary]
    elif isinstance(summary, Iterable):
        parts = list(summary)
        for part in parts:
            if not isinstance(part, str):
                raise ValidationError(f"summary options must be strings, got {part!r}", value=part)
    else:
        raise ValidationError(f"summary must be a str like 'min,max' or a list of options, got {summary!r}")
    chosen = summary_options_in(parts)
    if not chosen:
        raise ValidationError("summary names no option: use any of " + ", ".join(SUMMARY_OPTIONS), value=summary)
    return [option for option in SUMMARY_OPTIONS if option in chosen]


def normalize_objective(objective: str | None, goal: str | None) -> str | None:
    """``objective`` (or W&B's ``goal``): ``"minimize"`` | ``"maximize"``, case-insensitive."""
    if objective is not None and goal is not None and str(objective).lower() != str(goal).lower():
        raise ValidationError(f"objective={objective!r} and goal={goal!r} disagree: give one of them")
    value = objective if objective is not None else goal
    if value is None:
        return None
    checked = objective_of(value)
    if checked is None:
        raise ValidationError(f"objective must be 'minimize' or 'maximize', got {value!r}", value=value)
    return checked


def _check_name(what: str, name: object, limits: Limits) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError(f"define_metric {what} must be a non-empty str, got {name!r}", value=name)
    check_label(name, f"define_metric {what} {name[:40]!r}")
    longest = limits.max_key_length * limits.max_key_depth
    if len(name) > longest:
        raise LimitExceeded(
            f"define_metric {what} {name[:40]!r}... has {len(name)} characters; the limit is "
            f"max_key_length * max_key_depth = {longest}",
            key=name,
            limit="max_key_length",
            maximum=longest,
        )
    return name


def define_metric_datum(
    name: object,
    *,
    step_metric: object,
    hidden: object,
    summary: Any,
    objective: str | None,
    goal: str | None,
    overwrite: object,
    limits: Limits,
    at_best: object = None,
) -> dict[str, Any]:
    """The DefineMetric fields after the envelope, checked; raises ValidationError before anything is sent."""
    checked_name = _check_name("name", name, limits)
    options = normalize_summary(summary)
    checked_objective = normalize_objective(objective, goal)
    check_best_has_objective(checked_name, options, checked_objective)
    checked_at_best = check_at_best(checked_name, at_best, options, limits)
    if step_metric is not None:
        step_metric = _check_name("step_metric", step_metric, limits)
    if not isinstance(hidden, bool) or not isinstance(overwrite, bool):
        raise ValidationError(f"hidden and overwrite must be True or False, got {hidden!r} and {overwrite!r}")
    return {
        "name": checked_name,
        "summary": options,
        "objective": checked_objective,
        "step_metric": step_metric,
        "hidden": hidden,
        "overwrite": overwrite,
        "at_best": list(checked_at_best),
    }
