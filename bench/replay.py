"""Replay throughput: `metricfold replay` of a pre-filled topic into a fresh generation.

    python bench/replay.py [--events 2000000] [--runs 1000] [--producers 8]

Pre-fills a fresh topic with --events log events (4 floats each) over --runs runs from --producers trainer
processes (the real SDK), then replays it in a separate process and prints a table and, last, one JSON line
with events_per_s, seconds, peak_rss_mb. Needs the stack: `make up && source <(bash deploy/local/stack.sh env admin)`.
"""

from __future__ import annotations

import argparse
import io
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

from consumer.kafka_io import delete_topics, ensure_topics  # noqa: E402
from schemas.settings import Settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000, help="log events to pre-fill (2,000,000)")
    parser.add_argument("--runs", type=int, default=1000, help="runs they are spread over (1000)")
    parser.add_argument("--producers", type=int, default=8, help="trainer processes (8)")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "replay":
        from consumer.replay import replay

        settings = Settings.from_env(topic=args.topic, namespace=args.namespace)
        started = time.perf_counter()
        report = replay(settings, generation="bench", out=io.StringIO())
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"events": report.events, "records": report.records, "seconds": seconds, "peak_rss_mb": peak}))
        return 0

    from prefill import prefill

    tag = uuid.uuid4().hex[:8]
    settings = Settings.from_env(topic=f"bench-replay-{tag}", namespace=f"benchr{tag}")
    ensure_topics(settings)
    try:
        print(f"pre-filling {settings.topic}: {args.events:,} events, {args.runs} runs, {args.producers} producers ...",
              file=sys.stderr, flush=True)
        fill_s = prefill(settings, args.events, args.runs, args.producers)
        print(f"  pre-filled in {fill_s:.1f} s; replaying ...", file=sys.stderr, flush=True)
        env = {**os.environ, "METRICFOLD_KAFKA": settings.kafka, "METRICFOLD_REDIS": settings.redis}
        out = subprocess.run(
            [sys.executable, __file__, "--role", "replay", "--topic", settings.topic, "--namespace", settings.namespace],
            env=env, check=True, capture_output=True, text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        delete_topics(settings, [settings.topic, settings.dead_letter_topic])
        import redis

        with redis.Redis.from_url(settings.redis, username=settings.redis_username, password=settings.redis_password) as client:
            for key in client.scan_iter(match=f"{settings.namespace}:*", count=5000):
                client.unlink(key)
    rate = result["events"] / result["seconds"]
    print(f"{'events':>10}  {'records':>8}  {'seconds':>7}  {'events/s':>9}  {'peak RSS MB':>11}")
    print(f"{result['events']:>10,}  {result['records']:>8,}  {result['seconds']:>7.1f}  {rate:>9,.0f}  "
          f"{result['peak_rss_mb']:>11.0f}")
    print(json.dumps({"events_per_s": round(rate), "seconds": round(result["seconds"], 2),
                      "peak_rss_mb": round(result["peak_rss_mb"], 1), "events": result["events"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
