"""Side by side: the producer, consumer and replay benchmarks of this work tree and of an earlier commit, in one run.

    python bench/compare.py [--base REV] [--rounds 2] [--only producer,consumer,replay] [--scale 1.0]

For a change that must not cost speed (a refactor): checks REV out in a temporary git worktree, then runs each
benchmark alternately from the base tree and from this one (base, this, base, this, ... --rounds times each),
each from its own tree's bench/ script so that it runs that tree's code, and prints one table: per figure the
median of the base runs, of this tree's runs, the change (for a time, lower is better; for a rate, higher), and
each round's pair, so that noise shows.
Alternating in one run is the point: absolute figures drift on a shared machine, a side-by-side pair does not.
The last line is one JSON object with every figure, for a note or a report.

Sizes (--scale multiplies them): producer 200,000 log() calls (no wandb); consumer 400,000 events (the naive
consumer stopped after 20,000); replay 500,000 events. Needs the stack: `make up && source <(bash
deploy/local/stack.sh env admin)`, as each benchmark does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: benchmark -> (arguments at scale 1, the figures compared: JSON field -> True when higher is better)
BENCHES: dict[str, tuple[list[str], dict[str, bool]]] = {
    "producer": (
        ["--calls", "200000", "--wandb-calls", "0"],
        {"log_calls_per_s": True, "enqueue_us_p50": False, "enqueue_us_p99": False},
    ),
    "consumer": (
        ["--events", "400000", "--naive-max-events", "20000"],
        {"events_per_s": True, "peak_rss_mb": False},
    ),
    "replay": (["--events", "500000"], {"events_per_s": True, "peak_rss_mb": False}),
}
SIZED = {"--calls", "--events", "--naive-max-events"}


def scaled(args: list[str], scale: float) -> list[str]:
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg in SIZED:
            out[i + 1] = str(max(1, round(int(out[i + 1]) * scale)))
    return out


def run_bench(tree: Path, name: str, args: list[str]) -> dict[str, Any]:
    """Run *tree*'s bench/<name>.py; its last stdout line is its JSON result."""
    done = subprocess.run(
        [sys.executable, str(tree / "bench" / f"{name}.py"), *args], cwd=tree, capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench/{name}.py in {tree} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def change(base: float, this: float, higher_is_better: bool) -> str:
    if not base:
        return "-"
    percent = (this - base) / base * 100
    better = percent >= 0 if higher_is_better else percent <= 0
    return f"{percent:+.1f}% ({'better' if better or abs(percent) < 0.05 else 'worse'})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD", help="the commit to compare with (HEAD: the last commit)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each benchmark on each side (2)")
    parser.add_argument("--only", default=",".join(BENCHES), help="benchmarks to run, comma-separated (all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the sizes by this (1.0)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown or args.rounds < 1 or args.scale <= 0:
        parser.error(f"--only takes {', '.join(BENCHES)}; --rounds and --scale must be positive")
    with tempfile.TemporaryDirectory(prefix="metricfold-compare-") as scratch:
        base_tree = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=REPO, check=True,
                       capture_output=True)
        try:
            results = compare(base_tree, chosen, args.rounds, args.scale)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO, capture_output=True)
    rows = []
    summary: dict[str, Any] = {"base": args.base, "rounds": args.rounds}
    for name in chosen:
        for figure, higher in BENCHES[name][1].items():
            base_runs = [r[figure] for r in results[name]["base"]]
            this_runs = [r[figure] for r in results[name]["this"]]
            base, this = statistics.median(base_runs), statistics.median(this_runs)
            rows.append((f"{name} {figure}", f"{base:,.1f}", f"{this:,.1f}", change(base, this, higher),
                         " / ".join(f"{b:,.1f} : {t:,.1f}" for b, t in zip(base_runs, this_runs, strict=True))))
            summary[f"{name}.{figure}"] = {"base": base, "this": this, "runs": [base_runs, this_runs]}
    header = ("figure", "base", "this tree", "change", "each round (base : this)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(json.dumps(summary))
    return 0


def compare(base_tree: Path, chosen: list[str], rounds: int, scale: float) -> dict[str, dict[str, list[dict[str, Any]]]]:
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name in chosen:
        bench_args = scaled(BENCHES[name][0], scale)
        results[name] = {"base": [], "this": []}
        for round_ in range(rounds):
            for side, tree in (("base", base_tree), ("this", REPO)):
                print(f"[compare] {name} round {round_ + 1}/{rounds}: {side}", file=sys.stderr, flush=True)
                results[name][side].append(run_bench(tree, name, bench_args))
    return results


if __name__ == "__main__":
    raise SystemExit(main())
