"""The SDK stands alone: ``import producer`` imports no module of the consumer package and not redis.

A trainer installs the SDK without the consumer's dependencies; ``producer.Api`` reads through the store's
public read interface, imported on its first read only. ``python -X importtime`` lists every module a fresh
interpreter imports (one line per module, on stderr).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("consumer", "redis")


def imported_modules(code: str) -> list[str]:
    """The modules a fresh interpreter imports while running *code* (from ``-X importtime``'s lines)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = []
    for line in done.stderr.splitlines():
        # "import time:       123 |        456 |     package.module" (the module indented by its import depth)
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported":  # the header line: "self [us] | cumulative | imported package"
                modules.append(name)
    return modules


def forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in FORBIDDEN]


@pytest.mark.parametrize(
    "code",
    ["import producer", "import producer; producer.Api; producer.ApiRun; producer.init"],
    ids=["import", "Api referenced"],
)
def test_the_sdk_imports_neither_the_consumer_nor_redis(code: str) -> None:
    modules = imported_modules(code)
    assert "producer" in modules and "producer.api" in modules, "importtime's output was not parsed"
    assert forbidden(modules) == [], f"`{code}` imported {forbidden(modules)}"


def test_the_check_sees_a_forbidden_import() -> None:
    modules = imported_modules("import producer; import consumer.store")
    assert "redis" in forbidden(modules) and "consumer.store" in forbidden(modules)
