"""The run record of `apply_runs` is named on both sides (consumer/store/record.py): the script reads positions only
through the `R` table made from RunRecord, every name it reads is a field, and the Python side fills every field.
Pure code: no server (the integration tests run the script on the real Redis)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from consumer.fold import Changes
from consumer.store.keys import Keys
from consumer.store.record import RunRecord, lua_field_table
from consumer.store.scripts import APPLY_RUNS
from consumer.store.writer import RunWrite, _apply_args

LUA = Path(__file__).resolve().parent.parent / "consumer" / "store" / "lua" / "apply_runs.lua"


def test_the_script_reads_runs_by_the_record_s_names_only() -> None:
    source = LUA.read_text()
    assert not re.search(r"\br\[\d+\]", source)  # no position by number
    used = set(re.findall(r"\br\[R\.(\w+)\]", source))
    fields = list(RunRecord._fields)
    assert used <= set(fields), used - set(fields)
    assert used == set(fields)  # and the script reads every field
    assert APPLY_RUNS.count(lua_field_table()) == 1
    table = dict(re.findall(r"(\w+) = (\d+)", lua_field_table()))
    assert [name for name, _ in sorted(table.items(), key=lambda kv: int(kv[1]))] == fields


def test_a_write_becomes_one_record_per_run_in_field_order() -> None:
    changes = Changes()
    changes.summary_set["loss"] = "0.5"
    changes.flat_set["loss"] = "0.5"
    changes.numeric_set["loss"] = 0.5
    changes.blobs["ab" * 32] = b"\x93NUMPY"
    write = RunWrite(run_path="team/vision/r1", partition=3, offset=41, expected_prev=None, state=b"s",
                     updated_ms=1700000000000, changes=changes, events=2)
    args = _apply_args(Keys("mf", "g1"), "events", [write], live=True)
    generation, prefix, document, lag, checkpoints, state, blob = args
    assert (generation, prefix, lag, checkpoints, state, blob) == ("g1", "mf:g1", "mf:g1:lag:events:", "", b"s", b"\x93NUMPY")
    [row] = json.loads(document)
    record = dict(zip(RunRecord._fields, row, strict=True))
    assert record["run_path"] == "team/vision/r1" and record["project"] == "team/vision" and record["run_id"] == "r1"
    assert (record["partition"], record["offset"], record["expected_prev"]) == ("3", "41", "")
    assert record["summary_set"] == {"loss": "0.5"} and record["numeric_set"] == ["loss"]
    assert record["blobs"] == {"ab" * 32: "7"}  # ARGV index: 5 fixed arguments, 1 state, then the blob
    assert record["state_at"] == {"3": "41"} and record["lacks_from"] == ""
