"""Key names: the only place in metricfold where a Redis key or channel name is built.

Layout (`<ns>` = namespace, `<gen>` = generation, `<run>` = entity/project/run_id, `<proj>` = entity/project). A
run's keys share the hash tag `{<run>}`:

    <ns>:active                              string  the generation readers use
    <ns>:<gen>:run:{<run>}:summary           hash    top-level summary key -> JSON of its value
    <ns>:<gen>:run:{<run>}:flat              hash    display path (loss.min, grad.norm) -> JSON scalar
    <ns>:<gen>:run:{<run>}:meta              hash    state, created, updated, name, config, tags, events, ...
    <ns>:<gen>:run:{<run>}:tensors           hash    display path of a tensor -> sha256 of its .npy bytes
    <ns>:<gen>:run:{<run>}:blob:<sha256>     string  .npy bytes
    <ns>:<gen>:run:{<run>}:state             string  the fold state (consumer-private; stored every few seconds)
    <ns>:<gen>:run:{<run>}:stateat           hash    partition -> offset of the last record the stored state holds
    <ns>:<gen>:run:{<run>}:applied           hash    partition -> offset of the last record applied to the views
    <ns>:<gen>:project:{<proj>}:runs         zset    run_id by last update (ms)
    <ns>:<gen>:project:{<proj>}:by:<path>    zset    run_id by the numeric flat value at <path>
    <ns>:<gen>:project:{<proj>}:paths        set     flat paths seen in the project (the column picker)
    <ns>:<gen>:projects                      set     entity/project of every project
    <ns>:<gen>:checkpoint:<topic>            hash    partition -> next offset to read (everything before is applied)
    <ns>:<gen>:lag:<topic>:<partition>       zset    run path by the first offset its stored state lacks: the runs
                                                     whose state is older than their views (a consumer seeks to
                                                     the lowest, or to the checkpoint when the set is empty)

The Lua scripts (consumer/store/lua/) still complete names from the prefixes they are given (`<ns>:<gen>`, the lag
prefix); declaring every key in KEYS, as Redis Cluster needs, comes with the cluster key layout.
"""

from __future__ import annotations

import dataclasses

__all__ = ["CHECKPOINT_PART", "Keys", "active_key"]


#: what follows `<ns>:<gen>:` in a partition checkpoint's name (the digest leaves those out: they depend on how the
#: work was split, not on what was folded)
CHECKPOINT_PART = "checkpoint:"


def active_key(namespace: str) -> str:
    """`<ns>:active`: the generation readers use (and the live consumer writes)."""
    return f"{namespace}:active"


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

    def run(self, run_path: str, part: str) -> str:
        return f"{self.prefix}:run:{{{run_path}}}:{part}"

    def blob(self, run_path: str, sha: str) -> str:
        return self.run(run_path, f"blob:{sha}")

    def project(self, project_path: str, part: str) -> str:
        return f"{self.prefix}:project:{{{project_path}}}:{part}"

    def by_path(self, project_path: str, flat_path: str) -> str:
        return self.project(project_path, f"by:{flat_path}")

    def checkpoint(self, topic: str) -> str:
        return f"{self.prefix}:{CHECKPOINT_PART}{topic}"

    def lag(self, topic: str, partition: int | str = "") -> str:
        """The partition's lag set (with no partition: the prefix the Lua script completes)."""
        return f"{self.prefix}:lag:{topic}:{partition}"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    def channel(self, project_path: str) -> str:
        return f"{self.prefix}:changes:{project_path}"

