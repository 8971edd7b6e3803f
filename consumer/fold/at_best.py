"""Metrics at the best step (RULES.md §4 rule 20): ``define_metric(name, summary="best", objective=...,
at_best=[names or globs])`` shows, beside the best, the values that the producer of the best logged at its step.

While some definition of the run names ``at_best`` keys (``AtBest.active``), the fold remembers:

- per producer, a ``Stretch``: its current step and the last value it logged there for each key (display
  path) that matches any definition's ``at_best`` names. A value the producer logs at another step starts a
  new stretch (a new object: the old one stays with the snapshots that hold it);
- per leaf whose definition has ``best`` and ``at_best``, a ``Snapshot`` of its best as the fold took it: the
  best value, its step, its producer and that producer's stretch when the value became best (rule 9's best:
  strictly better, so a tie keeps the earlier one). The stretch is shared, so what the producer logs later
  at the same step (the ``commit=False`` pattern, an explicit ``step=``) lands in the snapshot too; another
  producer's values never do. A new best replaces the whole snapshot.

The view (``AtBest.view``) filters the snapshot's values by the leaf's definition's ``at_best`` names, sorted
by display path; it shows ``{}`` when the snapshot is not of the best shown (no snapshot: the best came before
the definition, or while it had no ``at_best``). Runs whose definitions never use ``at_best`` keep nothing
here and pay nothing: the LogBlock fast path is taken only while ``active`` is false (consumer.fold.log_block).

State bytes: ``to_json`` is None when there is nothing to keep, so a state without it keeps its bytes. A
snapshot whose stretch is still its producer's current one is written without its values (they are the
stretch's), so the sharing survives a reload.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from consumer.fold.definitions import Definition, glob_pattern

__all__ = ["AtBest", "NameMatcher", "Snapshot", "Stretch"]

Path = tuple[str, ...]


class NameMatcher:
    """Whether a display path matches any of some names (rule 12's syntax: exact, or ``*`` globs; a bare
    ``*`` never matches a display path that starts with ``_``); memoised per display path."""

    __slots__ = ("_exact", "_globs", "_memo")

    def __init__(self, names: Iterable[str]) -> None:
        self._exact: set[str] = set()
        self._globs: list[re.Pattern[str] | None] = []
        for name in names:
            if "*" in name:
                self._globs.append(glob_pattern(name))
            else:
                self._exact.add(name)
        self._memo: dict[str, bool] = {}

    def __call__(self, display: str) -> bool:
        found = self._memo.get(display)
        if found is None:
            found = display in self._exact or any(
                (not display.startswith("_")) if pattern is None else pattern.fullmatch(display) is not None
                for pattern in self._globs
            )
            self._memo[display] = found
        return found


class Stretch:
    """What one producer logged at one step, for keys matching some ``at_best`` name (display path -> value)."""

    __slots__ = ("holders", "step", "values")

    def __init__(self, step: int, values: dict[str, Any] | None = None) -> None:
        self.step = step
        self.values: dict[str, Any] = {} if values is None else values
        self.holders: set[Path] = set()  # leaves whose snapshot shares this stretch (derived; rebuilt on load)


class Snapshot:
    """A leaf's best as the fold took it (see the module doc)."""

    __slots__ = ("best", "producer", "step", "stretch")

    def __init__(self, best: int | float, step: int, producer: str, stretch: Stretch) -> None:
        self.best, self.step, self.producer, self.stretch = best, step, producer, stretch


class AtBest:
    """A run's rule-20 memory: producers' stretches and leaves' snapshots (see the module doc)."""

    __slots__ = ("_matchers", "active", "matches", "recent", "snapshots")

    def __init__(self) -> None:
        self.active = False  #: some definition names at_best keys (derived from the definitions)
        self.recent: dict[str, Stretch] = {}  #: producer id -> its current stretch
        self.snapshots: dict[Path, Snapshot] = {}  #: leaf path -> the snapshot of its best
        self.matches = NameMatcher(())  #: does a display path match any definition's at_best names
        self._matchers: dict[tuple[str, ...], NameMatcher] = {}

    def configure(self, definitions: Iterable[Definition]) -> None:
        """Follow the run's definitions (after each DefineMetric, and on load). When none names at_best keys
        any more, everything kept is dropped: a later at_best starts afresh."""
        names = tuple(dict.fromkeys(name for d in definitions for name in d.at_best))
        self.active = bool(names)
        self.matches = NameMatcher(names)
        self._matchers = {}
        if not names:
            self.recent.clear()
            self.snapshots.clear()

    def stretch(self, producer: str, step: int) -> Stretch:
        """*producer*'s stretch at *step* (a new one when it last logged at another step)."""
        current = self.recent.get(producer)
        if current is not None and current.step == step:
            return current
        if current is not None and not current.values and not current.holders:
            current.step = step  # nothing kept of the old one: reuse it
            return current
        current = self.recent[producer] = Stretch(step)
        return current

    def take(self, path: Path, producer: str, stretch: Stretch, best: int | float, step: int) -> None:
        """The value just logged at *path* is its new best: the snapshot is *stretch*, from now on."""
        self.drop(path)
        self.snapshots[path] = Snapshot(best, step, producer, stretch)
        stretch.holders.add(path)

    def drop(self, path: Path) -> None:
        """Forget the snapshot of *path* (a new best, or the leaf was dropped under rule 2)."""
        old = self.snapshots.pop(path, None)
        if old is not None:
            old.stretch.holders.discard(path)

    def view(self, path: Path, names: tuple[str, ...], best: Any, best_step: Any) -> dict[str, Any]:
        """The ``at_best`` dict of *path*'s best (*best* at *best_step*): display path -> value."""
        snapshot = self.snapshots.get(path)
        if snapshot is None or snapshot.step != best_step or snapshot.best != best:
            return {}
        matches = self._matchers.get(names)
        if matches is None:
            matches = self._matchers[names] = NameMatcher(names)
        values = snapshot.stretch.values
        return {key: values[key] for key in sorted(values) if matches(key)}

    def to_json(self) -> dict[str, Any] | None:
        """The part of the canonical state document; None when there is nothing to keep."""
        recent = {pid: [s.step, s.values] for pid, s in self.recent.items() if s.values or s.holders}
        best = sorted(
            [list(path), s.producer, s.step, s.best, None if self.recent.get(s.producer) is s.stretch else s.stretch.values]
            for path, s in self.snapshots.items()
        )
        document: dict[str, Any] = {}
        if recent:
            document["recent"] = recent
        if best:
            document["best"] = best
        return document or None

    @classmethod
    def from_json(cls, document: Mapping[str, Any] | None, definitions: Iterable[Definition]) -> AtBest:
        """What ``to_json`` wrote (None: nothing), following *definitions*."""
        memory = cls()
        if document:
            memory.recent = {pid: Stretch(step, dict(values)) for pid, (step, values) in document.get("recent", {}).items()}
            for row, producer, step, best, values in document.get("best", ()):
                stretch = memory.recent[producer] if values is None else Stretch(step, dict(values))
                memory.take(tuple(row), producer, stretch, best, step)
        memory.configure(definitions)
        return memory
