"""A project of runs logged with the real SDK and folded by the real consumer, for the web tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from redis_cluster import fresh_settings_in

import producer as mf
from consumer.web.server import ServerThread
from schemas.settings import Settings

from support import consume_all

__all__ = ["EVIL", "RUNS", "fill_project", "folded_project", "loss_min", "served"]

RUNS = 55  # more than a page of 50
EVIL = '<script>alert("x")</script>'


def loss_min(i: int) -> float:
    return round(0.05 + 0.01 * ((i * 37) % RUNS), 6)


def fill_project(settings: Settings, runs: int = RUNS) -> None:
    """team/vision: runs r00..r54 with loss (min,max), acc (best), a nested grad.norm; r00 has a tensor, config,
    tags, a hostile metric name and string value; r01 crashed."""
    for i in range(runs):
        run = mf.init(
            entity="team",
            project="vision",
            run_id=f"r{i:02d}",
            name=f"run-{i:02d}",
            config={"lr": 0.001 * (i + 1), "model": {"depth": 50}},
            tags=["web", f"group{i % 3}"],
            settings=settings,
        )
        run.define_metric("loss", summary="min,max")
        run.define_metric("acc", summary="best", objective="maximize")
        low = loss_min(i)
        for step, loss in enumerate((low + 0.5, low, low + 0.2)):
            run.log({"loss": loss, "acc": 1 - loss, "grad": {"norm": 1.0 + step}}, step=step)
        if i == 0:
            run.summary["weights"] = np.linspace(-1.0, 1.0, 1000)
            run.summary["note"] = EVIL
            run.log({EVIL: 1.5})
        run.finish(exit_code=1 if i == 1 else 0)


@contextmanager
def folded_project(stack: Any, request: pytest.FixtureRequest, runs: int = RUNS) -> Iterator[Settings]:
    """`fill_project` in a fresh topic and namespace, folded by the consumer, on the standalone Redis or the session's
    Redis Cluster (*request.param*: a module fixture's "standalone" or "cluster"; *stack*: conftest.Stack)."""
    with fresh_settings_in(stack, request.param, request) as made:
        fill_project(made, runs=runs)
        consume_all(made)
        yield made


@contextmanager
def served(settings: Settings) -> Iterator[httpx.Client]:
    """`metricfold serve` of *settings* in a thread, and an HTTP client for it."""
    with ServerThread(settings) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client
