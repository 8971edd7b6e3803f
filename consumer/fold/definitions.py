"""Metric definitions (``define_metric``, RULES.md §4 rules 9, 12, 13, 20): parsing, merging, glob resolution.

A definition's name is a display path (``.`` separates levels, ``\\.`` is a literal dot) in which every
``*`` matches any run of characters, ``.`` included. Resolution for a leaf's display path:

1. a definition whose name equals the display path (exact) wins;
2. else, among the globs that match, the one with the most literal (non-``*``) characters wins;
   on a tie, the later definition (a re-definition of a name counts as new: it moves to the end);
3. a bare ``*`` never matches a display path that starts with ``_``.

Merging (rule 13): ``overwrite=True`` replaces the earlier definition of the same name. ``overwrite=False``
combines: options are the union, except that ``none`` resets them (the key is absent); objective and
step_metric keep the earlier value unless given; hidden is sticky; ``at_best`` names are united (earlier ones
first). A definition whose options include ``none`` and others is ``none``. ``summary=None`` (or an empty
list) means options were not given. Which options and objectives exist, and how they are spelled:
``schemas.summary_options``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from schemas.errors import ValidationError
from schemas.limits import Limits
from schemas.summary_options import check_at_best, check_best_has_objective, objective_of, summary_options_in

__all__ = ["Definition", "Resolver", "glob_pattern", "merge_definition", "parse_definition"]


@dataclasses.dataclass(frozen=True)
class Definition:
    """One metric definition as folded (options sorted; ``("none",)`` means the key is absent)."""

    name: str
    options: tuple[str, ...] | None = None
    objective: str | None = None
    step_metric: str | None = None
    hidden: bool = False
    at_best: tuple[str, ...] = ()  #: rule 20: names (globs) of the keys shown at the best step

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "summary": None if self.options is None else list(self.options),
            "objective": self.objective,
            "step_metric": self.step_metric,
            "hidden": self.hidden,
        }
        if self.at_best:  # only when used: definitions without it keep their bytes
            out["at_best"] = list(self.at_best)
        return out


def _options(raw: Sequence[str] | None, name: str) -> tuple[str, ...] | None:
    """The options as folded: sorted, ``("none",)`` if ``none`` is among them, None if none are given."""
    if raw is None:
        return None
    try:
        found = summary_options_in(map(str, raw))
    except ValidationError as exc:
        raise ValidationError(f"define_metric({name!r}): {exc}", key=name, value=exc.value) from exc
    if not found:
        return None
    if "none" in found:
        return ("none",)
    return tuple(sorted(found))


def parse_definition(datum: Mapping[str, Any], limits: Limits) -> tuple[Definition, bool]:
    """A DefineMetric datum -> (definition as given, overwrite); ValidationError for bad options."""
    name = datum["name"]
    if not isinstance(name, str) or not name:
        raise ValidationError("define_metric needs a non-empty metric name", value=name)
    longest = limits.max_key_length * limits.max_key_depth
    if len(name) > longest:
        raise ValidationError(f"define_metric name {name[:40]!r}... is longer than {longest} characters", key=name)
    given = datum.get("objective")
    objective = objective_of(given)
    if given is not None and objective is None:
        raise ValidationError(f"define_metric({name!r}): objective {given!r} must be 'minimize' or 'maximize'", key=name)
    step_metric = datum.get("step_metric")
    raw_options = datum.get("summary")
    options = _options(raw_options, name)
    named = None if options is None else summary_options_in(map(str, raw_options or ()))  # before none resets them
    at_best = check_at_best(name, datum.get("at_best"), named, limits, printable=False)
    definition = Definition(
        name=name,
        options=options,
        objective=objective,
        step_metric=step_metric if isinstance(step_metric, str) and step_metric else None,
        hidden=bool(datum.get("hidden", False)),
        at_best=at_best,
    )
    return definition, bool(datum.get("overwrite", False))


def merge_definition(old: Definition | None, new: Definition, *, overwrite: bool) -> Definition:
    """Rule 13; then rule 9's check that ``best`` has an objective (ValidationError if not)."""
    if old is not None and not overwrite:
        if new.options is None:
            options = old.options
        elif new.options == ("none",):
            options = new.options
        else:
            kept = () if old.options in (None, ("none",)) else old.options
            options = tuple(sorted(set(kept or ()) | set(new.options)))
        new = Definition(
            name=new.name,
            options=options,
            objective=new.objective or old.objective,
            step_metric=new.step_metric or old.step_metric,
            hidden=old.hidden or new.hidden,
            at_best=tuple(dict.fromkeys(old.at_best + new.at_best)),
        )
    check_best_has_objective(new.name, new.options, new.objective)
    return new


def glob_pattern(name: str) -> re.Pattern[str] | None:
    """The regular expression of a definition name with ``*`` globs (rule 12); None for a bare ``*``, which
    matches every display path that does not start with ``_``."""
    return None if name == "*" else re.compile(".*".join(map(re.escape, name.split("*"))), re.S)


class Resolver:
    """Which definition applies to a display path (see the module doc); memoised per display path."""

    def __init__(self, definitions: Sequence[Definition]) -> None:
        self._exact: dict[str, Definition] = {d.name: d for d in definitions}
        globs: list[tuple[int, int, re.Pattern[str] | None, Definition]] = []
        for position, d in enumerate(definitions):
            if "*" in d.name:
                pattern = glob_pattern(d.name)
                globs.append((len(d.name) - d.name.count("*"), position, pattern, d))
        globs.sort(key=lambda g: (g[0], g[1]), reverse=True)
        self._globs = globs
        self._memo: dict[str, Definition | None] = {}

    def resolve(self, display: str) -> Definition | None:
        try:
            return self._memo[display]
        except KeyError:
            pass
        found = self._exact.get(display)
        if found is None:
            for _, _, pattern, d in self._globs:
                if pattern is None:
                    if not display.startswith("_"):
                        found = d
                        break
                elif pattern.fullmatch(display):
                    found = d
                    break
        self._memo[display] = found
        return found
