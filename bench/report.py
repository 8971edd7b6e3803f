"""`make report`: run the benchmarks and the chaos suite, write docs/REPORT.md and docs/report-load.png.

    python bench/report.py [--chaos short|full|none] [--load-seconds 60] [--load-nice 10] [--load-nice-consumers 2]
                           [--load-capacity-runs 25] [--no-load-fixed-ticks] [--cluster-nodes 3]
                           [--cluster-port 19892] [--consumer-events 300000] [--replay-events 500000] [--skip NAME ...]

Runs, one after the other, each in its own process against the local stack (`make up`; the connection settings
come from `deploy/local/stack.sh env admin` unless METRICFOLD_KAFKA / METRICFOLD_REDIS are set): bench/producer.py,
bench/consumer.py --events N, bench/replay.py --events N, bench/load.py --seconds S (and again with the trainers
at --load-nice and --load-nice-consumers consumers: the consumers get the CPU first, as on a cluster where the trainers
run elsewhere; and again with --load-capacity-runs open runs per trainer: the same events/s from fewer runs, since
the consumer's cost is per record and per run rather than per event; and again with the SDK's ticks fixed at 0.2 s,
the tick stretch off, unless --no-load-fixed-ticks), bench/load.py again against a private --cluster-nodes
Kafka cluster (RF 3, min.insync.replicas=2, acks=all; started on --cluster-port and the next ports, stopped after;
trainers not niced, one consumer, the dev stack's Redis; `--skip cluster` or --cluster-nodes 0 leaves it out),
bench/serve.py (when it exists), then the chaos suite (`pytest tests/chaos`, short, or full with --chaos full or
METRICFOLD_CHAOS=full, on its own private stack) with a JUnit XML and each scenario's lost / doubled counts.
Every benchmark prints a table and a last JSON line; the report keeps both. Progress goes to stderr. The plot
shows bench/load.py's throughput, lag and freshness over time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
ARTIFACTS = REPO / "test-artifacts"
PYTHON = sys.executable


def say(message: str) -> None:
    print(f"[report] {message}", file=sys.stderr, flush=True)


def stack_env() -> dict[str, str]:
    env = dict(os.environ)
    if "METRICFOLD_KAFKA" not in env or "METRICFOLD_REDIS" not in env:
        script = REPO / "deploy" / "local" / "stack.sh"
        # the administrator: the benchmarks make namespaces of their own (the password stays in its file)
        out = subprocess.run(["bash", str(script), "env", "admin"], capture_output=True, text=True, check=True)
        for line in out.stdout.splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export ") :].split("=", 1)
                env.setdefault(key, value)
    return env


def run_bench(name: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    script = REPO / "bench" / f"{name.split(':')[0]}.py"  # "load:nice" runs bench/load.py
    say(f"bench/{script.name} {' '.join(args)} ...")
    started = time.monotonic()
    out = subprocess.run([PYTHON, str(script), *args], cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    result: dict[str, Any] = {"name": name, "args": args, "seconds": round(seconds, 1), "ok": out.returncode == 0}
    try:
        result["json"] = json.loads(lines[-1])
        result["table"] = "\n".join(lines[:-1])
    except (IndexError, ValueError):
        result["json"] = None
        result["table"] = "\n".join(lines)
        result["ok"] = False
    if not result["ok"]:
        result["error"] = (out.stderr or "")[-2000:]
    say(f"  done in {seconds:.0f} s: {'ok' if result['ok'] else 'FAILED'}")
    return result


@contextlib.contextmanager
def kafka_cluster(nodes: int, port: int, env: dict[str, str]) -> Iterator[str]:
    """A private *nodes*-node Kafka cluster (deploy/local/stack.sh, its own stack directory, brokers on *port*,
    *port* + 2, ...; controllers on *port* + 1, + 3, ...), started fresh and stopped afterwards: its bootstrap."""
    stack_dir = REPO / ".stack" / "report-cluster"
    cluster_env = {**env, "METRICFOLD_STACK_DIR": str(stack_dir), "METRICFOLD_KAFKA_NODES": str(nodes),
                   "METRICFOLD_KAFKA_PORT": str(port), "METRICFOLD_KAFKA_CONTROLLER_PORT": str(port + 1)}
    script = ["bash", str(REPO / "deploy" / "local" / "stack.sh")]
    subprocess.run([*script, "down"], env=cluster_env, capture_output=True)  # a run killed before its cleanup
    shutil.rmtree(stack_dir, ignore_errors=True)
    say(f"starting a private {nodes}-node Kafka cluster on 127.0.0.1:{port} ...")
    try:
        started = subprocess.run([*script, "start-kafka"], env=cluster_env, capture_output=True, text=True)
        if started.returncode != 0:
            raise RuntimeError(f"could not start the {nodes}-node Kafka cluster:\n{started.stderr[-1500:]}")
        yield ",".join(f"127.0.0.1:{port + 2 * n}" for n in range(nodes))
    finally:
        subprocess.run([*script, "down"], env=cluster_env, capture_output=True)
        shutil.rmtree(stack_dir, ignore_errors=True)


def run_cluster_load(options: argparse.Namespace, load_args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """bench/load.py as the first load run (trainers not niced, one consumer) against a private Kafka cluster; the
    dev stack's Redis."""
    args = [*load_args, "--series", str(ARTIFACTS / "load-series-cluster.json")]
    try:
        with kafka_cluster(options.cluster_nodes, options.cluster_port, env) as bootstrap:
            return run_bench("load:cluster", args, {**env, "METRICFOLD_KAFKA": bootstrap})
    except RuntimeError as exc:
        say(f"  {exc}")
        return {"name": "load:cluster", "args": args, "seconds": 0.0, "ok": False, "json": None, "table": "",
                "error": str(exc)}


def run_chaos(mode: str, env: dict[str, str]) -> dict[str, Any]:
    results = ARTIFACTS / "chaos-results.jsonl"
    junit = ARTIFACTS / "chaos-junit.xml"
    results.unlink(missing_ok=True)
    chaos_env = {**env, "METRICFOLD_CHAOS_RESULTS": str(results)}
    if mode == "full":
        chaos_env["METRICFOLD_CHAOS"] = "full"
    else:
        chaos_env.pop("METRICFOLD_CHAOS", None)
    say(f"chaos suite ({mode}) ...")
    started = time.monotonic()
    out = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/chaos", f"--junitxml={junit}"],
                         cwd=REPO, env=chaos_env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    say(f"  done in {seconds:.0f} s (exit {out.returncode})")
    return {"mode": mode, "seconds": round(seconds, 1), "exit": out.returncode, "tests": parse_junit(junit),
            "verdicts": [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else [],
            "summary": (out.stdout.strip().splitlines() or [""])[-1]}


def parse_junit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        tests.append({"name": case.get("name", ""), "file": (case.get("classname") or "").split(".")[-1],
                      "seconds": float(case.get("time") or 0), "outcome": outcome})
    return tests


def machine(env: dict[str, str]) -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = next((line.split(":", 1)[1].strip() for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), "unknown")
    try:
        import redis

        from schemas.settings import Settings  # (not consumer.*: bench/consumer.py shadows it here)

        settings = Settings.from_env({"METRICFOLD_REDIS": "redis://127.0.0.1:16379/0", **env})
        login = {"username": settings.redis_username, "password": settings.redis_password}
        with redis.Redis.from_url(settings.redis, **login) as client:
            redis_version = str(client.info("server").get("redis_version"))
    except Exception as exc:  # the report says so instead of failing
        redis_version = f"unknown ({exc})"
    jars = sorted(Path(os.environ.get("METRICFOLD_CACHE_DIR", Path.home() / ".cache" / "metricfold")).glob("kafka-*"))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return {
        "uname -a": " ".join(platform.uname()),
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "Python": platform.python_version(),
        "Kafka": ", ".join(j.name for j in jars) or "unknown",
        "Java": java[0] if java else "unknown",
        "Redis": redis_version,
        "date (UTC)": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
    }


def plot(series_path: Path, png: Path) -> bool:
    if not series_path.exists():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(series_path.read_text())
    per_second, fresh = data["per_second"], data["freshness"]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    t = [p["t_s"] for p in per_second]
    top.plot(t, [p["logged_per_s"] for p in per_second], label="logged (events/s)")
    top.plot(t, [p["folded_per_s"] for p in per_second], label="folded into Redis (events/s)")
    top.axhline(20_000, color="grey", linestyle=":", label="target 20,000/s")
    top.set_ylabel("events/s")
    top.legend(loc="lower right")
    top.set_title("bench/load.py: throughput, consumer lag and freshness over time")
    middle.plot(t, [p["lag_events"] for p in per_second], color="tab:red", label="lag (logged - folded)")
    middle.set_ylabel("events")
    middle.legend(loc="upper right")
    bottom.plot([f["t_s"] for f in fresh], [f["newest_p50_ms"] for f in fresh], label="p50")
    bottom.plot([f["t_s"] for f in fresh], [f["newest_p99_ms"] for f in fresh], label="p99")
    bottom.axhline(500, color="grey", linestyle=":", label="target p99 500 ms")
    bottom.set_ylabel("freshness (ms)")
    bottom.set_xlabel("seconds since the trainers started logging")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return True


def code(text: str) -> str:
    return f"```\n{text}\n```\n"


def write_report(runs: list[dict[str, Any]], chaos: dict[str, Any] | None, info: dict[str, str], plotted: bool,
                 options: argparse.Namespace) -> str:
    by = {r["name"]: r for r in runs}
    out = ["# metricfold performance and reliability report", "",
           f"Generated by `make report` (bench/report.py) on {info['date (UTC)']} UTC. Every figure below was measured "
           "by the commands named, on the machine described at the end, with the local stack (`make up`). "
           "The machine is small (see below) and runs Kafka, Redis, the trainers and the consumer together.", ""]
    load = by.get("load", {}).get("json") or {}
    if load:
        ok = load["freshness_p99_ms"] <= 500 and load["events_per_s"] >= 20_000
        out += ["## Targets (issues 7 and 17)", "",
                "| target | measured | |", "| --- | --- | --- |",
                f"| freshness p99 <= 500 ms | p99 {load['freshness_p99_ms']} ms (p50 {load['freshness_p50_ms']} ms) | "
                f"{'met' if load['freshness_p99_ms'] <= 500 else 'NOT met'} |",
                f"| at >= 20,000 events/s sustained | {load['events_per_s']:,} events/s for {load['seconds']:.0f} s "
                f"(max lag {load['max_lag_events']:,} events) | {'met' if load['events_per_s'] >= 20_000 else 'NOT met'} |",
                f"| consumer peak RSS | {load['peak_rss_mb']} MB | |"]
        nice = by.get("load:nice", {}).get("json") or {}
        if nice:
            out += [f"| freshness p99 <= 500 ms, trainers at nice {nice.get('trainer_nice')} and {nice.get('consumers')} "
                    f"consumers | p99 {nice['freshness_p99_ms']} ms (p50 {nice['freshness_p50_ms']} ms) at "
                    f"{nice['events_per_s']:,} events/s | {'met' if nice['freshness_p99_ms'] <= 500 else 'NOT met'} |"]
        fewer = by.get("load:capacity", {}).get("json") or {}
        if fewer:
            shape = f"{fewer['trainers']} x {fewer['runs'] // fewer['trainers']} runs"
            out += [f"| freshness p99 <= 500 ms, {shape} (fewer records/s) | "
                    f"p99 {fewer['freshness_p99_ms']} ms (p50 {fewer['freshness_p50_ms']} ms) at "
                    f"{fewer['events_per_s']:,} events/s | {'met' if fewer['freshness_p99_ms'] <= 500 else 'NOT met'} |"]
        cluster = by.get("load:cluster", {}).get("json") or {}
        if cluster:
            out += [f"| freshness p99 <= 500 ms on a {cluster['kafka_brokers']}-node Kafka cluster (replication factor "
                    f"{cluster['replication_factor']}, min.insync.replicas {cluster['min_insync_replicas']}, acks=all; "
                    f"issue 17), {cluster['consumers']} consumer | "
                    f"p99 {cluster['freshness_p99_ms']} ms (p50 {cluster['freshness_p50_ms']} ms) at "
                    f"{cluster['events_per_s']:,} events/s | {'met' if cluster['freshness_p99_ms'] <= 500 else 'NOT met'} |"]
        elif "load:cluster" in by:
            out += ["| freshness p99 <= 500 ms on the 3-node Kafka cluster (issue 17) | the run failed (below) | |"]
        fixed = by.get("load:fixed-ticks", {}).get("json") or {}
        if fixed:
            out += [f"| for comparison: the first row with the SDK's ticks fixed at {fixed['sdk_linger_ms']} ms (the tick "
                    f"stretch off) | p99 {fixed['freshness_p99_ms']} ms (p50 {fixed['freshness_p50_ms']} ms) at "
                    f"{fixed['events_per_s']:,} events/s | {'met' if fixed['freshness_p99_ms'] <= 500 else 'NOT met'} |"]
        out += ["",
                f"Overall: {'both targets met' if ok else 'the targets are NOT met on this machine'} (judged by the "
                "first row: one run; see the notes for other runs).", ""]
    if chaos is not None:
        out += chaos_section(chaos)
    titles = {
        "load": f"Load: 8 trainer processes x {options.load_runs} runs, steady rate, consumer live "
                f"(`bench/load.py --seconds {options.load_seconds:.0f} --runs {options.load_runs}`)",
        "producer": "SDK: log() throughput and enqueue latency (`bench/producer.py`)",
        "consumer": f"Consumer throughput vs a naive consumer (`bench/consumer.py --events {options.consumer_events}`)",
        "replay": f"Replay (`bench/replay.py --events {options.replay_events}`)",
        "load:nice": f"Load again, the trainers at nice {options.load_nice} (they stand in for GPU hosts, so the "
                     f"consumers get the CPU first) and {options.load_nice_consumers} consumer processes in one group "
                     f"(`bench/load.py --seconds {options.load_seconds:.0f} --runs {options.load_runs} --trainer-nice "
                     f"{options.load_nice} --consumers {options.load_nice_consumers}`)",
        "load:capacity": f"Load again, 8 trainer processes x {options.load_capacity_runs} runs: the same events/s from "
                         "fewer open runs. A live run sends one record per SDK tick (0.2 s; 0.25 s in a process with 50 "
                         "runs logging) whatever its rate, and the "
                         "consumer's cost is per record and per run, so the open runs, not the events/s, set its load "
                         f"(`bench/load.py --seconds {options.load_seconds:.0f} --runs {options.load_capacity_runs}`)",
        "load:fixed-ticks": "Load again, the SDK's ticks fixed at 0.2 s (`linger_s`) in every process: the tick stretch "
                            "(a process with more than 40 runs logging ticks every runs / 200 s, 0.25 s here) off, for "
                            f"comparison (`bench/load.py --seconds {options.load_seconds:.0f} --runs {options.load_runs} "
                            "--max-records-per-s 1e9`)",
        "load:cluster": f"Load against a private {options.cluster_nodes}-node KRaft Kafka cluster on this machine (every "
                        "topic at replication factor 3 and min.insync.replicas=2, read back from the brokers; the SDK "
                        "sends with acks=all), as the first load run: trainers not niced, one consumer (`bench/load.py "
                        f"--seconds {options.load_seconds:.0f} --runs {options.load_runs}` with METRICFOLD_KAFKA at the "
                        "cluster). The broker JVMs share the machine's cores with everything else; docs/SCALING.md has "
                        "the scale-out curve",
        "serve": "Web page latency (`bench/serve.py --runs 1000 --requests 100 --browser 0`)",
    }
    for name in ("load", "load:fixed-ticks", "load:nice", "load:capacity", "load:cluster", "producer", "consumer",
                 "replay", "serve"):
        run = by.get(name)
        if name in ("load:nice", "load:capacity", "load:fixed-ticks", "load:cluster") and run is None:
            continue
        out += [f"## {titles[name]}", ""]
        if run is None:
            out += ["Not run (bench/serve.py is not in this checkout)." if name == "serve" else "Not run (--skip).", ""]
            continue
        if not run["ok"]:
            out += [f"FAILED after {run['seconds']} s:", "", code(run.get("error", "") or run["table"])]
            continue
        out += [code(run["table"]), code(json.dumps(run["json"])), f"({run['seconds']} s including the pre-fill.)", ""]
        if name == "load" and plotted:
            out += ["![throughput, lag and freshness over time](report-load.png)", "",
                    "Freshness = the time from `log()` in a trainer to the value being readable in Redis. Each event "
                    "carries its send time; a sampler subscribed to the project's change channel reads the changed "
                    "runs at once, and the events of a run that became visible in one read are dated by interpolation "
                    "between the previous and the newest send time (the pacing is steady). The plot's freshness is per "
                    "second, for the newest event of each read; the table's percentiles are over every event after a "
                    "3 s warm-up.", ""]
    if options.note:
        out += ["## Notes", ""] + [f"- {note}" for note in options.note] + [""]
    out += ["## Machine", "", "| | |", "| --- | --- |"] + [f"| {k} | `{v}` |" for k, v in info.items()] + [""]
    return "\n".join(out)


def chaos_section(chaos: dict[str, Any]) -> list[str]:
    out = [f"## Chaos suite ({chaos['mode']} form, `{'make chaos' if chaos['mode'] == 'full' else 'pytest tests/chaos'}`)", "",
           f"{chaos['summary']} in {chaos['seconds']:.0f} s, on a private Kafka + Redis started for the suite. "
           "Each scenario streams events from several trainer processes while the fault happens, then compares "
           "the Redis state with a clean fold of the same topic into another namespace (canonical digest, stats, "
           "and per run the events applied: lost = applied by the clean fold and not by the faulted one, doubled "
           "= the other way round).", "",
           "| test | outcome | seconds |", "| --- | --- | --- |"]
    out += [f"| `{t['name']}` | {t['outcome']} | {t['seconds']:.0f} |" for t in chaos["tests"]]
    out += ["", "| scenario | events expected | events folded | lost | doubled | digest equal | details |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for v in chaos["verdicts"]:
        details = {k: val for k, val in v.items() if k not in (
            "scenario", "mode", "expected_events", "events", "lost", "doubled", "digest_equal", "stats", "clean_stats", "kinds")}
        if "expected_events" in v:
            out.append(f"| {v['scenario']} | {v['expected_events']:,} | {v['events']:,} | {v['lost']} | {v['doubled']} | "
                       f"{'yes' if v['digest_equal'] else 'NO'} | {json.dumps(details)} |")
        else:
            out.append(f"| {v['scenario']} | | | | | | {json.dumps(details)} |")
    return [*out, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_chaos = "full" if os.environ.get("METRICFOLD_CHAOS", "").lower() == "full" else "short"
    parser.add_argument("--chaos", choices=["short", "full", "none"], default=default_chaos,
                        help="chaos suite form (short; full with METRICFOLD_CHAOS=full)")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--load-runs", type=int, default=50, help="open runs per trainer process in bench/load.py (50)")
    parser.add_argument("--load-nice", type=int, default=10,
                        help="also run bench/load.py with the trainers at this nice level (10; 0: do not)")
    parser.add_argument("--load-nice-consumers", type=int, default=2,
                        help="consumer processes (one group) in that second load run (2)")
    parser.add_argument("--load-capacity-runs", type=int, default=25,
                        help="also run bench/load.py with this many open runs per trainer (25; 0: do not)")
    parser.add_argument("--no-load-fixed-ticks", dest="load_fixed_ticks", action="store_false",
                        help="do not run bench/load.py a second time with the SDK's ticks fixed at 0.2 s")
    parser.add_argument("--cluster-nodes", type=int, default=3,
                        help="also run bench/load.py against a private Kafka cluster of this many nodes (3; 0: do not)")
    parser.add_argument("--cluster-port", type=int, default=19892,
                        help="that cluster's first broker port (19892; its nodes take the next even ports, their "
                             "controllers the odd ones after each)")
    parser.add_argument("--note", action="append", default=[], help="a paragraph for the report's notes (repeatable)")
    parser.add_argument("--consumer-events", type=int, default=300_000)
    parser.add_argument("--replay-events", type=int, default=500_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["producer", "consumer", "replay", "load", "cluster", "serve"])
    parser.add_argument("--output", type=Path, default=DOCS / "REPORT.md")
    options = parser.parse_args()

    env = stack_env()
    ARTIFACTS.mkdir(exist_ok=True)
    series = ARTIFACTS / "load-series.json"
    load_args = ["--seconds", str(options.load_seconds), "--runs", str(options.load_runs)]
    plan: list[tuple[str, list[str]]] = [
        ("load", [*load_args, "--series", str(series)]),
        ("producer", []),
        ("consumer", ["--events", str(options.consumer_events)]),
        ("replay", ["--events", str(options.replay_events)]),
    ]
    if options.load_nice:
        plan.insert(1, ("load:nice", [*load_args, "--trainer-nice", str(options.load_nice),
                                      "--consumers", str(options.load_nice_consumers),
                                      "--series", str(ARTIFACTS / "load-series-nice.json")]))
    if options.load_capacity_runs:
        plan.insert(2 if options.load_nice else 1, (
            "load:capacity", ["--seconds", str(options.load_seconds), "--runs", str(options.load_capacity_runs),
                              "--series", str(ARTIFACTS / "load-series-capacity.json")]))
    if options.load_fixed_ticks:
        plan.insert(1, ("load:fixed-ticks", [*load_args, "--max-records-per-s", "1e9",
                                             "--series", str(ARTIFACTS / "load-series-fixed-ticks.json")]))
    if (REPO / "bench" / "serve.py").exists():
        plan.append(("serve", ["--runs", "1000", "--requests", "100", "--browser", "0"]))
    runs = [run_bench(name, args, env) for name, args in plan if name not in options.skip]
    if options.cluster_nodes and "cluster" not in options.skip:
        runs.append(run_cluster_load(options, load_args, env))
    chaos = run_chaos(options.chaos, env) if options.chaos != "none" else None
    png = options.output.parent / "report-load.png"
    plotted = "load" not in options.skip and plot(series, png)
    info = machine(env)
    options.output.write_text(write_report(runs, chaos, info, plotted, options))
    say(f"wrote {options.output}" + (f" and {png}" if plotted else ""))
    return 0 if all(r["ok"] for r in runs) and (chaos is None or chaos["exit"] == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
