"""Page latency of `metricfold serve` for a project of 10,000 runs.

    python bench/serve.py [--runs 10000] [--requests 300] [--producers 4] [--keep] [--namespace NS --no-fill]

Fills a fresh topic and namespace with --runs runs (the real SDK in --producers trainer processes: each run
defines loss=min,max and acc=best, logs 3 steps of loss, acc, grad.norm, lr, then finishes), folds them with the
real consumer, starts `metricfold serve` as its own process, and times --requests sequential GETs per endpoint
from this process: the project page sorted by a summary path (a page of 50 at a random offset), the same with 5
pinned columns, unfiltered and with two numeric filters (`where=acc.best > 0.75&where=loss.max < 0.9`, about 60% of
the runs pass), the project page by last update, a random run's page, the JSON endpoints, and the filtered runs.csv
(every matching run, fewer requests). Prints a table, then one JSON line with p50_ms and p99_ms over the HTML
pages, per-endpoint figures, and "filtered_page" beside "unfiltered_page" (target: filtered p99 < 50 ms at
10,000 runs). A time is one request's round trip on this host: the server's time plus loopback.

Needs the stack: `make up && source <(bash deploy/local/stack.sh env admin)` (or METRICFOLD_KAFKA / METRICFOLD_REDIS
and the Redis administrator's METRICFOLD_REDIS_PASSWORD[_FILE]).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "bench"))

import httpx  # noqa: E402
from prefill import in_processes  # noqa: E402

from consumer.kafka_io import delete_topics, ensure_topics  # noqa: E402
from schemas.settings import Settings  # noqa: E402

PROJECT = "bench/serve"
UNFILTERED = "project page, sort=loss.min asc, 5 pinned"
FILTERED = "project page, 2 filters, sort=loss.min asc, 5 pinned"
CSV = "GET runs.csv, 2 filters, sort, 5 pinned, every match"


def _produce(settings: Settings, run_ids: list[str]) -> None:
    import producer as mf

    for run_id in run_ids:
        n = int(run_id[1:])
        run = mf.init(entity="bench", project="serve", run_id=run_id, name=f"trial-{n}", config={"lr": 1e-4 * (1 + n % 10)},
                      tags=["bench"], settings=settings)
        run.define_metric("loss", summary="min,max")
        run.define_metric("acc", summary="best", objective="maximize")
        rng = random.Random(n)
        for step in range(3):
            loss = rng.random()
            run.log({"loss": loss, "acc": 1 - loss / 2, "grad": {"norm": rng.gauss(1, 0.2)}, "lr": 1e-4}, step=step)
        run.finish()


def fill(settings: Settings, runs: int, producers: int) -> float:
    run_ids = [f"r{i:05d}" for i in range(runs)]
    started = time.perf_counter()
    in_processes(_produce, [(settings, run_ids[i::producers]) for i in range(producers)])
    from consumer.runner import Consumer

    consumer = Consumer(settings)
    try:
        consumer.run(until_caught_up=True)
    finally:
        consumer.close()
    return time.perf_counter() - started


def start_server(settings: Settings) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "METRICFOLD_REDIS": settings.redis, "METRICFOLD_NAMESPACE": settings.namespace}
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "serve", "--port", "0"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving "):
            return proc, line.split(" at ")[1].split()[0].rstrip("/")
    raise SystemExit("metricfold serve did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def browser_loads(url: str, count: int, pages: int, runs: int, rng: random.Random) -> dict[str, list[float]]:
    """Navigation Timing in headless Chromium: from navigation start to the load event (HTML, CSS, script)."""
    from playwright.sync_api import sync_playwright

    args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    out: dict[str, list[float]] = {"browser: project page load (sort=acc.best)": [], "browser: run page load": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            page = browser.new_page()
            page.goto(f"{url}/projects/{PROJECT}", wait_until="load")  # warm up: browser start, CSS and script cached
            page.goto(f"{url}/runs/{PROJECT}/r00000", wait_until="load")
            for _ in range(count):
                for name, path in (
                    ("browser: project page load (sort=acc.best)",
                     f"/projects/{PROJECT}?sort=acc.best&offset={rng.randrange(pages) * 50}"),
                    ("browser: run page load", f"/runs/{PROJECT}/r{rng.randrange(runs):05d}"),
                ):
                    page.goto(url + path, wait_until="load")
                    timing = page.evaluate("() => { const t = performance.getEntriesByType('navigation')[0];"
                                           " return t.loadEventEnd - t.startTime; }")
                    out[name].append(float(timing))
        finally:
            browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the project (10000)")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per endpoint (300)")
    parser.add_argument("--producers", type=int, default=4, help="trainer processes for the fill (4)")
    parser.add_argument("--keep", action="store_true", help="keep the topic and Redis keys afterwards")
    parser.add_argument("--namespace", help="reuse this namespace (with --no-fill: it already holds bench/serve)")
    parser.add_argument("--no-fill", action="store_true", help="do not fill: time an existing namespace")
    parser.add_argument("--browser", type=int, default=30, metavar="N",
                        help="also load each page N times in headless Chromium and report the load time (30; 0: skip)")
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:10]
    settings = Settings.from_env(topic=f"bench-serve-{tag}", namespace=args.namespace or f"bserve{tag}")
    fill_s = 0.0
    if not args.no_fill:
        ensure_topics(settings)
        print(f"filling {settings.namespace} (topic {settings.topic}) with {args.runs:,} runs (SDK + consumer) ...",
              flush=True)
        fill_s = fill(settings, args.runs, args.producers)
    proc, url = start_server(settings)
    rng = random.Random(7)
    pages = max(1, args.runs // 50)
    pinned = "&col=loss.min&col=loss.max&col=acc.best&col=grad.norm&col=lr"
    filters = "&" + urlencode([("where", "acc.best > 0.75"), ("where", "loss.max < 0.9")])
    filtered_pages = [pages]  # set from the filtered total once the server runs
    endpoints = {
        "project page, sort=acc.best, 50 runs": (
            True, lambda: f"/projects/{PROJECT}?sort=acc.best&offset={rng.randrange(pages) * 50}"),
        UNFILTERED: (
            True,
            lambda: f"/projects/{PROJECT}?sort=loss.min&order=asc&offset={rng.randrange(pages) * 50}{pinned}",
        ),
        FILTERED: (
            True,
            lambda: f"/projects/{PROJECT}?sort=loss.min&order=asc&offset={rng.randrange(filtered_pages[0]) * 50}"
            f"{pinned}{filters}",
        ),
        "project page, by last update": (True, lambda: f"/projects/{PROJECT}?offset={rng.randrange(pages) * 50}"),
        "run page": (True, lambda: f"/runs/{PROJECT}/r{rng.randrange(args.runs):05d}"),
        "GET /api/projects/../runs?sort=acc.best&limit=50": (
            False, lambda: f"/api/projects/{PROJECT}/runs?sort=acc.best&limit=50&offset={rng.randrange(pages) * 50}"),
        "GET /api/runs/../{run_id}": (False, lambda: f"/api/runs/{PROJECT}/r{rng.randrange(args.runs):05d}"),
        CSV: (False, lambda: f"/api/projects/{PROJECT}/runs.csv?sort=loss.min&order=asc{pinned}{filters}"),
    }
    results: dict[str, list[float]] = {}
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            check = client.get(f"/api/projects/{PROJECT}/runs?limit=1").json()
            if check.get("project_runs") != args.runs:
                raise SystemExit(f"expected {args.runs} runs in {PROJECT}, the server sees {check.get('project_runs')}")
            matched = client.get(f"/api/projects/{PROJECT}/runs?limit=1{filters}").json()["total"]
            filtered_pages[0] = max(1, -(-matched // 50))
            print(f"{matched:,} of {args.runs:,} runs pass the two filters", flush=True)
            for _ in range(20):  # warm up connections and scripts
                client.get(f"/projects/{PROJECT}")
                client.get(f"/projects/{PROJECT}?sort=loss.min{pinned}{filters}")
            for name, (_, make) in endpoints.items():
                times = []
                for _ in range(args.requests if name != CSV else max(1, args.requests // 10)):
                    path = make()
                    started = time.perf_counter()
                    reply = client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    if reply.status_code != 200:
                        raise SystemExit(f"{path}: HTTP {reply.status_code} {reply.text[:200]}")
                results[name] = times
        if args.browser:
            results.update(browser_loads(url, args.browser, pages, args.runs, rng))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if not args.keep and not args.no_fill:
            delete_topics(settings, [settings.topic, settings.dead_letter_topic])
            from consumer.store import redis_client

            client_r = redis_client(settings)
            keys = list(client_r.scan_iter(match=f"{settings.namespace}:*", count=2000))
            for i in range(0, len(keys), 1000):
                client_r.delete(*keys[i : i + 1000])
            client_r.close()

    html_times = [t for name, ts in results.items() if name in endpoints and endpoints[name][0] for t in ts]
    print(f"\n{args.runs:,} runs in {PROJECT} (fill through the SDK + consumer: {fill_s:.1f} s); {args.requests} requests each\n")
    print(f"{'endpoint':<52} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, ts in results.items():
        print(f"{name:<52} {statistics.median(ts):>8.2f} {percentile(ts, 99):>8.2f} {max(ts):>8.2f}")
    p50, p99 = statistics.median(html_times), percentile(html_times, 99)
    print(f"{'all HTML pages':<52} {p50:>8.2f} {p99:>8.2f} {max(html_times):>8.2f}")
    figures = {n: {"p50_ms": round(statistics.median(t), 2), "p99_ms": round(percentile(t, 99), 2)} for n, t in results.items()}
    print(json.dumps({
        "runs": args.runs,
        "requests": len(html_times),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "filtered_page": {**figures[FILTERED], "filters": 2, "pinned": 5, "sort": "loss.min", "target_p99_ms": 50},
        "unfiltered_page": figures[UNFILTERED],
        "endpoints": figures,
    }))


if __name__ == "__main__":
    main()
