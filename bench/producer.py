"""Benchmark of the trainer SDK: log() of a 4-value dict in one thread, N calls, including the final flush
that confirms every event reached Kafka (acks=all). If wandb is importable, the same loop with
``wandb.init(mode="offline")`` runs in the same process for comparison.

    .venv/bin/python bench/producer.py [--calls 200000] [--kafka 127.0.0.1:19092] [--wandb-calls 20000]

Prints a table, then as its last line one JSON object: log_calls_per_s, enqueue_us_p50, enqueue_us_p99
(and wandb_log_calls_per_s, ratio_vs_wandb when wandb ran). Targets (issue 3): >= 100,000 calls/s
including the flush, median enqueue <= 10 µs, >= 10x wandb's offline log().
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measures import print_measures

import producer as mf
from consumer.kafka_io import delete_topics
from schemas.settings import Settings


def create_topic(settings: Settings) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(**settings.kafka_options())
    try:
        admin.create_topics([NewTopic(settings.topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()


def bench_metricfold(settings: Settings, calls: int) -> dict[str, Any]:
    latencies = array("q", bytes(8 * calls))
    now = time.perf_counter_ns
    run = mf.init(project="bench", settings=settings)
    log = run.log
    start = time.perf_counter()
    for i in range(calls):
        values = {"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 0.001, "grad_norm": 1.25}
        t0 = now()
        log(values)
        latencies[i] = now() - t0
    enqueued = time.perf_counter()
    run.finish()
    done = time.perf_counter()
    report = run.report
    assert report is not None
    if report.records_spooled or report.errors:
        raise SystemExit(f"not every event reached Kafka: {report}")
    ordered = sorted(latencies)
    return {
        "calls": calls,
        "records": report.records_sent,
        "enqueue_s": enqueued - start,
        "total_s": done - start,
        "log_calls_per_s": calls / (done - start),
        "enqueue_us_p50": ordered[calls // 2] / 1000,
        "enqueue_us_p99": ordered[int(calls * 0.99)] / 1000,
    }


def bench_wandb(calls: int) -> dict[str, Any] | None:
    try:
        import wandb
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as directory:
        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(mode="offline", dir=directory, project="bench")
        start = time.perf_counter()
        for i in range(calls):
            run.log({"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 0.001, "grad_norm": 1.25})
        logged = time.perf_counter()
        run.finish()
        done = time.perf_counter()
    return {
        "calls": calls,
        "total_s": done - start,
        "log_calls_per_s": calls / (done - start),
        "loop_calls_per_s": calls / (logged - start),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000, help="metricfold log() calls (200000)")
    parser.add_argument("--wandb-calls", type=int, default=20_000, help="wandb log() calls (20000; 0 skips wandb)")
    parser.add_argument("--kafka", default=os.environ.get("METRICFOLD_KAFKA", "127.0.0.1:19092"))
    args = parser.parse_args()
    if args.calls < 1 or args.wandb_calls < 0:
        parser.error("--calls must be at least 1 and --wandb-calls at least 0")

    settings = Settings.from_env(kafka=args.kafka, topic=f"bench-{uuid.uuid4().hex[:12]}")
    create_topic(settings)
    try:
        ours = bench_metricfold(settings, args.calls)
    finally:
        delete_topics(settings, [settings.topic])  # 200,000 events nobody reads again
    theirs = bench_wandb(args.wandb_calls) if args.wandb_calls else None

    rows = [
        ("metricfold log() calls", f"{ours['calls']:,}"),
        ("Kafka records (batches)", f"{ours['records']:,}"),
        ("enqueue time (s)", f"{ours['enqueue_s']:.3f}"),
        ("total incl. flush + acks (s)", f"{ours['total_s']:.3f}"),
        ("log() calls/s incl. flush", f"{ours['log_calls_per_s']:,.0f}"),
        ("enqueue p50 (µs)", f"{ours['enqueue_us_p50']:.2f}"),
        ("enqueue p99 (µs)", f"{ours['enqueue_us_p99']:.2f}"),
    ]
    result = {k: round(ours[k], 2) for k in ("log_calls_per_s", "enqueue_us_p50", "enqueue_us_p99")}
    if theirs is not None:
        rows.append((f"wandb offline log() calls/s ({theirs['calls']:,} calls incl. finish)",
                     f"{theirs['log_calls_per_s']:,.0f}"))
        rows.append(("wandb offline log() calls/s, loop only (no finish)", f"{theirs['loop_calls_per_s']:,.0f}"))
        ratio = ours["log_calls_per_s"] / theirs["log_calls_per_s"]
        rows.append(("ratio vs wandb", f"{ratio:.1f}x"))
        result["wandb_log_calls_per_s"] = round(theirs["log_calls_per_s"], 2)
        result["ratio_vs_wandb"] = round(ratio, 2)
    else:
        rows.append(("wandb", "skipped (--wandb-calls 0)" if not args.wandb_calls else "not installed: skipped"))
    print_measures(rows, result)


if __name__ == "__main__":
    main()
