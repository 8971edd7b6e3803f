"""The garbage collector's settings for a process that folds events for long (`consume`, `replay`)."""

from __future__ import annotations

import gc


def tune_gc_for_a_long_fold() -> None:
    """The fold makes many short-lived containers and keeps every cached run's state: with CPython's default
    thresholds the consumer collected ~35 times a second and scanned everything it had imported on each full
    collection (bench/load.py, 20,000 events/s: ~1 s of GC per 40 s, full collections up to 80 ms, each one
    a pause in the live fold). Leave what is loaded by now (modules, schemas, kafka-python's protocol
    tables) out of collections, and collect less often: ~0.1 s per 40 s, pauses up to ~40 ms. Memory is
    unaffected (reference counting frees almost everything; cycles are still collected)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
