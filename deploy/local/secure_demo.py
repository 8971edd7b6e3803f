"""`make demo` on the locked-down stack (METRICFOLD_SECURE=1): `metricfold demo`'s steps, each as the role that may do
it, so the demo shows the roles at work. One identity cannot run `metricfold demo` there (it creates topics, sends,
folds and serves, and no role may do all of that):

    1. admin      creates the topics                                   (`metricfold topics`)
    2. trainer    six trainer processes log through the SDK            (consumer.demo.simulate_trainer)
    3. consumer   folds the topic into Redis until caught up           (the Consumer of `metricfold consume`)
    4. reader     prints the runs table and one run                    (`metricfold runs`, `metricfold summary`)
    5. reader     serves the page over HTTPS with the bearer token     (`metricfold serve`), until Ctrl-C

Each role's settings come from `deploy/local/stack.sh env ROLE` (the same lines `source` would run): secrets stay in
their files. Run it with `METRICFOLD_SECURE=1 make demo`; `--no-serve` stops after step 4.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from consumer.demo import RANKS, RUNS, STEPS, run_trainers  # noqa: E402
from schemas.errors import MetricfoldError  # noqa: E402
from schemas.settings import Settings  # noqa: E402

STACK = REPO / "deploy" / "local" / "stack.sh"


def role_environment(role: str) -> dict[str, str]:
    """The METRICFOLD_* variables `stack.sh env ROLE` exports (its `unset` lines leave a variable out)."""
    printed = subprocess.run(["bash", str(STACK), "env", role], check=True, capture_output=True, text=True).stdout
    env: dict[str, str] = {}
    for line in printed.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


def role_settings(role: str) -> Settings:
    return Settings.from_env(role_environment(role))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-serve", action="store_true", help="stop after the tables")
    parser.add_argument("--port", type=int, default=8765, help="port of the runs page (8765; a free one if taken)")
    args = parser.parse_args()
    try:
        return demo(serve=not args.no_serve, port=args.port)
    except MetricfoldError as exc:
        print(f"metricfold: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def demo(*, serve: bool, port: int) -> int:
    from consumer.kafka_io import ensure_topics
    from consumer.runner import Consumer
    from consumer.store import Store
    from consumer.tables import print_run, print_runs

    admin, trainer, consumer, reader = (role_settings(r) for r in ("admin", "trainer", "consumer", "reader"))
    print(f"the locked-down stack: Kafka {trainer.kafka_display} (SASL_SSL), topic {trainer.topic}; "
          f"Redis {reader.redis_display} (TLS), namespace {reader.namespace}")
    print(f"1. as Kafka user {admin.kafka_sasl_username}: the topics")
    ensure_topics(admin)

    project = time.strftime("vision-%Y%m%d-%H%M%S")
    print(f"2. as Kafka user {trainer.kafka_sasl_username}: {len(RUNS) * RANKS} trainer processes log {STEPS} steps "
          f"each to demo/{project}")
    started = time.monotonic()
    failed = run_trainers(trainer, project, STEPS)
    if failed:
        print(f"   {len(failed)} trainer processes failed (exit codes {failed})")
        return 1
    print(f"   done in {time.monotonic() - started:.1f} s")

    print(f"3. as Kafka user {consumer.kafka_sasl_username} and Redis user {consumer.redis_username}: the fold")
    folding = Consumer(consumer)
    try:
        report = folding.run(until_caught_up=True)
    finally:
        folding.close()
    print(f"   {report.records} records, {report.events_applied} events applied in {report.seconds:.1f} s, "
          f"{report.dead_letters + report.undecodable} dead letters")

    print(f"4. as Redis user {reader.redis_username} (read-only): the runs table and one run\n")
    with Store(reader) as store:
        print_runs(store, f"demo/{project}", sort="acc.best", ascending=False, limit=20,
                   columns=["loss.min", "acc.best", "acc.best_step", "best_accuracy", "val/loss.mean", "weights.mean"])
        print()
        print_run(f"demo/{project}/{RUNS[0]}", store.read_run(f"demo/{project}/{RUNS[0]}"))
    if not serve:
        return 0
    return _serve(reader, f"demo/{project}", port)


def _serve(reader: Settings, project: str, port: int) -> int:
    from consumer.web.server import load_token
    from consumer.web.server import serve as run_server
    from schemas.errors import ConfigError

    env = role_environment("reader")
    token = load_token(env["METRICFOLD_SERVE_TOKEN_FILE"])
    tls = {"tls_cert": env["METRICFOLD_SERVE_TLS_CERT"], "tls_key": env["METRICFOLD_SERVE_TLS_KEY"]}
    query = "?sort=acc.best&col=acc.best&col=loss.min&col=best_accuracy&col=val%2Floss.mean&col=weights.mean"
    print(f"\n5. as Redis user {reader.redis_username}: the runs page over HTTPS with the bearer token. The certificate is "
          f"signed by the stack's own CA ({env['METRICFOLD_REDIS_CA_CERT']}): a browser warns about it unless you "
          f"import that CA. Open the printed URL once with &token=$(cat {env['METRICFOLD_SERVE_TOKEN_FILE']}) "
          "appended (the page then keeps it in a cookie; the token is not printed here).\n")
    try:
        return run_server(reader, port=port, token=token, open_path=f"/projects/{project}{query}", **tls)
    except ConfigError as exc:  # the port is taken: any free one
        print(f"   ({exc}; using a free port)")
        return run_server(reader, port=0, token=token, open_path=f"/projects/{project}{query}", **tls)


if __name__ == "__main__":
    sys.exit(main())
