"""Wait until the local stack answers: a real metadata request to Kafka and PING to Redis.

Used by stack.sh; exits 0 when every service asked for answers, 1 with a message when one does not
within --timeout seconds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path


def kafka_ready(bootstrap: str, brokers: int = 1) -> str | None:
    """None when the cluster's metadata lists at least *brokers* brokers, else what is missing."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        # bootstrap_timeout_ms: a node asked before it serves fails this try in 3 s, and the next try (0.5 s later)
        # finds it; with kafka-python's default (30 s) one early try held `stack.sh start-kafka-node` for 30 s
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=3000,
                                 client_id="metricfold-wait")
    except (KafkaError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        cluster = admin.describe_cluster()
        found = sum(1 for broker in cluster.get("brokers") or [] if not broker.get("is_fenced"))  # fenced: not up yet
        return None if found >= brokers else f"{found} of {brokers} broker(s) up in the metadata yet"
    except (KafkaError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        admin.close()


def redis_ready(url: str, password_file: str | None = None) -> str | None:
    """PING as the default user: with the password of *password_file* (the local stack's administrator); without
    one, a Redis that asks for a password (NOAUTH) answers too."""
    import redis

    try:
        password = Path(password_file).read_text().partition("\n")[0] if password_file else None
    except OSError as exc:
        return f"cannot read the password file {password_file}: {exc.strerror}"
    try:
        with redis.Redis.from_url(url, password=password, socket_timeout=2) as client:
            return None if client.ping() else "PING did not answer PONG"
    except redis.AuthenticationError as exc:
        return None if password is None else f"{type(exc).__name__}: {exc}"  # without one: Redis, asking for it
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kafka", required=True, help="bootstrap host:port[,host:port...]")
    parser.add_argument("--brokers", type=int, default=1, help="Kafka is ready when this many brokers are listed (default 1)")
    parser.add_argument("--redis", required=True, help="redis:// URL")
    parser.add_argument("--redis-password-file", metavar="FILE", help="the default user's password (first line)")
    parser.add_argument("--only", choices=["kafka", "redis"], help="check one service only")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait (default 90)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # kafka-python logs every refused connection otherwise
    checks = {"kafka": lambda: kafka_ready(args.kafka, args.brokers),
              "redis": lambda: redis_ready(args.redis, args.redis_password_file)}
    return wait_for(checks, args.only, args.timeout)


def wait_for(checks: dict[str, Callable[[], str | None]], only: str | None, timeout: float, note: str = "") -> int:
    """Run each check (None: ready, else what is wrong) every 0.5 s until all pass (0) or *timeout* s (1), saying
    which answered (with *note*) and why the others did not."""
    pending = [only] if only else sorted(checks, reverse=True)  # redis first: it starts faster
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    while pending:
        for name in list(pending):
            problem = checks[name]()
            if problem is None:
                print(f"[stack] {name} answers{note}", flush=True)
                pending.remove(name)
            else:
                last[name] = problem
        if pending and time.monotonic() > deadline:
            for name in pending:
                print(f"[stack] {name} did not answer in {timeout:.0f} s: {last.get(name)}", file=sys.stderr)
            return 1
        if pending:
            time.sleep(0.5)
    return 0

if __name__ == "__main__":
    sys.exit(main())
