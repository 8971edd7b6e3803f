"""``define_metric``'s summary options and objective: what is valid and how it is spelled (RULES.md §4 rules 9,
12, 13, 20), for the SDK (before sending) and the fold (again, on what arrives).

An option is matched without case and without whitespace (``" Best"`` is ``best``); a text may hold several,
comma-separated (``"min,max"``). ``best`` needs an objective, ``minimize`` or ``maximize`` (W&B's ``goal``).
``at_best`` (rule 20: the keys to show at the best step) is a name or a list of names, display paths with
``*`` globs like definition names, and needs ``best`` among the options given with it (``check_at_best``).
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.errors import LimitExceeded, ValidationError
from schemas.limits import Limits
from schemas.text import check_label, check_text

__all__ = [
    "OBJECTIVES",
    "SUMMARY_OPTIONS",
    "check_at_best",
    "check_best_has_objective",
    "objective_of",
    "summary_options_in",
]

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


def check_at_best(
    name: str, at_best: object, options: Iterable[str] | None, limits: Limits, *, printable: bool = True
) -> tuple[str, ...]:
    """Rule 20: ``at_best`` (None, a name, or a list of names; display paths, ``*`` globs) as a tuple without
    repeats, in the order given. Each is a non-empty text of at most ``max_key_length * max_key_depth``
    characters, at most ``max_values_per_event`` of them, and a non-empty list needs ``best`` among *options*
    (the options given with it, before ``none`` resets them). The SDK also refuses unprintable names
    (*printable*, ``check_label``); the fold takes any valid text, as it does for definition names."""
    if at_best is None:
        return ()
    if isinstance(at_best, str):
        given: list[object] = [at_best]
    elif isinstance(at_best, (list, tuple)):
        given = list(at_best)
    else:
        raise ValidationError(
            f"define_metric({name!r}, at_best=...) takes a name or a list of names (globs allowed), "
            f"got {type(at_best).__name__} {at_best!r:.60}",
            key=name,
        )
    if len(given) > limits.max_values_per_event:
        raise LimitExceeded(
            f"define_metric({name!r}) has {len(given)} at_best names, more than "
            f"max_values_per_event={limits.max_values_per_event}",
            key=name,
            limit="max_values_per_event",
            maximum=limits.max_values_per_event,
        )
    longest = limits.max_key_length * limits.max_key_depth
    names: dict[str, None] = {}
    for pattern in given:
        if not isinstance(pattern, str) or not pattern or len(pattern) > longest:
            raise ValidationError(
                f"define_metric({name!r}): each at_best name must be a non-empty str of at most "
                f"max_key_length * max_key_depth = {longest} characters, got {type(pattern).__name__} {pattern!r:.60}",
                key=name,
                value=pattern,
            )
        (check_label if printable else check_text)(pattern, f"define_metric({name[:40]!r}) at_best name {pattern[:40]!r}")
        names[pattern] = None
    if given and (options is None or "best" not in options):
        raise ValidationError(
            f"define_metric({name!r}, at_best=...) needs summary with 'best' (and an objective): at_best is what "
            "the summary shows at the best step",
            key=name,
        )
    return tuple(names)
