"""`metricfold demo` (what `make demo` runs): six trainer processes, the fold, the runs table and one run's summary,
printed from what Redis holds."""

from __future__ import annotations

import json
import re

import pytest

from consumer.demo import DEMO_FILTER, RANKS, RUNS, STEPS
from consumer.store import Store
from schemas.settings import Settings

from support import metricfold_cli

pytestmark = pytest.mark.integration


def test_demo_runs_the_trainers_folds_them_and_prints_what_redis_holds(settings: Settings) -> None:
    done = metricfold_cli(settings, "demo", "--no-serve", timeout=180)

    assert done.returncode == 0, done.stdout + done.stderr
    project = re.search(r"log \d+ steps each to (demo/vision-[0-9-]+)", done.stdout)
    assert project, done.stdout
    applied = re.search(r"(\d+) events applied in .*, 0 dead letters", done.stdout)
    assert applied, done.stdout
    with Store(settings) as store:
        runs = {run_id: store.read_run(f"{project[1]}/{run_id}") for run_id in RUNS}
    # every rank of every run logged, and the fold counted each event once
    assert sum(int(run["meta"]["events"]) for run in runs.values()) == int(applied[1])
    for run_id, run in runs.items():
        assert run["meta"]["state"] == "finished"
        assert set(json.loads(run["meta"]["tags"])) == {"demo", *(f"rank{r}" for r in range(RANKS))}
        assert 0 <= int(run["summary"]["acc"]["best_step"]) < STEPS
        # the table shows each run's best accuracy as Redis holds it
        row = next(line for line in done.stdout.splitlines() if line.startswith(f"{run_id} "))
        assert f"{run['summary']['acc']['best']:.6g}" in row.split()
    # at_best: the loss and gradient norm logged in the call of the best accuracy
    for run in runs.values():
        assert set(run["summary"]["acc"]["at_best"]) == {"loss", "grad.norm"}
    # the filtered table lists exactly the runs that pass DEMO_FILTER as Redis holds them
    assert DEMO_FILTER == ("acc.best > 0.9", "loss.min < 0.5")
    expected = {r for r, run in runs.items() if run["summary"]["acc"]["best"] > 0.9 and run["summary"]["loss"]["min"] < 0.5}
    assert expected and expected != set(RUNS)  # the filter keeps some runs and drops others
    filtered = done.stdout.split("4. the same table filtered", 1)[1].split("5. one run's summary", 1)[0]
    assert {line.split()[0] for line in filtered.splitlines() if line.split() and line.split()[0] in RUNS} == expected
    first = runs[RUNS[0]]
    assert f"run {project[1]}/{RUNS[0]}  name={RUNS[0]}  state=finished  events={first['meta']['events']}" in done.stdout
    assert "Traceback" not in done.stderr
