"""``define_metric``'s summary options and objective: what is valid and how it is spelled (RULES.md §4 rules 9,
12, 13), for the SDK (before sending) and the fold (again, on what arrives).

An option is matched without case and without whitespace (``" Best"`` is ``best``); a text may hold several,
comma-separated (``"min,max"``). ``best`` needs an objective, ``minimize`` or ``maximize`` (W&B's ``goal``).
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.errors import ValidationError

__all__ = ["OBJECTIVES", "SUMMARY_OPTIONS", "check_best_has_objective", "objective_of", "summary_options_in"]

#: In the order the SDK sends them (deterministic, whatever order the caller gave).
SUMMARY_OPTIONS = ("min", "max", "mean", "first", "last", "best", "none")
OBJECTIVES = ("minimize", "maximize")


def summary_options_in(parts: Iterable[str]) -> set[str]:
    """The options named by *parts* (each a text of comma-separated options; blank ones are skipped);
    ValidationError naming the first unknown option."""
    found: set[str] = set()
    for text in parts:
        for part in text.split(","):
            option = "".join(part.split()).lower()
            if not option:
                continue
            if option not in SUMMARY_OPTIONS:
                raise ValidationError(
                    f"unknown summary option {part.strip()!r}: use any of {', '.join(SUMMARY_OPTIONS)}", value=part
                )
            found.add(option)
    return found


def objective_of(value: object) -> str | None:
    """``"minimize"`` or ``"maximize"`` for *value* spelled in any case and spacing; None for anything else."""
    if not isinstance(value, str):
        return None
    objective = "".join(value.split()).lower()
    return objective if objective in OBJECTIVES else None


def check_best_has_objective(name: str, options: Iterable[str] | None, objective: str | None) -> None:
    """Rule 9: a ``best`` summary needs an objective."""
    if options is not None and "best" in options and objective is None:
        raise ValidationError(
            f"define_metric({name!r}, summary=...best...) needs objective='minimize' or 'maximize'", key=name
        )
