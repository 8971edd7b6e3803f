"""The `metricfold` command as a user runs it: real subprocesses against the real broker and Redis."""

from __future__ import annotations

import contextlib
import datetime
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import producer as mf
from consumer.digest import digest_generation
from consumer.store import Store
from schemas.settings import Settings

from support import cli_env, consume_all, metricfold_cli

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def log_runs(settings: Settings) -> None:
    for run_id, losses in (("a", [0.9, 0.3, 0.5]), ("b", [0.8, 0.1, 0.2])):
        with mf.init(entity="team", project="vision", run_id=run_id, name=f"run-{run_id}", settings=settings) as run:
            run.define_metric("loss", summary="min,last")
            for loss in losses:
                run.log({"loss": loss})


def test_consume_until_caught_up_then_summary_and_runs_print_readable_tables(settings: Settings) -> None:
    log_runs(settings)

    consumed = metricfold_cli(settings, "consume", "--until-caught-up", "--quiet")
    summary = metricfold_cli(settings, "summary", "team/vision/b")
    runs = metricfold_cli(settings, "runs", "team/vision", "--sort", "loss.min", "--ascending")
    as_json = metricfold_cli(settings, "runs", "team/vision", "--sort", "loss.min", "--json")

    assert consumed.returncode == 0, consumed.stderr
    assert "events applied" in consumed.stderr
    assert summary.returncode == 0 and "loss.min" in summary.stdout and "0.1" in summary.stdout
    assert runs.returncode == 0
    rows = [line.split()[0] for line in runs.stdout.splitlines()[3:]]
    assert rows == ["b", "a"]
    assert [r["run_id"] for r in json.loads(as_json.stdout)["runs"]] == ["a", "b"]


def test_consume_timings_write_one_json_line_per_batch_with_its_records_runs_and_ages(
    settings: Settings, tmp_path: Path
) -> None:
    began_ms = time.time() * 1000
    log_runs(settings)
    timings = tmp_path / "timings.jsonl"

    consumed = metricfold_cli(settings, "consume", "--until-caught-up", "--quiet", "--timings", str(timings))
    elapsed_ms = time.time() * 1000 - began_ms

    assert consumed.returncode == 0, consumed.stderr
    records = int(consumed.stderr.split("done: ")[1].split(" records")[0])
    batches = [json.loads(line) for line in timings.read_text().splitlines()]
    assert records > 0 and sum(b["records"] for b in batches) == records
    assert sum(b["runs"] for b in batches) >= 2  # both runs were written
    for b in batches:
        assert 1 <= b["runs"] <= b["records"]
        assert min(b["poll_ms"], b["fold_ms"], b["redis_ms"]) >= 0
        # ages from the records' Kafka timestamps (the SDK's clock at send, this host's): sent after began_ms
        assert 0 <= b["newest_age_ms"] <= b["oldest_age_ms"] <= elapsed_ms
        assert began_ms / 1000 <= b["at"] <= time.time()


def test_bad_arguments_get_a_clear_error_and_exit_code_2(settings: Settings, tmp_path: Path) -> None:
    bad_path = metricfold_cli(settings, "summary", "not-a-run-path")
    bad_project = metricfold_cli(settings, "runs", "team/vision/extra")
    missing = metricfold_cli(settings, "summary", "team/vision/nothing")
    bad_offset = metricfold_cli(settings, "replay", "--until-offset", "zero")
    bad_timings = metricfold_cli(settings, "consume", "--until-caught-up", "--timings", str(tmp_path / "no-such-dir" / "t.jsonl"))

    assert bad_path.returncode == 2 and "entity/project/run_id" in bad_path.stderr
    assert bad_project.returncode == 2 and "entity/project" in bad_project.stderr
    assert missing.returncode == 2 and "no active generation" in missing.stderr
    assert bad_offset.returncode == 2 and "PARTITION:OFFSET" in bad_offset.stderr
    assert bad_timings.returncode == 2 and "--timings: cannot open" in bad_timings.stderr


def test_replay_until_time_builds_the_summary_as_it_was_then_and_digest_matches_the_api(settings: Settings) -> None:
    with mf.init(entity="team", project="vision", run_id="t", settings=settings) as run:
        run.log({"acc": 0.5})
    time.sleep(1.5)
    cut = datetime.datetime.now(tz=datetime.UTC).isoformat()
    time.sleep(0.5)
    with mf.init(entity="team", project="vision", run_id="t", settings=settings) as run:
        run.summary["acc"] = 0.99  # the override the audit asks about
    consume_all(settings)

    replayed = metricfold_cli(settings, "replay", "--generation", "asof", "--until-time", cut, "--quiet")
    digest = metricfold_cli(settings, "digest", "--generation", "asof")

    assert replayed.returncode == 0, replayed.stderr
    with Store(settings, generation="asof") as store:
        assert store.read_run("team/vision/t")["summary"]["acc"] == 0.5
        assert digest.stdout.split()[0] == digest_generation(store, "asof")
    with Store(settings) as store:
        assert store.read_run("team/vision/t")["summary"]["acc"] == 0.99  # live generation untouched


def test_sync_publishes_an_offline_spool_once_even_when_run_twice(settings: Settings, tmp_path: Path) -> None:
    with pytest.warns(mf.SpoolWarning, match="metricfold sync"):
        run = mf.init(entity="team", project="vision", run_id="off", mode="offline", spool_dir=tmp_path, settings=settings)
        for i in range(10):
            run.log({"i": i})
        run.finish()

    first = metricfold_cli(settings, "sync", str(tmp_path))
    second = metricfold_cli(settings, "sync", str(tmp_path))
    consume_all(settings)

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    with Store(settings) as store:
        assert store.read_run("team/vision/off")["meta"]["events"] == "12"


@pytest.mark.parametrize("command", [["runs", "cli/p", "--json"], ["summary", "cli/p/r1"]])
def test_output_into_a_closed_pipe_ends_quietly_with_the_sigpipe_exit_code(settings: Settings, command: list[str]) -> None:
    run = mf.init(entity="cli", project="p", run_id="r1", settings=settings)
    run.log({"loss": 0.5})
    run.finish()
    consume_all(settings)
    # `metricfold ... | head`: the reader is gone before the command writes (closed before it even started)
    connection = ["--kafka", settings.kafka, "--redis", settings.redis, "--namespace", settings.namespace]
    with subprocess.Popen([sys.executable, "-m", "consumer.cli", *command, *connection], cwd=REPO,
                          env=cli_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        errors = proc.stderr.read().decode()
        code = proc.wait(timeout=60)

    assert errors == ""
    assert code == 141


def test_consume_stopped_while_it_connects_exits_0_with_a_line_saying_so(settings: Settings) -> None:
    """SIGTERM before the consumer runs (here: Redis accepts the connection and never answers) is handled like one
    while it runs: exit 0, not death by the signal's default action (a fleet's member stopped during its start)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        command = [sys.executable, "-m", "consumer.cli", "consume", "--kafka", settings.kafka,
                   "--redis", f"redis://127.0.0.1:{port}/0", "--topic", settings.topic, "--namespace", settings.namespace]
        proc = subprocess.Popen(command, cwd=REPO, env=cli_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # it reached Redis: the connection waits in the listen queue
            silent.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                held, _ = silent.accept()
                break
        else:
            proc.kill()
            pytest.fail("the consumer never connected to Redis")
        with held:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    assert "while starting: exiting before consuming anything" in stderr
