"""The Python half of the local stack's secure mode (`METRICFOLD_SECURE=1 make up`; deploy/local/secure.sh is the rest).

    python deploy/local/secure.py passwords --secrets DIR
        make the Kafka users' passwords when missing: DIR/kafka-<user>.password (mode 0600) for the brokers' own user
        `broker` and the roles trainer, consumer, replay, admin (consumer/acl.py)
    python deploy/local/secure.py ready --kafka HOST:PORT --redis rediss://... --tls DIR --secrets DIR [--only kafka|redis]
        wait until Kafka answers a metadata request over SASL_SSL (as `broker`) and Redis a PING over TLS (as its
        administrator, with the administrator's client certificate)
    python deploy/local/secure.py acls --kafka HOST:PORT --tls DIR --secrets DIR --topic T --group G
        give each Kafka role exactly its ACLs for topic T (and T.dlq) and group G (consumer/acl.py kafka_grants), as
        the super user `broker`, and take away any other ACL of those users (a topic or group of an earlier start)

No password is ever an argument: each is read from its file. Exit 0 when done, 1 with a message otherwise.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from wait_ready import wait_for  # noqa: E402  (deploy/local, this script's directory, is on sys.path)

from consumer.acl import (  # noqa: E402
    ADMIN,
    KAFKA_BROKER,
    KAFKA_ROLES,
    ensure_password,
    kafka_grants,
    kafka_password_file,
    password_file,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}")


def _secret(path: Path) -> str:
    return path.read_text(encoding="utf-8").partition("\n")[0].rstrip("\r")


def broker_options(kafka: str, tls: Path, secrets: Path) -> dict[str, Any]:
    """kafka-python options that log in as the brokers' own user (the super user) over SASL_SSL."""
    return {
        "bootstrap_servers": kafka.split(","),
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": KAFKA_BROKER,
        "sasl_plain_password": _secret(kafka_password_file(secrets, KAFKA_BROKER)),
        "ssl_cafile": str(tls / "ca.crt"),
    }


def kafka_ready(kafka: str, tls: Path, secrets: Path) -> str | None:
    """None when the broker lists itself in the metadata (asked as `broker`), else what is wrong."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(**broker_options(kafka, tls, secrets), request_timeout_ms=5000,
                                 client_id="metricfold-wait")
    except (KafkaError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        brokers = admin.describe_cluster().get("brokers") or []
        return None if any(not b.get("is_fenced") for b in brokers) else "no broker up in the metadata yet"
    except (KafkaError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        admin.close()


def redis_ready(url: str, tls: Path, secrets: Path) -> str | None:
    """None when Redis answers PING over TLS as its administrator (`default`), else what is wrong."""
    import redis

    try:
        with redis.Redis.from_url(url, password=_secret(password_file(secrets, ADMIN)), socket_timeout=2,
                                  ssl_ca_certs=str(tls / "ca.crt"), ssl_certfile=str(tls / f"redis-client-{ADMIN}.crt"),
                                  ssl_keyfile=str(tls / f"redis-client-{ADMIN}.key")) as client:
            return None if client.ping() else "PING did not answer PONG"
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


def apply_acls(kafka: str, tls: Path, secrets: Path, topic: str, group: str) -> list[str]:
    """Make the roles' ACLs exactly kafka_grants(role, topic, group); returns one line per role saying what it may do."""
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
    )

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
    wanted: list[ACL] = []
    summary = []
    for role in KAFKA_ROLES:
        grants = kafka_grants(role, topic, group)
        summary.append(f"{role}: " + ", ".join(f"{g.operation} {g.resource} {g.name}" for g in grants))
        wanted += [ACL(f"User:{role}", "*", ACLOperation[g.operation], ACLPermissionType.ALLOW,
                       ResourcePattern(kinds[g.resource], g.name, ACLResourcePatternType.LITERAL)) for g in grants]

    def key(acl: Any) -> tuple[Any, ...]:
        pattern = acl.resource_pattern
        return (acl.principal, acl.host, int(acl.operation), int(acl.permission_type), int(pattern.resource_type),
                pattern.resource_name, int(pattern.pattern_type))

    admin = KafkaAdminClient(**broker_options(kafka, tls, secrets), request_timeout_ms=15000, client_id="metricfold-acls")
    try:
        everything = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                               permission_type=ACLPermissionType.ANY,
                               resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
        existing, error = admin.describe_acls(everything)
        if error is not None and getattr(error, "errno", 0):
            raise RuntimeError(f"describing the ACLs failed: {error}")
        keep = {key(acl) for acl in wanted}
        ours = {f"User:{role}" for role in KAFKA_ROLES}
        stale = [acl for acl in existing if acl.principal in ours and key(acl) not in keep]
        if stale:
            filters = [ACLFilter(principal=acl.principal, host=acl.host, operation=acl.operation,
                                 permission_type=acl.permission_type,
                                 resource_pattern=ResourcePatternFilter(acl.resource_pattern.resource_type,
                                                                        acl.resource_pattern.resource_name,
                                                                        acl.resource_pattern.pattern_type))
                       for acl in stale]
            for _, _, failure in admin.delete_acls(filters):
                if failure is not None and getattr(failure, "errno", 0):
                    raise RuntimeError(f"deleting a stale ACL failed: {failure}")
        have = {key(acl) for acl in existing}
        missing = [acl for acl in wanted if key(acl) not in have]
        if missing:
            result = admin.create_acls(missing)
            if result["failed"]:
                raise RuntimeError(f"creating the ACLs failed: {result['failed']}")
    finally:
        admin.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/local/secure.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    passwords = commands.add_parser("passwords")
    passwords.add_argument("--secrets", type=Path, required=True)
    ready = commands.add_parser("ready")
    acls = commands.add_parser("acls")
    for sub in (ready, acls):
        sub.add_argument("--kafka", required=True)
        sub.add_argument("--tls", type=Path, required=True)
        sub.add_argument("--secrets", type=Path, required=True)
    ready.add_argument("--redis", required=True)
    ready.add_argument("--only", choices=["kafka", "redis"])
    ready.add_argument("--timeout", type=float, default=90.0)
    acls.add_argument("--topic", required=True)
    acls.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # kafka-python logs every refused connection otherwise

    if args.command == "passwords":
        for user in (KAFKA_BROKER, *KAFKA_ROLES):
            ensure_password(kafka_password_file(args.secrets, user))
        return 0

    if args.command == "acls":
        for what, name in (("topic", args.topic), ("group", args.group)):
            if not _NAME.fullmatch(name):
                print(f"[stack] error: the {what} {name!r} must be letters, digits, '_', '-', '.'", file=sys.stderr)
                return 1
        try:
            lines = apply_acls(args.kafka, args.tls, args.secrets, args.topic, args.group)
        except Exception as exc:  # any failure: say it, exit 1
            print(f"[stack] error: could not set the Kafka ACLs: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        for line in lines:
            print(f"[stack] Kafka ACLs of {line}", flush=True)
        return 0

    checks = {"kafka": lambda: kafka_ready(args.kafka, args.tls, args.secrets),
              "redis": lambda: redis_ready(args.redis, args.tls, args.secrets)}
    return wait_for(checks, args.only, args.timeout, " (locked down)")

if __name__ == "__main__":
    sys.exit(main())
