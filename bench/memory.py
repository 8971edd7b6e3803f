"""Redis memory per run: runs of --keys metrics (default summaries: the last value of each), folded by the consumer.

    python bench/memory.py [--runs 200] [--keys 200] [--steps 20] [--producers 2]

Logs --runs runs of one project, each --steps `log()` calls of --keys floats, through the real SDK and Kafka;
folds them with `metricfold consume --until-caught-up` (which stores every run's fold state before it exits); then
measures what Redis holds: `MEMORY USAGE` of every key of the namespace, grouped by kind (the run's hashes, its fold
state, the project's indexes), and `INFO memory` used_memory before and after. Prints a table and, last, one JSON
line with bytes_per_run (keys) and used_memory_per_run. Needs the stack:
`make up && source <(bash deploy/local/stack.sh env admin)`.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "bench"))

import redis  # noqa: E402
from prefill import in_processes  # noqa: E402

from consumer.kafka_io import delete_topics, ensure_topics  # noqa: E402
from consumer.store import Keys  # noqa: E402
from consumer.store.keys import active_key  # noqa: E402
from schemas.settings import Settings  # noqa: E402

PROJECT = ("bench", "memory")


def _log_runs(settings: Settings, run_ids: list[str], keys: int, steps: int) -> None:
    import producer as mf

    names = [f"layer{k // 10:02d}/metric{k % 10}" for k in range(keys)]  # 200 keys: layer00/metric0 ... layer19/metric9
    for run_id in run_ids:
        run = mf.init(entity=PROJECT[0], project=PROJECT[1], run_id=run_id, settings=settings,
                      config={"lr": 0.001, "batch_size": 64, "optimizer": "adamw"})
        for step in range(steps):
            run.log({name: (k + 1) / (step + 1) for k, name in enumerate(names)})
        run.finish()


def _kind(key: str, prefix: str) -> str:
    """The kind of a key of the generation: "run <part>", "project <part>" (a sort index: "project by <path>"), or
    the name after the prefix."""
    rest = key[len(prefix):]
    owner, _, tail = rest.partition("{")
    if owner in ("run:", "project:"):
        part = tail.rpartition("}:")[2]
        for grouped in ("blob", "by"):
            if part.startswith(grouped + ":"):
                part = f"{grouped} <{'sha256' if grouped == 'blob' else 'path'}>"
        return f"{owner[:-1]} {part}"
    return rest.split(":")[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs (200)")
    parser.add_argument("--keys", type=int, default=200, help="metrics each run logs (200)")
    parser.add_argument("--steps", type=int, default=20, help="log() calls per run (20)")
    parser.add_argument("--producers", type=int, default=2, help="trainer processes (2)")
    parser.add_argument("--keep", action="store_true", help="keep the topic and Redis keys afterwards")
    args = parser.parse_args()
    for name in ("runs", "keys", "steps", "producers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")

    tag = uuid.uuid4().hex[:8]
    settings = Settings.from_env(topic=f"bench-memory-{tag}", namespace=f"benchmem{tag}")
    ensure_topics(settings)
    client = redis.Redis.from_url(settings.redis, username=settings.redis_username, password=settings.redis_password)
    try:
        run_ids = [f"run{i:05d}" for i in range(args.runs)]
        print(f"logging {args.runs} runs x {args.keys} keys x {args.steps} steps with {args.producers} processes ...",
              file=sys.stderr, flush=True)
        in_processes(_log_runs, [(settings, run_ids[i::args.producers], args.keys, args.steps)
                                 for i in range(args.producers)])
        before = int(client.info("memory")["used_memory"])
        print("folding with metricfold consume --until-caught-up ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "consumer.cli", "consume", "--until-caught-up", "--topic",
                               settings.topic, "--namespace", settings.namespace], cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"metricfold consume failed:\n{done.stderr[-2000:]}")
        folded_s = time.perf_counter() - started
        after = int(client.info("memory")["used_memory"])

        generation = client.get(active_key(settings.namespace))  # the generation the consumer made
        assert generation is not None
        names = Keys(settings.namespace, generation.decode() if isinstance(generation, bytes) else generation)
        prefix = f"{names.prefix}:"
        sizes: dict[str, list[int]] = collections.defaultdict(list)
        keys = [k.decode() for k in client.scan_iter(match=names.every_key, count=5000)]
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.memory_usage(key, samples=0)
            for key, size in zip(chunk, pipe.execute(), strict=True):
                sizes[_kind(key, prefix)].append(int(size or 0))
    finally:
        if not args.keep:
            delete_topics(settings, [settings.topic, settings.dead_letter_topic])
            for key in client.scan_iter(match=f"{settings.namespace}:*", count=5000):
                client.unlink(key)
        client.close()

    total = sum(sum(v) for v in sizes.values())
    rows = [("key kind", "keys", "bytes", "bytes per run")]
    for kind in sorted(sizes, key=lambda k: -sum(sizes[k])):
        rows.append((kind, f"{len(sizes[kind]):,}", f"{sum(sizes[kind]):,}", f"{sum(sizes[kind]) / args.runs:,.0f}"))
    rows.append(("all keys", f"{sum(len(v) for v in sizes.values()):,}", f"{total:,}", f"{total / args.runs:,.0f}"))
    rows.append(("used_memory growth (INFO memory)", "", f"{after - before:,}", f"{(after - before) / args.runs:,.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"{args.runs} runs x {args.keys} keys x {args.steps} steps, default summaries; folded in {folded_s:.1f} s")
    for i, row in enumerate(rows):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(json.dumps({"runs": args.runs, "keys": args.keys, "steps": args.steps,
                      "bytes_per_run": round(total / args.runs), "used_memory_per_run": round((after - before) / args.runs),
                      "by_kind_per_run": {k: round(sum(v) / args.runs) for k, v in sorted(sizes.items())}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
