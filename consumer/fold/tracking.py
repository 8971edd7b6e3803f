"""What the fold tells a run's change tracker before it changes the state (consumer.fold.changes reads it).

Every ``RunState`` carries one ``ChangeTracker``. The fold calls ``mark_dirty`` *before* it changes anything
under a top-level key, ``mark_all_dirty`` before it changes something every key may depend on (the
definitions), and sets ``meta_dirty`` when the run's meta changed; tensors that enter the state leave their
bytes in ``pending_blobs``. ``take_changes`` recomputes the views of the dirty keys and diffs them against
the ``shown_*`` views it handed out last time. After a load those are captured lazily: ``capture`` (set by
``state_from_bytes``) records a key's views the first time the key is marked dirty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["ChangeTracker", "FlatEntry"]

#: a flat path's value as handed out: (its JSON text, the number if it is a finite int or float)
FlatEntry = tuple[str, float | None]


class ChangeTracker:
    """Which parts of a state changed since the last ``take_changes``, and the views handed out then."""

    __slots__ = ("all_dirty", "capture", "captured", "dirty", "meta_dirty", "pending_blobs", "shown_flat",
                 "shown_meta", "shown_summary", "shown_tensors")

    def __init__(self) -> None:
        self.dirty: set[str] = set()  # top-level keys whose views may have changed
        self.all_dirty = False  # every key's views may have changed
        self.meta_dirty = False
        self.pending_blobs: dict[str, bytes] = {}  # sha256 -> .npy bytes of tensors that entered the state
        # the views handed out: key -> summary JSON; key -> {flat path: entry}; key -> {display path: sha256}
        self.shown_summary: dict[str, str] = {}
        self.shown_flat: dict[str, dict[str, FlatEntry]] = {}
        self.shown_tensors: dict[str, dict[str, str]] = {}
        self.shown_meta: dict[str, str] = {}
        self.captured: set[str] | None = None  # None: shown_* hold everything handed out; else the keys they hold
        self.capture: Callable[[str], None] | None = None  # records a key's current views in shown_* (after a load)

    def mark_dirty(self, key: str) -> None:
        """Call before changing anything that top-level *key*'s views depend on."""
        if key in self.dirty:
            return
        if self.captured is not None and key not in self.captured:
            self._capture(key)
        self.dirty.add(key)

    def mark_all_dirty(self, keys: Iterable[str]) -> None:
        """Call before changing something every key (*keys*: the summary's) may depend on: the definitions."""
        if self.captured is not None:
            for key in keys:
                if key not in self.captured and key not in self.dirty:
                    self._capture(key)
            self.captured = None  # everything shown is captured now
        self.all_dirty = True

    def _capture(self, key: str) -> None:
        assert self.captured is not None and self.capture is not None
        self.captured.add(key)
        self.capture(key)
