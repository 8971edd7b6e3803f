"""consumer/store/keys.py is the only place a Redis key or channel name is built: no Python module of metricfold
spells a key part elsewhere, and what is written outside Python against the layout (the ACL users' key patterns,
the Grafana dashboard's queries) names the keys keys.py makes. Pure code: no server."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from pathlib import Path

import pytest

from consumer.acl import CONSUMER, READER, acl_lines, user_rules
from consumer.store.keys import Keys, active_key

REPO = Path(__file__).resolve().parent.parent
KEYS_MODULE = REPO / "consumer" / "store" / "keys.py"
#: parts of key and channel names: a string holding one of these builds (or matches) a key
KEY_PARTS = (":active", ":run:", ":project:", ":projects", ":checkpoint:", ":lag:", ":stats", ":changes:", ":blob:", ":by:",
             ":retired")


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """Every string in the module's code (f-strings' literal parts included), docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def _python_modules() -> list[Path]:
    return [path for top in ("consumer", "producer", "schemas", "bench", "deploy")
            for path in sorted((REPO / top).rglob("*.py")) if path != KEYS_MODULE]


def _every_name(keys: Keys) -> list[str]:
    return [keys.active, keys.run("a/b/r", "summary"), keys.blob("a/b/r", "0" * 64), keys.project("a/b", "runs"),
            keys.by_path("a/b", "acc.best"), keys.projects, keys.checkpoint("events"), keys.lag("a/b", "events", 3),
            keys.project_stats("a/b"), keys.topic_stats("events"), keys.retired("a/b"), keys.channel("a/b")]


def test_the_parts_looked_for_are_the_parts_of_the_names_keys_py_makes() -> None:
    """The scan below would see a name built elsewhere: each part it looks for is in a name keys.py makes, and each
    name keys.py makes has one."""
    names = _every_name(Keys("team", "g7"))
    for part in KEY_PARTS:
        assert any(part in name for name in names), part
    for name in names:
        assert any(part in name for part in KEY_PARTS), name


def test_no_key_name_is_built_outside_keys_py() -> None:
    built = [f"{path.relative_to(REPO)}:{line}: {text!r}"
             for path in _python_modules() for line, text in _code_strings(path)
             if any(part in text for part in KEY_PARTS)]
    assert not built, "key names built outside consumer/store/keys.py:\n" + "\n".join(built)


@pytest.mark.parametrize("user", [CONSUMER, READER])
def test_the_acl_users_may_use_every_key_and_channel_of_their_namespace_only(user: str) -> None:
    rules = user_rules(user, "team")
    patterns = [rule[1:] for rule in rules if rule.startswith("~")]
    channels = [rule[1:] for rule in rules if rule.startswith("&")]
    keys = Keys("team", "g7")
    for key in _every_name(keys)[:-1]:
        assert any(fnmatch.fnmatchcase(key, p) for p in patterns), (key, patterns)
        other = key.replace("team:", "teammate:", 1)
        assert not any(fnmatch.fnmatchcase(other, p) for p in patterns), (other, patterns)
    assert any(fnmatch.fnmatchcase(keys.channel("a/b"), c) for c in channels), channels
    assert fnmatch.fnmatchcase(keys.every_key, patterns[0])
    assert f"user {user} " in "\n".join(acl_lines("team", {u: "x" * 32 for u in (CONSUMER, READER, "default")}))


def test_the_grafana_dashboard_reads_the_keys_keys_py_makes() -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "metricfold.json").read_text())
    texts: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                if name in ("keyName", "query", "definition") and isinstance(value, str) and "$namespace" in value:
                    texts.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    values = {"$namespace": "team", "$generation": "g7", "$project": "a/b", "$run": "r1", "$sort": "acc.best"}
    keys = Keys("team", "g7")
    made = {active_key("team"), keys.projects, keys.project("a/b", "runs"), keys.project("a/b", "paths"),
            keys.by_path("a/b", "acc.best"), keys.run("a/b/r1", "flat"), keys.run("a/b/r1", "meta")}
    used = set()
    for text in texts:
        for name, value in values.items():
            text = text.replace(name, value)
        key = next(word for word in re.split(r"\s+", text) if word.startswith("team:"))
        assert key in made, f"the dashboard reads {key!r}, which keys.py does not make"
        used.add(key)
    assert len(used) >= 6  # the walk found the dashboard's key reads
