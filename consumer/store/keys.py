"""Key names: the only place in metricfold where a Redis key or channel name is built.

Layout (`<ns>` = namespace, `<gen>` = generation, `<proj>` = entity/project). Everything of a project (its runs'
keys and its indexes) carries the hash tag `{<proj>}`, so on Redis Cluster it lives in one slot, and each
project's part of a consumer batch is one atomic script call:

    <ns>:active                                   string  the generation readers use
    <ns>:<gen>:run:{<proj>}:<run_id>:summary      hash    top-level summary key -> JSON of its value
    <ns>:<gen>:run:{<proj>}:<run_id>:flat         hash    display path (loss.min, grad.norm) -> JSON scalar
    <ns>:<gen>:run:{<proj>}:<run_id>:meta         hash    state, created, updated, name, config, tags, events, ...
    <ns>:<gen>:run:{<proj>}:<run_id>:tensors      hash    display path of a tensor -> sha256 of its .npy bytes
    <ns>:<gen>:run:{<proj>}:<run_id>:blob:<sha>   string  .npy bytes
    <ns>:<gen>:run:{<proj>}:<run_id>:state        string  the fold state (consumer-private; stored every few seconds)
    <ns>:<gen>:run:{<proj>}:<run_id>:stateat      hash    partition -> offset of the last record the stored state holds
    <ns>:<gen>:run:{<proj>}:<run_id>:applied      hash    partition -> offset of the last record applied to the views
    <ns>:<gen>:project:{<proj>}:runs              zset    run_id by last update (ms)
    <ns>:<gen>:project:{<proj>}:by:<path>         zset    run_id by the numeric flat value at <path>
    <ns>:<gen>:project:{<proj>}:paths             set     flat paths seen in the project (the column picker)
    <ns>:<gen>:project:{<proj>}:is:<field>:<v>    set     run_ids whose meta <field> (state, group, job_type) is <v>,
                                                          or (field `tag`) whose tags hold <v> (filters: indexes.py)
    <ns>:<gen>:project:{<proj>}:is:config:<k>=<j> set     run_ids whose config's top-level key (JSON string <k>)
                                                          has the value of canonical JSON <j> (200 characters at most)
    <ns>:<gen>:project:{<proj>}:stats             hash    events, dead_letters: what the consumer applied
    <ns>:<gen>:project:{<proj>}:lag:<topic>:<p>   zset    run_id by the first offset of partition <p> its stored
                                                          state lacks: the runs whose state is older than their views
                                                          (a consumer seeks to the lowest over every project, or to the
                                                          checkpoint when there is none)
    <ns>:<gen>:project:{<proj>}:seen:<topic>      hash    partition -> the offset after the project's last record
                                                          applied: where to read again when its master lost writes
                                                          that the topic's checkpoint (on another master) did not
    <ns>:<gen>:project:{<proj>}:retired           string  set when a replay's switch retired the generation: a live
                                                          write to the project is refused (the consumer moves on)
    <ns>:<gen>:projects                           set     entity/project of every project
    <ns>:<gen>:indexes                            string  the filter index sets' version once every run of the
                                                          generation is in them (indexes.py; consumer bookkeeping)
    <ns>:<gen>:checkpoint:{<topic>}               hash    partition -> next offset to read (everything before is applied)
    <ns>:<gen>:stats:{<topic>}                    hash    undecodable: records of the topic that are no event
    <ns>:<gen>:changes:<proj>                     channel a changed run's id, for live pages (pub/sub, not a key)

The Lua scripts (consumer/store/lua/) are given every key they touch in KEYS, made here; none builds a name.
"""

from __future__ import annotations

import dataclasses
import json

__all__ = ["CHECKPOINT_PART", "INDEXES_PART", "Keys", "active_key", "split_run_path"]


#: what follows `<ns>:<gen>:` in a partition checkpoint's name (the digest leaves those out: they depend on how the
#: work was split, not on what was folded)
CHECKPOINT_PART = "checkpoint:"
#: what follows `<ns>:<gen>:` in the name of the key saying which version of the filter index sets is complete
INDEXES_PART = "indexes"
#: the fields of a run's keys, in the order apply_runs.lua receives them (KEYS[first + i]); blobs follow
RUN_PARTS = ("summary", "flat", "meta", "tensors", "applied", "state", "stateat")


def active_key(namespace: str) -> str:
    """`<ns>:active`: the generation readers use (and the live consumer writes)."""
    return f"{namespace}:active"


def split_run_path(run_path: str) -> tuple[str, str]:
    """entity/project/run_id -> (entity/project, run_id)."""
    project, _, run_id = run_path.rpartition("/")
    return project, run_id


@dataclasses.dataclass(frozen=True)
class Keys:
    """Key names for one namespace and generation."""

    namespace: str
    generation: str

    @property
    def active(self) -> str:
        return active_key(self.namespace)

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:{self.generation}"

    @property
    def every_key(self) -> str:
        """The SCAN pattern of every key of the generation."""
        return f"{self.prefix}:*"

    @property
    def projects(self) -> str:
        return f"{self.prefix}:projects"

    @property
    def indexes(self) -> str:
        return f"{self.prefix}:{INDEXES_PART}"

    def run(self, run_path: str, part: str) -> str:
        project, run_id = split_run_path(run_path)
        return f"{self.prefix}:run:{{{project}}}:{run_id}:{part}"

    def run_keys(self, run_path: str) -> list[str]:
        """The run's keys apply_runs.lua writes, in RUN_PARTS order."""
        project, run_id = split_run_path(run_path)
        base = f"{self.prefix}:run:{{{project}}}:{run_id}:"
        return [base + part for part in RUN_PARTS]

    def blob(self, run_path: str, sha: str) -> str:
        return self.run(run_path, f"blob:{sha}")

    def project(self, project_path: str, part: str) -> str:
        return f"{self.prefix}:project:{{{project_path}}}:{part}"

    def by_path(self, project_path: str, flat_path: str) -> str:
        return self.project(project_path, f"by:{flat_path}")

    def index(self, project_path: str, field: str, value: str) -> str:
        """The index set of the runs whose meta *field* (state, group, job_type) is *value*, or (field "tag")
        whose tags hold *value*."""
        return self.project(project_path, f"is:{field}:{value}")

    def config_index(self, project_path: str, key: str, value_text: str) -> str:
        """The index set of the runs whose config holds the top-level *key* with the value of canonical JSON
        *value_text* (schemas.filters.config_value_text)."""
        return self.project(project_path, f"is:config:{json.dumps(key, ensure_ascii=False)}={value_text}")

    def project_stats(self, project_path: str) -> str:
        return self.project(project_path, "stats")

    def seen(self, project_path: str, topic: str) -> str:
        """The project's `seen` hash: partition -> next offset after the project's last record applied."""
        return self.project(project_path, f"seen:{topic}")

    def retired(self, project_path: str) -> str:
        return self.project(project_path, "retired")

    def lag(self, project_path: str, topic: str, partition: int | str) -> str:
        """The project's lag set of a partition."""
        return self.project(project_path, f"lag:{topic}:{partition}")

    def checkpoint(self, topic: str) -> str:
        return f"{self.prefix}:{CHECKPOINT_PART}{{{topic}}}"

    def topic_stats(self, topic: str) -> str:
        """The topic's counters (undecodable records); in the checkpoint's slot, which the same script advances."""
        return f"{self.prefix}:stats:{{{topic}}}"

    def channel(self, project_path: str) -> str:
        return f"{self.prefix}:changes:{project_path}"

    def before_project_tags(self, topic: str) -> list[str]:
        """Keys only a generation written before the one-tag-per-project layout has (its checkpoint hash and its
        global stats hash): such a generation is rebuilt with `metricfold replay --switch` (README)."""
        return [f"{self.prefix}:checkpoint:{topic}", f"{self.prefix}:stats"]

    def is_retired_marker(self, key: bytes) -> bool:
        """Whether *key* is a project's `retired` marker (a generation's deletion leaves those to expire)."""
        start = f"{self.prefix}:project:{{".encode()
        # the project's part holds no '}' (a run path part cannot): an index set of a tag "x}:retired" is no marker
        return key.startswith(start) and key.endswith(b"}:retired") and b"}" not in key[len(start):-len(b"}:retired")]
