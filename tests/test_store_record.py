"""The run record of `apply_runs` is named on both sides (consumer/store/record.py): the script reads positions only
through the `R` table made from RunRecord, every name it reads is a field, and the Python side fills every field.
Pure code: no server (the integration tests run the script on the real Redis)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from consumer.fold import Changes
from consumer.store.calls import RunWrite, apply_calls
from consumer.store.keys import Keys
from consumer.store.record import RunRecord, lua_field_table
from consumer.store.scripts import APPLY_RUNS

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
    [call] = apply_calls(Keys("mf", "g1"), "events", [write], live=True)
    live, document, indexes, channel, checkpoints, state, blob = call.args
    assert (live, channel, checkpoints, state, blob) == ("1", "mf:g1:changes:team/vision", "", b"s", b"\x93NUMPY")
    lag, by = json.loads(indexes)
    # KEYS: the project's four, then its lag set of partition 3, its `by:loss` index, the run's keys, the blob's
    assert call.keys[:4] == ["mf:g1:project:{team/vision}:retired", "mf:g1:project:{team/vision}:runs",
                             "mf:g1:project:{team/vision}:paths", "mf:g1:project:{team/vision}:stats"]
    assert call.keys[lag["3"] - 1] == "mf:g1:project:{team/vision}:lag:events:3"
    assert call.keys[by["loss"] - 1] == "mf:g1:project:{team/vision}:by:loss"
    [row] = json.loads(document)
    record = dict(zip(RunRecord._fields, row, strict=True))
    first = int(record["first_key"])
    assert call.keys[first - 1 : first + 6] == [f"mf:g1:run:{{team/vision}}:r1:{part}" for part in
                                               ("summary", "flat", "meta", "tensors", "applied", "state", "stateat")]
    assert record["run_id"] == "r1" and call.indexes == [0] and call.project == "team/vision"
    assert (record["partition"], record["offset"], record["expected_prev"]) == ("3", "41", "")
    assert record["summary_set"] == {"loss": "0.5"} and record["numeric_set"] == ["loss"]
    blob_key, blob_arg = record["blobs"]["ab" * 32]
    assert call.keys[int(blob_key) - 1] == "mf:g1:run:{team/vision}:r1:blob:" + "ab" * 32
    assert blob_arg == "7"  # ARGV index: 5 fixed arguments, 1 state, then the blob
    assert record["state_at"] == {"3": "41"} and record["lacks_from"] == ""


def test_every_key_of_a_call_is_in_its_project_s_hash_slot() -> None:
    """Redis Cluster runs a script on one slot: each call's keys share the project's hash tag."""
    writes = [RunWrite(run_path=f"team/{project}/r{i}", partition=i % 3, offset=i, expected_prev=None, state=b"",
                       updated_ms=1, lacks_from=i) for i in range(6) for project in ("a", "b")]
    calls = apply_calls(Keys("mf", "g1"), "events", writes, live=False)
    assert [c.project for c in calls] == ["team/a", "team/b"]
    assert sorted(i for c in calls for i in c.indexes) == list(range(len(writes)))
    for call in calls:
        assert all("{" + call.project + "}" in key for key in call.keys), call.keys
