"""The Redis ACL users of metricfold, generated for one namespace (deploy/redis/README.md explains each rule), and the
Kafka roles and what each may do (KAFKA_ROLES, kafka_grants: the local stack's secure mode grants them).

    python -m consumer.acl --namespace mf --secrets DIR --output FILE

writes FILE, a Redis `aclfile` (mode 0600), with three users:

    default              the administrator: every command and key, with a password (never open without one)
    metricfold-consumer  `consume`, `replay`, `digest` (and what the reader may): exactly the commands they send
    metricfold-reader    `serve`, `summary`, `runs`, `Api()` reads, Grafana: reads, the read functions (FCALL_RO),
                         SUBSCRIBE; no write, no Lua of its own

both metricfold users on keys and channels `<namespace>:*` only. Each password is the first line of
DIR/redis-<user>.password, created (random, mode 0600) when missing, so that regenerating keeps them; FILE holds only
their SHA-256. The local stack (deploy/local/stack.sh) and docker-compose run this when Redis starts.

The Kafka roles, each a SCRAM user of its own (`METRICFOLD_SECURE=1 make up`; deploy/local/secure.py grants them):

    trainer   the SDK and `metricfold sync`: WRITE the event topic (an idempotent producer needs no more since
              Kafka 3.0, KIP-679: WRITE on a topic allows InitProducerId)
    consumer  `metricfold consume`: READ the event topic and its consumer group, WRITE the dead-letter topic
    replay    `metricfold replay`: READ the event topic (no group: a replay assigns every partition itself)
    admin     `metricfold topics`: CREATE (and DESCRIBE) the event and dead-letter topics

Nothing else: no role may alter or delete a topic, read the dead letters, touch another topic or group, or change ACLs
and users (the brokers' own user, `broker`, is the only super user).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from schemas.errors import ConfigError
from schemas.settings import Settings

__all__ = ["ADMIN", "CONSUMER", "KAFKA_BROKER", "KAFKA_ROLES", "READER", "USERS", "KafkaGrant", "acl_lines",
           "ensure_password", "kafka_grants", "kafka_password_file", "main", "password_file", "user_rules", "write_acl"]

ADMIN, CONSUMER, READER = "default", "metricfold-consumer", "metricfold-reader"
USERS = (ADMIN, CONSUMER, READER)

#: what a connection needs besides AUTH and HELLO (which need no permission): PING, redis-py's health check; on Redis
#: Cluster, the slot map and the command table redis-py's RedisCluster reads when it starts and after a failover
_CONNECTION = ("ping", "cluster|slots", "cluster|shards", "command")
#: the read side: the keys Store and Grafana read directly, FCALL_RO of the read functions (consumer/store/lua/; they
#: run HGETALL, HMGET, SISMEMBER, ZRANGE, ZREVRANGE, ZCARD, SMEMBERS, GET with the caller's rights), and the live
#: pages' subscriptions (ChangeFeed)
_READ = ("get", "hgetall", "hmget", "sismember", "smembers", "zrange", "zrevrange", "zcard", "fcall_ro",
         "subscribe", "unsubscribe")
#: the consumer's own: the write scripts (EVALSHA, SCRIPT LOAD after NOSCRIPT) and what they run, FUNCTION LOAD of
#: the read library, SCAN + UNLINK of a replay's old generation, TYPE and LRANGE of `digest`, ROLE (how many replicas
#: a master has; on a cluster CLUSTER NODES) and WAIT for them before the checkpoints advance
_WRITE = ("evalsha", "script|load", "function|load", "set", "hget", "hset", "hdel", "hincrby", "sadd", "zadd",
          "zrem", "publish", "scan", "unlink", "type", "lrange", "role", "wait", "cluster|nodes")
_COMMANDS = {CONSUMER: _CONNECTION + _READ + _WRITE, READER: _CONNECTION + _READ}


#: the Kafka roles (SCRAM users) and the brokers' own user, the only super user
KAFKA_ROLES = ("trainer", "consumer", "replay", "admin")
KAFKA_BROKER = "broker"


@dataclasses.dataclass(frozen=True)
class KafkaGrant:
    """One Kafka ACL: ALLOW *operation* on the *resource* ("topic", "group") named *name* exactly (a literal pattern),
    from any host."""

    resource: str
    name: str
    operation: str


def kafka_grants(role: str, topic: str, group: str) -> list[KafkaGrant]:
    """What the Kafka *role* (one of KAFKA_ROLES) may do with the event *topic* (its dead-letter topic is `<topic>.dlq`)
    and the consumer *group*: the ACLs of its user, nothing more."""
    Settings(topic=topic)  # the topic's own rules: no pattern characters
    dead_letters = f"{topic}.dlq"
    grants = {
        "trainer": [KafkaGrant("topic", topic, "WRITE")],
        "consumer": [KafkaGrant("topic", topic, "READ"), KafkaGrant("group", group, "READ"),
                     KafkaGrant("topic", dead_letters, "WRITE")],
        "replay": [KafkaGrant("topic", topic, "READ")],
        "admin": [KafkaGrant("topic", name, operation) for name in (topic, dead_letters)
                  for operation in ("CREATE", "DESCRIBE")],
    }
    if role not in grants:
        raise ConfigError(f"no Kafka ACLs for role {role!r}: the roles are {', '.join(KAFKA_ROLES)}")
    return grants[role]


def kafka_password_file(secrets_dir: Path, user: str) -> Path:
    """The password file of a Kafka user (a role of KAFKA_ROLES, or KAFKA_BROKER)."""
    return secrets_dir / f"kafka-{user}.password"


def _check_namespace(namespace: str) -> None:
    Settings(namespace=namespace)  # the namespace's own rules: letters, digits, '_', '-', '.' (nothing glob-like)


def user_rules(user: str, namespace: str) -> list[str]:
    """The ACL rules of *user* (one of USERS) for *namespace*, without `on` and the password: `ACL SETUSER name reset
    on >password *rules` makes the user, as the generated file does."""
    _check_namespace(namespace)
    if user == ADMIN:
        return ["~*", "&*", "+@all"]
    if user not in _COMMANDS:
        raise ConfigError(f"no ACL rules for Redis user {user!r}: the users are {', '.join(USERS)}")
    return ["resetkeys", "resetchannels", "-@all", f"~{namespace}:*", f"&{namespace}:*", *(f"+{c}" for c in _COMMANDS[user])]


def acl_lines(namespace: str, passwords: Mapping[str, str]) -> list[str]:
    """The lines of the ACL file: every user of USERS with its password (given in clear, written as SHA-256)."""
    lines = []
    for user in USERS:
        digest = hashlib.sha256(passwords[user].encode()).hexdigest()
        lines.append(" ".join(["user", user, "on", f"#{digest}", *user_rules(user, namespace)]))
    return lines


def password_file(secrets_dir: Path, user: str) -> Path:
    return secrets_dir / f"redis-{user}.password"


def ensure_password(path: Path) -> str:
    """The password in *path* (its first line), or a new random one written there with mode 0600 (its directory made
    with mode 0700 when missing)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _password(path)


def _password(path: Path) -> str:
    """The password in *path* (its first line), or a new random one written there with mode 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fd = -1
    if fd >= 0:
        password = secrets.token_hex(24)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(password + "\n")
        return password
    try:
        password = path.read_text(encoding="utf-8").partition("\n")[0].rstrip("\r")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the password file {path} ({exc.__class__.__name__})") from None
    if not password:
        raise ConfigError(f"the password file {path} is empty: delete it to get a new random password")
    return password


def write_acl(namespace: str, secrets_dir: Path, output: Path) -> None:
    """Write the ACL file *output* (mode 0600, replaced in one step) for *namespace*, with the passwords of
    *secrets_dir* (created when missing: the directory 0700, each file 0600)."""
    _check_namespace(namespace)
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    passwords = {user: _password(password_file(secrets_dir, user)) for user in USERS}
    text = "".join(line + "\n" for line in acl_lines(namespace, passwords))
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.acl",
        description="Write the Redis ACL file of metricfold's users for a namespace: default (the administrator), "
        "metricfold-consumer and metricfold-reader (see deploy/redis/README.md). Passwords are read from "
        "SECRETS/redis-<user>.password, and created there (random, mode 0600) when missing; the file holds only "
        "their SHA-256.",
    )
    parser.add_argument("--namespace", default=os.environ.get("METRICFOLD_NAMESPACE") or "mf",
                        help="the Redis key prefix the users may use (default: $METRICFOLD_NAMESPACE, else mf)")
    parser.add_argument("--secrets", required=True, type=Path, metavar="DIR", help="directory of the password files")
    parser.add_argument("--output", required=True, type=Path, metavar="FILE", help="the ACL file to write (mode 0600)")
    args = parser.parse_args(argv)
    try:
        write_acl(args.namespace, args.secrets, args.output)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: users {', '.join(USERS)}; metricfold's on keys and channels {args.namespace}:*",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
