"""Consumer throughput: our batched fold vs a naive one-Redis-round-trip-per-event consumer, side by side; with
--redis-mode cluster also our fold into a Redis Cluster, in the same run.

    python bench/consumer.py [--events 1000000] [--runs 1000] [--producers 8]
                             [--redis-mode standalone|cluster] [--redis-cluster-url URL] [--keep]

Pre-fills a fresh topic with --events log events over --runs runs from --producers trainer processes (the
real SDK), then times, each in its own process and against the same topic: (a) `metricfold consume`'s
Consumer to caught-up, (b) a naive consumer that decodes the same records and does one Redis round trip per
event (HSET of the event's values, the "last value" summary only). Prints a table, then one JSON line with
events_per_s, naive_events_per_s, ratio, peak_rss_mb.

--redis-mode cluster: between (a) and (b), the same Consumer folds the same topic into a Redis Cluster (in a
process of its own, a consumer group of its own), and the table gets a row for it; the JSON line adds
cluster_events_per_s and cluster_ratio (cluster / standalone events/s). events_per_s stays the standalone
Redis's. Progress lines (stderr) say where each consumer's time went, by the Consumer's per-batch timings:
Kafka polls, the fold (with the reads of the runs' stored states from Redis), the batch's writes to Redis.
The cluster is --redis-cluster-url's (any node of it; logged in as METRICFOLD_REDIS_USERNAME with
METRICFOLD_REDIS_CLUSTER_PASSWORD_FILE or _PASSWORD, else with the admin password the standalone Redis takes,
METRICFOLD_REDIS_PASSWORD[_FILE]; a user:password@ in the URL wins), or else one the benchmark starts for the
run: `deploy/local/stack.sh start-redis` with METRICFOLD_REDIS_MODE=cluster in .stack/bench-redis-cluster
(6 nodes, 3 masters + 3 replicas, on 6 free loopback ports from 17179, else 17279, ..., 17679, and those
+10000 for the cluster bus; the output says which), stopped again at the end, also after an error or Ctrl-C
(`stack.sh stop-redis`); its data is removed then unless --keep. Writes to the cluster wait for a replica
(WAIT) as `metricfold consume` does, per METRICFOLD_REDIS_WAIT_REPLICAS (default 1).

The topic and the benchmark's Redis keys (in both Redis) are deleted at the end unless --keep.
METRICFOLD_BENCH_PROFILE=DIR runs each of our consumers under cProfile and writes DIR/ours-standalone.prof
(and DIR/ours-cluster.prof), for `python -m pstats`.

Needs the stack: `make up && source <(bash deploy/local/stack.sh env admin)` (or METRICFOLD_KAFKA / METRICFOLD_REDIS
and the Redis administrator's METRICFOLD_REDIS_PASSWORD[_FILE]).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

sys.path.insert(1, str(REPO / "bench"))

from prefill import prefill  # noqa: E402

from consumer.kafka_io import delete_topics, ensure_topics  # noqa: E402
from schemas.events import BATCH, LOG_BLOCK  # noqa: E402
from schemas.settings import Settings  # noqa: E402

FLOATS_PER_EVENT = 4
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.sh"
#: where the benchmark's own Redis Cluster lives (data, logs, its admin password)
CLUSTER_DIR = REPO / ".stack" / "bench-redis-cluster"
CLUSTER_NODES = 6
#: first ports to try for the benchmark's own cluster: node N on +N-1, its cluster bus on +N-1+10000 (apart from
#: the test suite's, tests/redis_cluster.py, which may run at the same time)
PORT_CHOICES = (17179, 17279, 17379, 17479, 17579, 17679)


def role_ours(settings: Settings, label: str, timings: bool) -> dict[str, float]:
    from consumer.runner import BatchTiming, Consumer

    consumer = Consumer(settings)
    spent = {"poll_s": 0.0, "fold_s": 0.0, "redis_s": 0.0, "batches": 0.0, "runs_written": 0.0}
    if timings:
        def add(timing: BatchTiming) -> None:
            spent["poll_s"] += timing.poll_ms / 1000
            spent["fold_s"] += timing.fold_ms / 1000
            spent["redis_s"] += timing.redis_ms / 1000
            spent["batches"] += 1
            spent["runs_written"] += timing.runs

        consumer.on_timing = add
    profile_dir = os.environ.get("METRICFOLD_BENCH_PROFILE")
    profiler = cProfile.Profile() if profile_dir else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    report = consumer.run(until_caught_up=True)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    consumer.close()
    if profiler is not None and profile_dir:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(Path(profile_dir) / f"ours-{label}.prof"))
    result = {"events": report.events_applied, "records": report.records, "seconds": seconds,
              "redis_failures": report.redis_failures, "conflicts": report.conflicts}
    return {**result, **spent} if timings else result


def role_naive(settings: Settings, max_events: int) -> dict[str, float]:
    """One Redis round trip per event: decode, then HSET the event's values as the run's 'last value' summary."""
    import redis
    from kafka import KafkaConsumer

    from schemas import codec

    client = redis.Redis.from_url(settings.redis, username=settings.redis_username, password=settings.redis_password)
    kafka = KafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka.split(","),
        group_id=f"{settings.group_id}-naive",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2000,
        fetch_max_bytes=52428800,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        # one poll's records take this consumer minutes (a record holds ~1000 events, each a round trip): past
        # Kafka's default 5 minutes between polls it would leave the group and fail to commit
        max_poll_interval_ms=3_600_000,
    )
    events = 0
    idle = 0
    started = finished = time.perf_counter()
    while events < max_events and idle < 20:
        polled = kafka.poll(timeout_ms=250)
        if not polled:
            idle += 1
            continue
        idle = 0
        for batch in polled.values():
            for record in batch:
                name, datum = codec.decode(record.value)
                items = datum["items"] if name == BATCH else [(name, datum)]
                key = f"{settings.namespace}:naive:{datum['entity']}/{datum['project']}/{datum['run_id']}"
                for kind, item in items:
                    if kind == LOG_BLOCK:
                        position = 0
                        for count in item["counts"]:
                            fields: dict[Any, str] = {  # (redis-py's Mapping wants its own key type)
                                ".".join(item["paths"][item["path_idx"][j]]): repr(item["values"][j])
                                for j in range(position, position + count)
                            }
                            position += count
                            client.hset(key, mapping=fields)
                            events += 1
                    else:
                        client.hset(key, "_last_event", kind)
                        events += 1
        kafka.commit()
        finished = time.perf_counter()
    seconds = finished - started
    kafka.close()
    client.close()
    return {"events": events, "seconds": seconds}


def run_role(role: str, settings: Settings, extra: list[str], env_extra: dict[str, str | None] | None = None
             ) -> dict[str, float]:
    """Run a role in a process of its own; *env_extra* sets (a string) or unsets (None) variables of its environment."""
    env = {**os.environ, "METRICFOLD_KAFKA": settings.kafka, "METRICFOLD_REDIS": settings.redis}
    for name, value in (env_extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    out = subprocess.run(
        [sys.executable, __file__, "--role", role, "--topic", settings.topic, "--namespace", settings.namespace, *extra],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"the {role} consumer failed (exit {out.returncode}); its last output is above")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------------------------- the Redis Cluster
@dataclasses.dataclass
class Cluster:
    """The Redis Cluster the cluster consumer writes to: *url* any node of it, *env* the variables that log a
    client in to it as the administrator (the password by file or variable, never on a command line)."""

    url: str
    env: dict[str, str | None]
    about: str  #: what the output says about it

    def settings(self, base: Settings) -> Settings:
        environ = {k: v for k, v in os.environ.items() if k.startswith("METRICFOLD_")}
        for name, value in self.env.items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        return Settings.from_env(environ, topic=base.topic, namespace=base.namespace, redis=self.url)


def port_free(port: int) -> bool:
    """Nothing listens on this loopback port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _stack_env(port: int) -> dict[str, str]:
    return {**os.environ, "METRICFOLD_STACK_DIR": str(CLUSTER_DIR), "METRICFOLD_REDIS_PORT": str(port),
            "METRICFOLD_REDIS_MODE": "cluster", "METRICFOLD_SECURE": "0"}


def _stack(command: str, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(STACK_SCRIPT), command], cwd=REPO, env=_stack_env(port), capture_output=True,
                          text=True, timeout=180)


def _node_pidfiles() -> list[Path]:
    return sorted((CLUSTER_DIR / "redis").glob("node*/redis.pid"))


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def redis_cluster(url: str | None, keep: bool) -> Iterator[Cluster]:
    """--redis-cluster-url's cluster, or one started here (stopped again when the block ends, however it ends)."""
    if url:
        env: dict[str, str | None] = {"METRICFOLD_REDIS": url}
        if os.environ.get("METRICFOLD_REDIS_CLUSTER_PASSWORD_FILE"):
            env |= {"METRICFOLD_REDIS_PASSWORD_FILE": os.environ["METRICFOLD_REDIS_CLUSTER_PASSWORD_FILE"],
                    "METRICFOLD_REDIS_PASSWORD": None}
        elif os.environ.get("METRICFOLD_REDIS_CLUSTER_PASSWORD"):
            env |= {"METRICFOLD_REDIS_PASSWORD": os.environ["METRICFOLD_REDIS_CLUSTER_PASSWORD"],
                    "METRICFOLD_REDIS_PASSWORD_FILE": None}
        from schemas.settings import redact_url

        yield Cluster(url, env, f"Redis Cluster at {redact_url(url)} (--redis-cluster-url)")
        return
    running = [p for p in _node_pidfiles() if _alive(p)]
    if running:
        raise SystemExit(f"a Redis Cluster started earlier still runs from {CLUSTER_DIR} ({running[0]}): stop it "
                         f"(METRICFOLD_STACK_DIR={CLUSTER_DIR} METRICFOLD_REDIS_MODE=cluster bash {STACK_SCRIPT} "
                         "stop-redis, with its METRICFOLD_REDIS_PORT) or pass --redis-cluster-url")
    port = next((p for p in PORT_CHOICES
                 if all(port_free(p + i) and port_free(p + i + 10000) for i in range(CLUSTER_NODES))), None)
    if port is None:
        raise SystemExit(f"no {CLUSTER_NODES} free loopback ports (and those +10000) from any of {PORT_CHOICES} for a "
                         "Redis Cluster: pass --redis-cluster-url")
    where = (f"127.0.0.1:{port}-{port + CLUSTER_NODES - 1} (cluster bus {port + 10000}-{port + 10000 + CLUSTER_NODES - 1})")
    print(f"starting a Redis Cluster ({CLUSTER_NODES} nodes: 3 masters + 3 replicas) on {where} in "
          f"{CLUSTER_DIR.relative_to(REPO)} ...", file=sys.stderr, flush=True)
    # a fresh cluster each time: the nodes of an earlier run remember their ports and data in <dir>/redis
    shutil.rmtree(CLUSTER_DIR / "redis", ignore_errors=True)
    try:
        started = time.perf_counter()
        done = _stack("start-redis", port)
        if done.returncode != 0:
            raise SystemExit(f"stack.sh start-redis (cluster) failed:\n{done.stdout}{done.stderr}")
        print(f"  cluster ready in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        password_file = CLUSTER_DIR / "secrets" / "redis-default.password"
        yield Cluster(f"redis://127.0.0.1:{port}/0",
                      {"METRICFOLD_REDIS": f"redis://127.0.0.1:{port}/0", "METRICFOLD_REDIS_USERNAME": "default",
                       "METRICFOLD_REDIS_PASSWORD_FILE": str(password_file), "METRICFOLD_REDIS_PASSWORD": None},
                      f"Redis Cluster started for this run: {CLUSTER_NODES} nodes (3 masters + 3 replicas) on {where}, "
                      f"in {CLUSTER_DIR.relative_to(REPO)}")
    finally:
        print(f"stopping the Redis Cluster on 127.0.0.1:{port}-{port + CLUSTER_NODES - 1} ...", file=sys.stderr,
              flush=True)
        stopped = _stack("stop-redis", port)
        if stopped.returncode != 0 or any(_alive(p) for p in _node_pidfiles()):
            _stack("kill-redis", port)
        if keep:
            print(f"  its data stays in {CLUSTER_DIR / 'redis'} (--keep): start it again with METRICFOLD_STACK_DIR="
                  f"{CLUSTER_DIR} METRICFOLD_REDIS_PORT={port} METRICFOLD_REDIS_MODE=cluster bash {STACK_SCRIPT} "
                  "start-redis", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(CLUSTER_DIR / "redis", ignore_errors=True)


def delete_keys(settings: Settings) -> None:
    """Delete the benchmark's keys (`<namespace>:*`) from the settings' Redis (a standalone server or a cluster)."""
    from consumer.store.client import redis_client

    client = redis_client(settings)
    try:
        keys = list(dict.fromkeys(client.scan_iter(match=f"{settings.namespace}:*", count=5000)))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i : i + 500])  # a cluster client sends them slot by slot
    finally:
        client.close()


def check_cluster(settings: Settings) -> None:
    from consumer.store.client import is_cluster

    if not is_cluster(settings):
        raise SystemExit(f"{settings.redis_display} is not a Redis Cluster node that answers (with these credentials)")


def spent(label: str, result: dict[str, float]) -> str:
    """Where a consumer's time went (its per-batch timings), for a progress line."""
    return (f"  {label}: {result['events']:,.0f} events in {result['seconds']:.1f} s: Kafka poll "
            f"{result['poll_s']:.1f} s, fold (and state reads) {result['fold_s']:.1f} s, Redis writes "
            f"{result['redis_s']:.1f} s "
            f"({result['batches']:,.0f} batches of {result['records'] / max(result['batches'], 1):,.0f} records and "
            f"{result['runs_written'] / max(result['batches'], 1):,.0f} run writes on average); Redis failures "
            f"{result['redis_failures']:.0f}, conflicts {result['conflicts']:.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="log events to pre-fill (1,000,000)")
    parser.add_argument("--runs", type=int, default=1000, help="runs they are spread over (1000)")
    parser.add_argument("--producers", type=int, default=8, help="trainer processes (8)")
    parser.add_argument("--naive-max-events", type=int, default=0, help="stop the naive consumer after N events (0 = all)")
    parser.add_argument("--redis-mode", choices=["standalone", "cluster"], default="standalone",
                        help="standalone: our consumer into the standalone Redis (the default); cluster: also into a "
                             "Redis Cluster, in the same run")
    parser.add_argument("--redis-cluster-url", metavar="URL",
                        help="with --redis-mode cluster: a node of the Redis Cluster to use (password: "
                             "METRICFOLD_REDIS_CLUSTER_PASSWORD[_FILE], else the admin's); default: start one in "
                             ".stack/bench-redis-cluster on free ports, and stop it at the end")
    parser.add_argument("--keep", action="store_true",
                        help="keep the topic and Redis keys afterwards (and the data of a cluster started here)")
    parser.add_argument("--role", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="standalone", help=argparse.SUPPRESS)
    parser.add_argument("--timings", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.redis_cluster_url and args.redis_mode != "cluster":
        parser.error("--redis-cluster-url needs --redis-mode cluster")

    if args.role:
        settings = Settings.from_env(topic=args.topic, namespace=args.namespace)
        if args.role == "ours":
            result = role_ours(settings, args.label, args.timings)
        else:
            result = role_naive(settings, args.naive_max_events or 1 << 62)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    tag = uuid.uuid4().hex[:8]
    settings = Settings.from_env(topic=f"bench-consumer-{tag}", namespace=f"bench{tag}")
    cluster_mode = args.redis_mode == "cluster"
    profile_dir = os.environ.get("METRICFOLD_BENCH_PROFILE")
    clustered: dict[str, float] | None = None
    about = ""
    ensure_topics(settings)
    try:
        with contextlib.ExitStack() as stack:
            cluster_settings: Settings | None = None
            cluster_env: dict[str, str | None] = {}
            if cluster_mode:
                cluster = stack.enter_context(redis_cluster(args.redis_cluster_url, args.keep))
                about = cluster.about
                cluster_settings = cluster.settings(settings)
                cluster_env = {**cluster.env, "METRICFOLD_GROUP": f"{settings.group_id}-cluster"}
                check_cluster(cluster_settings)
                if not args.keep:
                    stack.callback(delete_keys, cluster_settings)
            print(f"pre-filling {settings.topic}: {args.events:,} log events x {FLOATS_PER_EVENT} floats, "
                  f"{args.runs} runs, {args.producers} producers ...", file=sys.stderr, flush=True)
            fill_s = prefill(settings, args.events, args.runs, args.producers)
            timings = ["--timings"] if cluster_mode else []
            print(f"  pre-filled in {fill_s:.1f} s; consuming with ours"
                  f"{' into the standalone Redis' if cluster_mode else ''} ...", file=sys.stderr, flush=True)
            ours = run_role("ours", settings, ["--label", "standalone", *timings])
            if cluster_mode:
                print(spent("standalone", ours), file=sys.stderr, flush=True)
                print("  consuming with ours into the Redis Cluster ...", file=sys.stderr, flush=True)
                assert cluster_settings is not None
                clustered = run_role("ours", cluster_settings, ["--label", "cluster", *timings], cluster_env)
                print(spent("cluster", clustered), file=sys.stderr, flush=True)
            if profile_dir:
                print(f"  profiles (cProfile) in {profile_dir}/ours-*.prof", file=sys.stderr, flush=True)
            print("  consuming with the naive consumer ...", file=sys.stderr, flush=True)
            naive = run_role("naive", settings, ["--naive-max-events", str(args.naive_max_events)])
    finally:
        if not args.keep:
            delete_topics(settings, [settings.topic, settings.dead_letter_topic])
            import redis

            login = {"username": settings.redis_username, "password": settings.redis_password}
            with redis.Redis.from_url(settings.redis, **login) as client:
                for key in client.scan_iter(match=f"{settings.namespace}:*", count=5000):
                    client.unlink(key)

    ours_rate = ours["events"] / ours["seconds"]
    naive_rate = naive["events"] / naive["seconds"]
    rows = [
        ("consumer", "events", "seconds", "events/s", "peak RSS MB"),
        ("metricfold (batched fold)", f"{ours['events']:,.0f}", f"{ours['seconds']:.1f}", f"{ours_rate:,.0f}",
         f"{ours['peak_rss_mb']:.0f}"),
    ]
    if clustered is not None:
        cluster_rate = clustered["events"] / clustered["seconds"]
        rows.append(("metricfold on Redis Cluster", f"{clustered['events']:,.0f}", f"{clustered['seconds']:.1f}",
                     f"{cluster_rate:,.0f}", f"{clustered['peak_rss_mb']:.0f}"))
    rows.append(("naive (1 round trip/event)", f"{naive['events']:,.0f}", f"{naive['seconds']:.1f}", f"{naive_rate:,.0f}",
                 f"{naive['peak_rss_mb']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    summary: dict[str, Any] = {
        "events_per_s": round(ours_rate),
        "naive_events_per_s": round(naive_rate),
        "ratio": round(ours_rate / naive_rate, 1),
        "peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "events": int(ours["events"]),
        "runs": args.runs,
    }
    if clustered is not None:
        print(f"(the batched fold into the standalone Redis and into a {about}; cluster / standalone "
              f"{cluster_rate / ours_rate:.2f})")
        summary |= {"cluster_events_per_s": round(cluster_rate), "cluster_ratio": round(cluster_rate / ours_rate, 2)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
