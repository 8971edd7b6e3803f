"""metricfold's trainer SDK (RULES.md §2): a W&B script ports by changing the import.

    import producer as mf

    run = mf.init(project="vision", config={"lr": 0.1})
    run.define_metric("loss", summary="min")
    run.log({"loss": 0.31, "grad": {"norm": 1.2}})
    run.summary["best_accuracy"] = 0.91
    run.finish()

``mf.run`` and ``mf.summary`` are the current run (the most recently started one still open) and its
summary; ``mf.log``, ``mf.define_metric`` and ``mf.finish`` act on it.
"""

from __future__ import annotations

from typing import Any

from producer.api import Api, ApiRun, ApiSummary
from producer.delivery import SendReport, SpoolWarning
from producer.runs import Run
from producer.sender import SenderOptions
from producer.session import current_run, define_metric, finish, init, log, open_runs
from producer.spool import SyncReport, sync
from producer.summaries import Summary
from schemas.errors import (
    BrokerUnavailable,
    ConfigError,
    LimitExceeded,
    MetricfoldError,
    ValidationError,
)
from schemas.limits import Limits
from schemas.settings import Settings

__all__ = [
    "Api",
    "ApiRun",
    "ApiSummary",
    "BrokerUnavailable",
    "ConfigError",
    "LimitExceeded",
    "Limits",
    "MetricfoldError",
    "Run",
    "SendReport",
    "SenderOptions",
    "Settings",
    "SpoolWarning",
    "Summary",
    "SyncReport",
    "ValidationError",
    "current_run",
    "define_metric",
    "finish",
    "init",
    "log",
    "open_runs",
    "run",
    "summary",
    "sync",
]


def __getattr__(name: str) -> Any:
    """``producer.run``: the current run (None if none is open); ``producer.summary``: its summary."""
    if name == "run":
        return current_run()
    if name == "summary":
        current = current_run()
        if current is None:
            raise MetricfoldError("producer.summary needs an open run: call producer.init() first")
        return current.summary
    raise AttributeError(f"module 'producer' has no attribute {name!r}")
