"""Load: trainer processes logging at a steady rate while the consumer folds live; freshness, throughput, lag, memory.

    python bench/load.py [--seconds 60] [--trainers 8] [--runs 50] [--rate 20000] [--linger S] [--consumers N]
                         [--max-records-per-s N] [--trainer-nice N] [--series FILE]

--trainers processes (the real SDK), each with --runs open runs, log 5-float events round-robin over their runs,
in 20 ms steps, paced so that together they log exactly --rate x --seconds events in --seconds. `metricfold consume`
runs in its own process (--consumers N: N processes in one consumer group). --trainer-nice runs the trainers at
that nice level, so the consumer gets the CPU first, as when the trainers run on other hosts. --linger and
--max-records-per-s set the SDK's SenderOptions: each trainer's runs seal a record every linger_s (0.2 s), or every
runs / max_records_per_s when that is longer (50 runs, 200/s: 0.25 s); --max-records-per-s 1e9 fixes them at linger_s.
Every event carries its wall-clock send time `t` (ms) and its index `n` within its run. A sampler subscribed
to the project's change channel (`<ns>:<gen>:changes:<entity/project>`) reads each changed run's flat view
(`t`, `n`) as soon as it is told, and takes the time the reply arrived as the moment those events became
visible: the events of the run with index in (n_before, n_now] became visible then; the newest was sent at
`t`, the older ones at times interpolated back to the previous `t` (the pacing is steady). Freshness of an
event = visible - sent. Events sent in the first --warmup seconds are left out of the percentiles. Every event
logged after that is in them, the last ones too: the trainers keep their runs open until the consumer has
folded everything, and only then finish them (400 finish() calls at one moment are a teardown, not the steady
state being measured; they used to land on the last second's events).

Also sampled once a second: events logged and events folded (Redis stats), so throughput and lag (logged -
folded, in events) over time, the consumer's RSS, and CPU in cores (consumer, trainers together, whole machine);
peak RSS is the consumer's VmHWM (the largest, with --consumers N > 1: the members of one group).

Where the time goes: each consumer writes its batch timings (`metricfold consume --timings`), and the table
shows the SDK's send tick (events wait for it), then Kafka send -> readable in Redis (each batch's oldest record:
its age when polled, from its Kafka timestamp, plus the fold and the Redis write), and the batches' poll, fold
and Redis times.

Prints a table, then one JSON line: freshness_p50_ms, freshness_p99_ms, events_per_s, peak_rss_mb (and more).
The time series goes to --series (default test-artifacts/load-series.json) for bench/report.py's plot.
Needs the stack: `make up && source <(bash deploy/local/stack.sh env admin)` (or METRICFOLD_KAFKA / METRICFOLD_REDIS
and the Redis administrator's METRICFOLD_REDIS_PASSWORD[_FILE]).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import importlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
from measures import print_measures  # noqa: E402

from consumer.kafka_io import delete_topics, ensure_topics, topic_layout  # noqa: E402
from consumer.store import Keys  # noqa: E402
from consumer.store.keys import active_key  # noqa: E402
from schemas.settings import Settings  # noqa: E402

ENTITY, PROJECT = "load", "bench"


def _exit_with(parent: int) -> None:
    """Exit this process when *parent* is gone (the harness killed): an orphaned trainer would go on logging, and
    take the CPU from whatever runs next."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _term_with_parent() -> None:
    """In a consumer subprocess, before exec: SIGTERM (finish the batch and exit) when the harness dies (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def trainer(settings: Settings, index: int, runs: int, rate: float, seconds: float, ready: Synchronized[int],
            go: Any, logged: Synchronized[int], done_trainers: Synchronized[int], stop: Any, options: Any,
            nice: int = 0) -> None:
    """One trainer process: *runs* open runs, log() paced to *rate* events/s in total, for *seconds* after *go*;
    then it counts itself in *done_trainers* and finishes its runs once *stop* is set."""
    _exit_with(os.getppid())
    if nice:
        os.nice(nice)
    mf = importlib.import_module("producer")  # the SDK package (bench/producer.py is the SDK benchmark)
    opened = [mf.init(entity=ENTITY, project=PROJECT, run_id=f"t{index}r{j}", settings=settings, sender_options=options)
              for j in range(runs)]
    for run in opened:  # connected: one record each reached Kafka
        run.log({"loss": 0.0, "acc": 0.0, "lr": 0.0})
    counts = [0] * runs
    with ready.get_lock():
        ready.value += 1
    go.wait()
    began = time.monotonic()
    done = 0
    turn = 0
    clock = time.time
    total = int(seconds * rate)  # the schedule: exactly rate x seconds events, the last ones at the end
    while done < total:
        elapsed = time.monotonic() - began
        due = min(total, int(elapsed * rate)) - done
        for _ in range(due):
            run = opened[turn]
            n = counts[turn] = counts[turn] + 1
            run.log({"loss": 1.0 / n, "acc": 0.5, "lr": 0.001, "t": clock() * 1000.0, "n": float(n)})
            turn = (turn + 1) % runs
        if due > 0:  # in bursts every 20 ms, as a trainer logs a step's metrics together
            done += due
            with logged.get_lock():
                logged.value += due
        if done < total:
            time.sleep(0.02)
    with done_trainers.get_lock():
        done_trainers.value += 1
    stop.wait()  # the runs stay open (their last events in flight) until the consumer has folded everything
    for run in opened:
        run.finish()


class Sampler(threading.Thread):
    """Turns change notices into (visible time, sent time of the newest visible event, events that became visible)."""

    def __init__(self, settings: Settings, generation: str) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.keys = Keys(settings.namespace, generation)
        self.client = redis.Redis.from_url(settings.redis, username=settings.redis_username, password=settings.redis_password)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(self.keys.channel(f"{ENTITY}/{PROJECT}"))
        self.stop = threading.Event()
        self.last: dict[str, tuple[float, float]] = {}  # run_id -> (t, n) last seen
        self.observations: list[tuple[float, float, float, float]] = []  # visible_ms, t_prev, t_now, events

    def run(self) -> None:
        while not self.stop.is_set():
            changed: set[str] = set()
            message = self.pubsub.get_message(timeout=0.05)
            while message is not None:
                data = message["data"]
                changed.add(data.decode() if isinstance(data, bytes) else str(data))
                message = self.pubsub.get_message(timeout=0.0)
            if not changed:
                continue
            pipe = self.client.pipeline(transaction=False)
            ordered = sorted(changed)
            for run_id in ordered:
                pipe.hmget(self.keys.run(f"{ENTITY}/{PROJECT}/{run_id}", "flat"), "t", "n")
            replies = pipe.execute()
            visible = time.time() * 1000.0
            for run_id, (t_raw, n_raw) in zip(ordered, replies, strict=True):
                if t_raw is None or n_raw is None:
                    continue
                t_now, n_now = float(t_raw), float(n_raw)
                t_prev, n_prev = self.last.get(run_id, (t_now, n_now - 1))
                if n_now > n_prev:
                    self.observations.append((visible, t_prev, t_now, n_now - n_prev))
                    self.last[run_id] = (t_now, n_now)
        self.pubsub.close()
        self.client.close()


def freshness(observations: list[tuple[float, float, float, float]], since_ms: float) -> list[float]:
    """Per event: visible - sent, the older events of an observation interpolated between the two send times."""
    out: list[float] = []
    for visible, t_prev, t_now, events in observations:
        k = int(events)
        for i in range(1, k + 1):
            sent = t_prev + (t_now - t_prev) * i / k
            if sent >= since_ms:
                out.append(visible - sent)
    return out


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def batch_timings(paths: list[Path], since: float, until: float) -> dict[str, float]:
    """Percentiles of the consumers' batch timings (`metricfold consume --timings`) written in [since, until]:
    records and runs per batch, poll / fold / Redis ms, and send -> readable: the oldest record's age when
    polled plus the fold and the Redis write (the time from its Kafka send until its run was readable)."""
    rows = []
    for path in paths:
        if path.exists():
            rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if since <= r["at"] <= until]
    if not rows:
        return {}
    columns = {
        "batch_records": [float(r["records"]) for r in rows],
        "batch_runs": [float(r["runs"]) for r in rows],
        "batch_poll": [r["poll_ms"] for r in rows],
        "batch_fold": [r["fold_ms"] for r in rows],
        "batch_redis": [r["redis_ms"] for r in rows],
        "send_to_visible": [r["oldest_age_ms"] + r["fold_ms"] + r["redis_ms"] for r in rows
                            if r["oldest_age_ms"] is not None],
    }
    out: dict[str, float] = {"batches": float(len(rows))}
    for name, values in columns.items():
        ordered = sorted(values)
        unit = "" if name in ("batch_records", "batch_runs") else "_ms"
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            out[f"{name}_{label}{unit}"] = round(percentile(ordered, q), 1) if ordered else 0.0
    return out


_REDIS_COUNTERS = ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes")


def redis_counters(client: redis.Redis) -> dict[str, int]:
    """Redis's own counters of commands and network bytes (INFO stats): their growth over the logging time, per event
    and per consumer batch, is what docs/SCALING.md sizes Redis with. They count every client of the server."""
    stats = client.info("stats")
    return {name: int(stats[name]) for name in _REDIS_COUNTERS}


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy so far (not idle, not iowait), from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def folded_events(client: redis.Redis, keys: Keys) -> int:
    value = client.hget(keys.project_stats(f"{ENTITY}/{PROJECT}"), "events")
    return int(value) if value else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="logging time (60)")
    parser.add_argument("--trainers", type=int, default=8, help="trainer processes (8)")
    parser.add_argument("--runs", type=int, default=50, help="open runs per trainer (50)")
    parser.add_argument("--rate", type=float, default=20_000.0, help="events/s logged by all trainers together (20000)")
    parser.add_argument("--linger", type=float, help="the SDK's batch ticks in seconds (default: SenderOptions.linger_s)")
    parser.add_argument("--max-records-per-s", type=float,
                        help="a trainer process's records per second before its ticks stretch (default: SenderOptions's)")
    parser.add_argument("--consumers", type=int, default=1, help="consumer processes in the group (1)")
    parser.add_argument("--trainer-nice", type=int, default=0, help="run the trainers at this nice level (0)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds left out of the freshness percentiles (3)")
    parser.add_argument("--series", type=Path, default=REPO / "test-artifacts" / "load-series.json", help="time series JSON")
    parser.add_argument("--keep", action="store_true", help="keep the topic and Redis keys afterwards")
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    settings = Settings.from_env(topic=f"bench-load-{tag}", namespace=f"load{tag}")
    ensure_topics(settings)
    layout = topic_layout(settings, settings.topic)  # read back from the brokers, for the table
    client = redis.Redis.from_url(settings.redis, username=settings.redis_username, password=settings.redis_password)
    consumer_log = REPO / "test-artifacts" / f"load-consumer-{tag}.log"
    consumer_log.parent.mkdir(exist_ok=True)  # every consumer of the group logs here
    # the Redis URL (it may hold a password) reaches the consumers in METRICFOLD_REDIS, not in their argv (ps shows that)
    command = [sys.executable, "-m", "consumer.cli", "-v", "consume", "--quiet", "--kafka", settings.kafka,
               "--topic", settings.topic, "--namespace", settings.namespace]
    timings = [REPO / "test-artifacts" / f"load-timings-{tag}-{i}.jsonl" for i in range(args.consumers)]
    with consumer_log.open("wb") as sink:
        consumers = [subprocess.Popen([*command, "--timings", str(path)], cwd=REPO, stdout=subprocess.DEVNULL,
                                      stderr=sink, env={**os.environ}, preexec_fn=_term_with_parent)
                     for path in timings]
    context = multiprocessing.get_context("spawn")
    logged: Synchronized[int] = context.Value("q", 0)
    ready: Synchronized[int] = context.Value("i", 0)
    go = context.Event()
    done_trainers: Synchronized[int] = context.Value("i", 0)
    stop = context.Event()
    try:
        deadline = time.monotonic() + 60
        while client.get(active_key(settings.namespace)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        active = client.get(active_key(settings.namespace))
        generation = active.decode() if isinstance(active, bytes) else "g1"
        keys = Keys(settings.namespace, generation)
        sampler = Sampler(settings, generation)
        sampler.start()

        per_trainer = args.rate / args.trainers
        sdk = importlib.import_module("producer.sender")  # (bench/producer.py, the SDK benchmark, shadows the package name)
        options = sdk.SenderOptions(connect_timeout_s=120.0)  # 400 runs bootstrap at once on a small machine
        if args.linger is not None:
            options = dataclasses.replace(options, linger_s=args.linger)
        if args.max_records_per_s is not None:
            options = dataclasses.replace(options, max_records_per_s=args.max_records_per_s)
        tick = sdk.tick_s(options, args.runs)  # every run of a trainer logs all the time
        print(f"{args.trainers} trainers x {args.runs} runs: opening the runs ...", file=sys.stderr, flush=True)
        trainers = [context.Process(target=trainer, args=(settings, i, args.runs, per_trainer, args.seconds, ready, go, logged,
                                                               done_trainers, stop, options, args.trainer_nice))
                    for i in range(args.trainers)]
        for p in trainers:
            p.start()
        while ready.value < args.trainers:
            if not all(p.is_alive() for p in trainers):
                raise SystemExit("a trainer failed while opening its runs")
            time.sleep(0.1)
        time.sleep(2.0)  # the consumer folds the opening events
        print(f"logging {args.rate:,.0f} events/s for {args.seconds:.0f} s ...", file=sys.stderr, flush=True)
        redis_before = redis_counters(client)
        go.set()
        series: list[dict[str, float]] = []
        began = time.time()
        harness_cpu0 = os.times().user + os.times().system
        trainer_pids = [p.pid for p in trainers if p.pid is not None]
        consumer_pids = [c.pid for c in consumers]
        cpu_last = (sum(map(cpu_seconds, consumer_pids)), sum(map(cpu_seconds, trainer_pids)), machine_busy_seconds(), began)
        opening = args.trainers * args.runs * 2  # RunStarted and the first log() of every run
        def logging_ended() -> bool:  # every trainer has logged its share (or died: its exit code is checked below)
            return done_trainers.value + sum(not p.is_alive() for p in trainers) >= args.trainers

        while not logging_ended() or folded_events(client, keys) < logged.value + opening:
            time.sleep(1.0 - (time.time() - began) % 1.0)
            now = time.time()
            sent, folded = logged.value, max(0, folded_events(client, keys) - opening)
            cpu_now = (sum(map(cpu_seconds, consumer_pids)), sum(map(cpu_seconds, trainer_pids)), machine_busy_seconds(), now)
            span = (cpu_now[3] - cpu_last[3]) or 1.0
            series.append({"t_s": round(now - began, 3), "logged": sent, "folded": folded, "lag_events": sent - folded,
                           "consumer_rss_mb": round(sum(rss_mb(pid) for pid in consumer_pids), 1),
                           "consumer_cpu": round((cpu_now[0] - cpu_last[0]) / span, 2),
                           "trainers_cpu": round(max(0.0, cpu_now[1] - cpu_last[1]) / span, 2),
                           "machine_cpu": round((cpu_now[2] - cpu_last[2]) / span, 2)})
            cpu_last = cpu_now
            if now - began > args.seconds + 120:
                print("the consumer did not catch up within 120 s of the end", file=sys.stderr)
                break
        drained_at = time.time()
        redis_after = redis_counters(client)
        harness_cpu_s = os.times().user + os.times().system
        stop.set()  # now the trainers finish their runs
        for p in trainers:
            p.join()
            if p.exitcode != 0:
                raise SystemExit(f"a trainer failed with exit code {p.exitcode}")
        time.sleep(0.5)
        sampler.stop.set()
        sampler.join(timeout=5)
        peak_rss = max(rss_mb(pid, "VmHWM") for pid in consumer_pids)
    finally:
        stop.set()  # a trainer left waiting would never exit
        for consumer in consumers:
            consumer.send_signal(signal.SIGTERM)
        for consumer in consumers:
            consumer.wait(timeout=60)
        if not args.keep:
            delete_topics(settings, [settings.topic, settings.dead_letter_topic])
            for key in client.scan_iter(match=f"{settings.namespace}:*", count=5000):
                client.unlink(key)
        client.close()

    total = logged.value
    ages = sorted(freshness(sampler.observations, (began + args.warmup) * 1000.0))
    per_second: list[dict[str, Any]] = []
    for i, point in enumerate(series):
        before = series[i - 1] if i else {"logged": 0, "folded": 0, "t_s": 0.0}
        span = point["t_s"] - before["t_s"] or 1.0
        per_second.append({**point, "logged_per_s": round((point["logged"] - before["logged"]) / span),
                           "folded_per_s": round((point["folded"] - before["folded"]) / span)})
    buckets: dict[int, list[float]] = {}
    for visible, _t_prev, t_now, _events in sampler.observations:
        buckets.setdefault(int((t_now / 1000.0) - began), []).append(visible - t_now)
    fresh_series = [{"t_s": s, "newest_p50_ms": round(percentile(sorted(v), 0.5), 1),
                     "newest_p99_ms": round(percentile(sorted(v), 0.99), 1)} for s, v in sorted(buckets.items()) if s >= 0]
    events_per_s = total / args.seconds
    logging = [p for p in series if p["t_s"] <= args.seconds] or series

    def mean_of(field: str) -> float:
        return round(sum(p[field] for p in logging) / len(logging), 2) if logging else 0.0

    batches = batch_timings(timings, began + args.warmup, began + args.seconds)
    all_batches = batch_timings(timings, began, drained_at).get("batches", 0.0)
    grown = {name: redis_after[name] - redis_before[name] for name in _REDIS_COUNTERS}
    logged_events = max(total, 1)
    redis_use = {
        "redis_commands_per_event": round(grown["total_commands_processed"] / logged_events, 3),
        "redis_bytes_in_per_event": round(grown["total_net_input_bytes"] / logged_events, 1),
        "redis_bytes_out_per_event": round(grown["total_net_output_bytes"] / logged_events, 1),
        "redis_commands_per_batch": round(grown["total_commands_processed"] / all_batches, 1) if all_batches else None,
        "redis_bytes_in_per_batch": round(grown["total_net_input_bytes"] / all_batches) if all_batches else None,
    }
    result = {
        "freshness_p50_ms": round(percentile(ages, 0.50), 1),
        "freshness_p99_ms": round(percentile(ages, 0.99), 1),
        "events_per_s": round(events_per_s),
        "peak_rss_mb": round(peak_rss, 1),
        "freshness_p90_ms": round(percentile(ages, 0.90), 1),
        "freshness_max_ms": round(ages[-1], 1) if ages else None,
        "events": total,
        "events_measured": len(ages),
        "max_lag_events": max((p["lag_events"] for p in series), default=0),
        "drain_s": round(max(0.0, drained_at - began - args.seconds), 1),
        "consumer_cpu": mean_of("consumer_cpu"),
        "harness_cpu": round((harness_cpu_s - harness_cpu0) / max(drained_at - began, 1.0), 2),
        "trainers_cpu": mean_of("trainers_cpu"),
        "machine_cpu": mean_of("machine_cpu"),
        "cores": os.cpu_count(),
        "trainers": args.trainers,
        "consumers": args.consumers,
        "trainer_nice": args.trainer_nice,
        "linger_s": args.linger,
        "max_records_per_s": args.max_records_per_s,
        "runs": args.trainers * args.runs,
        "kafka_brokers": layout.brokers,
        "partitions": layout.partitions,
        "replication_factor": layout.replication_factor,
        "min_insync_replicas": layout.min_insync_replicas,
        "seconds": args.seconds,
        "target_rate": args.rate,
        **batches,
        **redis_use,
        "sdk_linger_ms": round(tick * 1000),
    }
    args.series.parent.mkdir(parents=True, exist_ok=True)
    args.series.write_text(json.dumps({"result": result, "per_second": per_second, "freshness": fresh_series}, indent=1))

    rows = [
        ("trainers x runs, consumers", f"{args.trainers} x {args.runs}, {args.consumers}"),
        ("Kafka brokers; the topic's partitions, replication factor, min.insync.replicas (read back); the SDK's acks",
         f"{layout.brokers}; {layout.partitions}, {layout.replication_factor}, {layout.min_insync_replicas}; all"),
        ("logging time (s)", f"{args.seconds:.0f}"),
        ("events logged", f"{total:,}"),
        ("events/s logged and folded (sustained)", f"{events_per_s:,.0f}"),
        ("consumer caught up after the end (s)", f"{result['drain_s']}"),
        ("max lag (events logged - folded)", f"{result['max_lag_events']:,}"),
        ("freshness p50 / p90 / p99 / max (ms)", " / ".join(
            str(result[f"freshness_{q}_ms"]) for q in ("p50", "p90", "p99", "max"))),
        ("events in the freshness figures", f"{len(ages):,}"),
        ("consumer peak RSS (MB, the largest of the group)", f"{peak_rss:.0f}"),
        ("CPU while logging, cores: consumer / trainers / whole machine",
         f"{result['consumer_cpu']} / {result['trainers_cpu']} / {result['machine_cpu']} of {os.cpu_count()}"),
        ("CPU of this script (the freshness sampler), cores", f"{result['harness_cpu']}"),
        ("where the time goes: events wait in the SDK for its next send tick, up to (ms)", f"{result['sdk_linger_ms']}"),
        ("then Kafka send -> readable in Redis, p50 / p99 (ms; each batch's oldest record)",
         f"{batches.get('send_to_visible_p50_ms')} / {batches.get('send_to_visible_p99_ms')}"),
        ("consumer batches: records, runs written per batch (p50)",
         f"{batches.get('batch_records_p50')}, {batches.get('batch_runs_p50')}"),
        ("consumer batch p50 / p99 (ms): poll, fold, Redis",
         ", ".join(f"{batches.get(f'batch_{part}_p50_ms')} / {batches.get(f'batch_{part}_p99_ms')}"
                   for part in ("poll", "fold", "redis"))),
        ("Redis commands / bytes in / bytes out per event (INFO stats, every client: the sampler's reads too)",
         f"{redis_use['redis_commands_per_event']} / {redis_use['redis_bytes_in_per_event']} / "
         f"{redis_use['redis_bytes_out_per_event']}"),
        ("Redis commands / bytes in per consumer batch", f"{redis_use['redis_commands_per_batch']} / "
         f"{redis_use['redis_bytes_in_per_batch']}"),
    ]
    print_measures(rows, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
