"""`metricfold demo`: the main job, end to end, against the configured Kafka and Redis.

Several trainer processes (two ranks for each of a few runs) log through the SDK with define_metric
(min, max, best, and the loss and gradient norm at the best accuracy's step: at_best) and summary overrides;
the consumer folds the topic into Redis; then the runs table with pinned summary columns, the same table
filtered (`acc.best > 0.9`, `loss.min < 0.5`) and one run's full summary are printed from Redis; finally the
runs page is served (`metricfold serve`) until Ctrl-C, unless `--no-serve`.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import time

from consumer.kafka_io import ensure_topics
from schemas.settings import Settings

__all__ = ["DEMO_FILTER", "run_demo", "run_trainers", "simulate_trainer"]

RUNS = ("resnet50-lr3e-4", "resnet50-lr1e-3", "vit-b16-lr3e-4")
#: the filtered table of step 4 (text filters, as `metricfold runs --where` takes them)
DEMO_FILTER = ("acc.best > 0.9", "loss.min < 0.5")
RANKS = 2
STEPS = 300


def simulate_trainer(settings: Settings, project: str, run_id: str, rank: int, steps: int, seed: int) -> None:
    """One rank of a training run: the loop a W&B user writes, with `import producer as mf`."""
    import numpy as np

    import producer as mf

    rng = random.Random(seed)
    lr = float(run_id.rsplit("lr", 1)[-1])
    run = mf.init(
        entity="demo",
        project=project,
        run_id=run_id,
        name=run_id,
        config={"lr": lr, "rank": rank, "world_size": RANKS, "model": run_id.split("-")[0]},
        tags=["demo", f"rank{rank}"],
        settings=settings,
    )
    with run:
        run.define_metric("loss", summary="min,last")
        run.define_metric("acc", summary="best", objective="maximize", at_best=["loss", "grad.norm"])
        run.define_metric("val/*", summary="mean,last")
        best_accuracy = 0.0
        for step in range(steps):
            progress = step / steps
            loss = 2.0 * math.exp(-3 * progress * lr * 1000) + rng.gauss(0, 0.05) + 0.1
            acc = min(0.99, 0.5 + 0.45 * (1 - math.exp(-4 * progress)) + rng.gauss(0, 0.01))
            values = {"loss": loss, "acc": acc, "lr": lr, "grad": {"norm": abs(rng.gauss(1, 0.3))}}
            if step % 50 == 49:
                values["val/loss"] = loss + 0.05
                values["val/acc"] = acc - 0.02
            run.log(values, step=step)
            if rank == 0 and acc > best_accuracy:
                best_accuracy = acc
                run.summary["best_accuracy"] = acc
        if rank == 0:
            run.summary["weights"] = np.random.default_rng(seed).normal(0, 0.02, size=4096)
            run.summary["notes"] = f"demo run, {steps} steps per rank"


def run_trainers(settings: Settings, project: str, steps: int) -> list[int | None]:
    """Every rank of every demo run as its own process (simulate_trainer), all at once; the exit codes of those that
    failed."""
    context = multiprocessing.get_context("spawn")
    trainers = [
        context.Process(target=simulate_trainer, args=(settings, project, run_id, rank, steps, 100 * i + rank))
        for i, run_id in enumerate(RUNS)
        for rank in range(RANKS)
    ]
    for trainer in trainers:
        trainer.start()
    for trainer in trainers:
        trainer.join()
    return [t.exitcode for t in trainers if t.exitcode != 0]


def run_demo(settings: Settings, *, steps: int = STEPS, serve: bool = True, port: int = 8765) -> int:
    from consumer.runner import Consumer
    from consumer.store import Store
    from consumer.tables import print_run, print_runs
    from schemas.filters import parse_where

    ensure_topics(settings)
    project = time.strftime("vision-%Y%m%d-%H%M%S")
    print(f"Kafka {settings.kafka_display} topic {settings.topic}; Redis {settings.redis_display} namespace {settings.namespace}")
    print(f"1. {len(RUNS) * RANKS} trainer processes ({len(RUNS)} runs x {RANKS} ranks) log {steps} steps each to demo/{project}")
    started = time.monotonic()
    failed = run_trainers(settings, project, steps)
    if failed:
        print(f"   {len(failed)} trainer processes failed (exit codes {failed})")
        return 1
    print(f"   done in {time.monotonic() - started:.1f} s")

    print("2. the consumer folds the topic into Redis until it has caught up")
    consumer = Consumer(settings)
    try:
        report = consumer.run(until_caught_up=True)
    finally:
        consumer.close()
    print(
        f"   {report.records} records, {report.events_applied} events applied in {report.seconds:.1f} s, "
        f"{report.dead_letters + report.undecodable} dead letters"
    )

    print("3. the runs table, sorted by acc.best, with pinned summary columns\n")
    with Store(settings) as store:
        print_runs(
            store,
            f"demo/{project}",
            sort="acc.best",
            ascending=False,
            limit=20,
            columns=["loss.min", "acc.best", "acc.best_step", "acc.at_best.loss", "best_accuracy", "weights.mean"],
        )
        print(f"\n4. the same table filtered: {' and '.join(DEMO_FILTER)} (from the sorted sets)\n")
        print_runs(
            store,
            f"demo/{project}",
            sort="acc.best",
            ascending=False,
            limit=20,
            columns=["acc.best", "loss.min", "acc.at_best.loss"],
            where=parse_where(DEMO_FILTER),
        )
        print("\n5. one run's summary\n")
        print_run(f"demo/{project}/{RUNS[0]}", store.read_run(f"demo/{project}/{RUNS[0]}"))
    print(f"\nTry: metricfold summary demo/{project}/{RUNS[1]}   or   metricfold runs demo/{project} --sort loss.min --ascending"
          f"   or   metricfold runs demo/{project} --where 'acc.at_best.loss < 0.5' --csv")
    if not serve:
        return 0
    return _serve_page(settings, f"demo/{project}", port)


def _serve_page(settings: Settings, project: str, port: int) -> int:
    """6. The runs page of the demo project, served until Ctrl-C (needs the serve extra)."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("\n(not serving the page: pip install 'metricfold[serve]' for `metricfold serve`)")
        return 0
    from consumer.web.server import serve
    from schemas.errors import ConfigError

    print("\n6. the runs page, sorted by acc.best with pinned columns (live: run more trainers and watch it change)\n")
    query = "?sort=acc.best&col=acc.best&col=acc.at_best.loss&col=loss.min&col=best_accuracy&col=weights.mean"
    try:
        return serve(settings, port=port, open_path=f"/projects/{project}{query}")
    except ConfigError as exc:  # the port is taken: any free one
        print(f"   ({exc}; using a free port)")
        return serve(settings, port=0, open_path=f"/projects/{project}{query}")
    except KeyboardInterrupt:
        return 0
