"""Pre-fill a topic with log events from several trainer processes (the real SDK); shared by the benchmarks."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import Any

from schemas.settings import Settings

__all__ = ["in_processes", "prefill"]


def in_processes(target: Callable[..., None], each_args: Sequence[tuple[Any, ...]]) -> None:
    """Run *target* once per argument tuple, each in a process of its own (spawned: a fresh SDK each), and wait for
    them all; a process that fails stops the benchmark."""
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=target, args=args) for args in each_args]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a trainer process failed with exit code {p.exitcode}")


def _produce(settings: Settings, run_ids: list[str], events_per_run: int) -> None:
    import producer as mf

    for run_id in run_ids:
        run = mf.init(entity="bench", project="consumer", run_id=run_id, settings=settings)
        for step in range(events_per_run):
            run.log({"loss": 1.0 / (step + 1), "acc": step / events_per_run, "lr": 0.001, "grad_norm": 0.5 + step % 7})
        run.finish()


def prefill(settings: Settings, events: int, runs: int, producers: int) -> float:
    per_run = max(1, events // runs)
    run_ids = [f"run{i:05d}" for i in range(runs)]
    chunks = [run_ids[i::producers] for i in range(producers)]
    started = time.perf_counter()
    in_processes(_produce, [(settings, chunk, per_run) for chunk in chunks])
    return time.perf_counter() - started
