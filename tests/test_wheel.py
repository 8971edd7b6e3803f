"""The package as users install it: the wheel, installed with its `serve` extra into a fresh virtualenv outside
the checkout, runs the SDK, `consume`, `serve`, `replay` and `summary` against the real stack.

Every other test runs on the editable install, which imports the checkout itself: a subpackage or a data file
that the wheel leaves out (`consumer.web` once was) shows only here. The wheel is built from a copy of the
checkout (so the build writes nothing into it), with pip and the build backend that pyproject.toml names.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from schemas.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("producer", "consumer", "schemas")
# what a checkout holds besides its sources: hidden directories (.git, .venv, .stack, caches), build output
NOT_SOURCE = shutil.ignore_patterns(
    ".*", "*~", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "test-artifacts", "metricfold-spool"
)
# what the runs below log, and what every reader must then show
TENSOR = np.linspace(-1.0, 1.0, 1000)
SDK = """
import numpy as np
import producer as mf

run = mf.init(entity="wheel", project="installed", run_id="w1", name="from-the-wheel", config={"lr": 0.01},
              tags=["wheel"])
run.define_metric("loss", summary="min")
for loss in (0.5, 0.25, 0.75):
    run.log({"loss": loss})
run.summary["weights"] = np.linspace(-1.0, 1.0, 1000)
run.finish()
"""
WHERE = """
import json, sys
import consumer.cli, consumer.web.app, producer, schemas.codec
modules = (producer, consumer.cli, consumer.web.app, schemas.codec)
print(json.dumps({"files": [m.__file__ for m in modules], "schemas": str(schemas.codec.SCHEMA_DIR), "path": sys.path}))
"""


class Built(NamedTuple):
    wheel: Path
    source: Path  # the copy of the checkout it was built from
    output: str  # pip's and the build backend's


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH and friends, METRICFOLD_* settings or the checkout's .venv on PATH."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("METRICFOLD_")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not Path(p).resolve().is_relative_to(REPO)]
    env["PATH"] = os.pathsep.join(path)
    return env | extra


def run(
    command: list[str | Path], *, cwd: Path, env: Mapping[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    done = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", root / "dist", source],
               cwd=root, env=clean_env())
    (wheel,) = (root / "dist").glob("metricfold-*.whl")
    return Built(wheel, source, done.stdout + done.stderr)


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the checkout with the wheel and its `serve` extra (dependencies from the index).
    Without pip of its own: the test's pip installs into it (`pip --python`), which saves seeding one."""
    home = tmp_path_factory.mktemp("installed") / "venv"
    assert not home.resolve().is_relative_to(REPO)
    run([sys.executable, "-m", "venv", "--without-pip", home], cwd=home.parent, env=clean_env())
    run([sys.executable, "-m", "pip", "--python", home / "bin" / "python", "install", f"{built.wheel}[serve]"],
        cwd=home.parent, env=clean_env())
    return home


def test_the_wheel_ships_every_subpackage_and_data_file_and_nothing_else(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = wheel.read(metadata).decode()
    shipped = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    # every file of the three packages' directories: modules, subpackages (consumer/web), Avro schemas (and
    # schemas/history), Lua, static files and templates
    expected = {p.relative_to(built.source).as_posix() for d in PACKAGES for p in (built.source / d).rglob("*") if p.is_file()}
    assert {"consumer/web/app.py", "schemas/metricfold.Log.avsc"} <= expected  # the copy holds what the test is about

    left_out = "left out of the wheel: [tool.setuptools.packages.find] or [tool.setuptools.package-data] misses them"
    assert sorted(expected - shipped) == [], left_out
    assert sorted(shipped - expected) == [], "in the wheel but not in producer/, consumer/ or schemas/"
    assert "License-Expression: Apache-2.0" in headers.splitlines()
    # e.g. setuptools' "`project.license` as a TOML table is deprecated" (a SetuptoolsDeprecationWarning)
    assert re.findall(r"\w+Warning\b.*", built.output) == []


def test_the_installed_wheel_runs_the_sdk_consume_serve_replay_and_summary(
    venv: Path, settings: Settings, tmp_path: Path
) -> None:
    bin_dir = venv / "bin"
    env = clean_env(METRICFOLD_KAFKA=settings.kafka, METRICFOLD_REDIS=settings.redis, METRICFOLD_TOPIC=settings.topic,
                    METRICFOLD_NAMESPACE=settings.namespace,
                    **({"METRICFOLD_REDIS_PASSWORD": settings.redis_password} if settings.redis_password else {}))
    env["PATH"] = os.pathsep.join([str(bin_dir), env["PATH"]])
    cwd = tmp_path  # outside the checkout: `python -c` puts the working directory first on sys.path
    assert not cwd.resolve().is_relative_to(REPO)

    where = json.loads(run([bin_dir / "python", "-c", WHERE], cwd=cwd, env=env).stdout)
    for file in [*where["files"], where["schemas"]]:
        assert Path(file).resolve().is_relative_to(venv.resolve()), f"{file} is not the installed package"
    assert not any(Path(p).resolve().is_relative_to(REPO) for p in where["path"] if p)

    run([bin_dir / "python", "-c", SDK], cwd=cwd, env=env, timeout=120)
    assert not (cwd / "metricfold-spool").exists(), "the SDK spooled instead of sending to Kafka"

    consumed = run([bin_dir / "metricfold", "consume", "--until-caught-up", "--quiet"], cwd=cwd, env=env)
    assert "Traceback" not in consumed.stderr, consumed.stderr
    assert_summary(summary(bin_dir, cwd, env), generation="g1")

    served = serve_and_fetch(bin_dir, cwd, env)
    assert "from-the-wheel" in served["page"]
    api = served["api"]
    assert (api["name"], api["config"], api["tags"]) == ("from-the-wheel", {"lr": 0.01}, ["wheel"])
    assert api["summary"]["loss"] == {"min": 0.25}
    assert np.array_equal(served["tensor"], TENSOR)
    assert "EventSource" in served["script"]

    replayed = run([bin_dir / "metricfold", "replay", "--generation", "wheelreplay", "--switch", "--quiet"], cwd=cwd, env=env)
    assert "switched: wheelreplay is now active" in replayed.stdout, replayed.stdout
    assert_summary(summary(bin_dir, cwd, env), generation="wheelreplay")
    table = run([bin_dir / "metricfold", "summary", "wheel/installed/w1"], cwd=cwd, env=env).stdout
    assert re.search(r"^loss\.min +0\.25 *$", table, re.MULTILINE), table


def summary(bin_dir: Path, cwd: Path, env: Mapping[str, str]) -> Any:
    return json.loads(run([bin_dir / "metricfold", "summary", "wheel/installed/w1", "--json"], cwd=cwd, env=env).stdout)


def assert_summary(shown: Any, *, generation: str) -> None:
    assert shown["generation"] == generation
    assert shown["meta"]["name"] == "from-the-wheel" and shown["meta"]["state"] == "finished"
    assert shown["meta"]["events"] == "7"  # RunStarted, DefineMetric, 3 x Log, SummaryUpdate, RunFinished: none lost
    assert shown["summary"]["loss"] == {"min": 0.25}
    assert shown["flat"]["loss.min"] == 0.25
    assert set(shown["tensors"]) == {"weights"}


def serve_and_fetch(bin_dir: Path, cwd: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """`metricfold serve` on a free loopback port: the project page, the run's API answer, its tensor and the page's
    script; then SIGTERM, and it must stop cleanly (uvicorn ends by re-raising the signal: -15)."""
    log = cwd / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen([bin_dir / "metricfold", "serve", "--port", "0"], cwd=cwd, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r" at (http://127\.0\.0\.1:\d+/)", log.read_text())):
            assert server.poll() is None, f"serve exited {server.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"serve printed no URL within 60 s:\n{log.read_text()}"
            time.sleep(0.1)
        url = found.group(1)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy

        def get(path: str) -> bytes:
            with opener.open(url + path, timeout=30) as response:
                assert response.status == 200
                body: bytes = response.read()
                return body

        api = json.loads(get("api/runs/wheel/installed/w1"))
        tensor_url = api["tensors"]["weights"]["url"]
        fetched = {
            "page": get("projects/wheel/installed").decode(),
            "api": api,
            "tensor": np.load(io.BytesIO(get(tensor_url.lstrip("/"))), allow_pickle=False),
            "script": get("static/app.js").decode(),
        }
        server.terminate()
        assert server.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert "Traceback" not in log.read_text()
    return fetched
