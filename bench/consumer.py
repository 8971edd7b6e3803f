"""Consumer throughput: our batched fold vs a naive one-Redis-round-trip-per-event consumer, side by side.

    python bench/consumer.py [--events 1000000] [--runs 1000] [--producers 8]

Pre-fills a fresh topic with --events log events over --runs runs from --producers trainer processes (the
real SDK), then times, each in its own process and against the same topic: (a) `metricfold consume`'s
Consumer to caught-up, (b) a naive consumer that decodes the same records and does one Redis round trip per
event (HSET of the event's values, the "last value" summary only). Prints a table, then one JSON line with
events_per_s, naive_events_per_s, ratio, peak_rss_mb.

Needs the stack: `make up && source <(bash deploy/local/stack.sh env admin)` (or METRICFOLD_KAFKA / METRICFOLD_REDIS
and the Redis administrator's METRICFOLD_REDIS_PASSWORD[_FILE]).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

sys.path.insert(1, str(REPO / "bench"))

from prefill import prefill  # noqa: E402

from consumer.kafka_io import delete_topics, ensure_topics  # noqa: E402
from schemas.settings import Settings  # noqa: E402

FLOATS_PER_EVENT = 4


def role_ours(settings: Settings) -> dict[str, float]:
    from consumer.runner import Consumer

    consumer = Consumer(settings)
    started = time.perf_counter()
    report = consumer.run(until_caught_up=True)
    seconds = time.perf_counter() - started
    consumer.close()
    return {"events": report.events_applied, "records": report.records, "seconds": seconds}


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
                items = datum["items"] if name == "metricfold.Batch" else [(name, datum)]
                key = f"{settings.namespace}:naive:{datum['entity']}/{datum['project']}/{datum['run_id']}"
                for kind, item in items:
                    if kind == "metricfold.LogBlock":
                        position = 0
                        for count in item["counts"]:
                            fields = {
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


def run_role(role: str, settings: Settings, extra: list[str]) -> dict[str, float]:
    env = {**os.environ, "METRICFOLD_KAFKA": settings.kafka, "METRICFOLD_REDIS": settings.redis}
    out = subprocess.run(
        [sys.executable, __file__, "--role", role, "--topic", settings.topic, "--namespace", settings.namespace, *extra],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="log events to pre-fill (1,000,000)")
    parser.add_argument("--runs", type=int, default=1000, help="runs they are spread over (1000)")
    parser.add_argument("--producers", type=int, default=8, help="trainer processes (8)")
    parser.add_argument("--naive-max-events", type=int, default=0, help="stop the naive consumer after N events (0 = all)")
    parser.add_argument("--keep", action="store_true", help="keep the topic and Redis keys afterwards")
    parser.add_argument("--role", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role:
        settings = Settings.from_env(topic=args.topic, namespace=args.namespace)
        result = role_ours(settings) if args.role == "ours" else role_naive(settings, args.naive_max_events or 1 << 62)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    tag = uuid.uuid4().hex[:8]
    settings = Settings.from_env(topic=f"bench-consumer-{tag}", namespace=f"bench{tag}")
    ensure_topics(settings)
    try:
        print(f"pre-filling {settings.topic}: {args.events:,} log events x {FLOATS_PER_EVENT} floats, "
              f"{args.runs} runs, {args.producers} producers ...", file=sys.stderr, flush=True)
        fill_s = prefill(settings, args.events, args.runs, args.producers)
        print(f"  pre-filled in {fill_s:.1f} s; consuming with ours ...", file=sys.stderr, flush=True)
        ours = run_role("ours", settings, [])
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
        ("naive (1 round trip/event)", f"{naive['events']:,.0f}", f"{naive['seconds']:.1f}", f"{naive_rate:,.0f}",
         f"{naive['peak_rss_mb']:.0f}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(json.dumps({
        "events_per_s": round(ours_rate),
        "naive_events_per_s": round(naive_rate),
        "ratio": round(ours_rate / naive_rate, 1),
        "peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "events": int(ours["events"]),
        "runs": args.runs,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
