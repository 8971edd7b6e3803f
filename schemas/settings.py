"""Connection settings, read once from the environment (RULES.md §7); every CLI option overrides its variable.

    METRICFOLD_KAFKA       bootstrap servers                default localhost:9092
    METRICFOLD_REDIS       Redis URL (redis:// or rediss://) default redis://localhost:6379/0
    METRICFOLD_TOPIC       event topic                      default metricfold.events
    METRICFOLD_NAMESPACE   Redis key prefix                 default mf
    METRICFOLD_GROUP       consumer group id                default metricfold-<namespace>
    METRICFOLD_PARTITIONS  partitions of a new event topic  default 12
    METRICFOLD_REPLICATION_FACTOR  of new topics            default: follows the cluster, min(3, brokers)
    METRICFOLD_KAFKA_SECURITY_PROTOCOL  PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
    METRICFOLD_KAFKA_SASL_MECHANISM     PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (the SASL protocols need one)
    METRICFOLD_KAFKA_SASL_USERNAME, METRICFOLD_KAFKA_SASL_PASSWORD   the Kafka user (SASL)
    METRICFOLD_KAFKA_SASL_PASSWORD_FILE  a file holding the Kafka password instead (its first line; the local stack's
                                    secure mode names one)
    METRICFOLD_KAFKA_SSL_CAFILE    CA bundle that signed the brokers' certificates (SSL, SASL_SSL)
    METRICFOLD_REDIS_USERNAME, METRICFOLD_REDIS_PASSWORD          Redis ACL user (optional; or in the URL)
    METRICFOLD_REDIS_PASSWORD_FILE  a file holding the Redis password instead (its first line; the local stack's
                                    .stack/env names one)
    METRICFOLD_REDIS_CA_CERT      CA bundle that signed the Redis server's certificate (rediss:// only)
    METRICFOLD_REDIS_CLIENT_CERT, METRICFOLD_REDIS_CLIENT_KEY     client certificate and key for mutual TLS

Credentials come only from here, never from code. Errors, banners and logs show the URLs as
`Settings.redis_display` / `kafka_display` (`redact_url`: `redis://u:***@host:6379/0`), never a password.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from schemas.errors import ConfigError

__all__ = ["Settings", "redact_url"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}")
_SECRET_QUERY = re.compile(r"([?&;][^=&;#]*(?:pass|secret|token|auth|credential)[^=&;#]*=)[^&;#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """*url* (a Redis URL, or one Kafka bootstrap server) as it may be shown: the password of `user:password@`
    becomes `***` (`redis://u:***@host:6379/0`), and so does the value of a password-like query parameter.
    Works on malformed text too (it never parses the URL): whatever stands before the last `@` is user info."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    info, at, host = rest.rpartition("@")
    if at and ":" in info:
        rest = info.partition(":")[0] + ":***@" + host
    return scheme + sep + _SECRET_QUERY.sub(r"\1***", rest)


def _check_redis_url(url: str) -> None:
    """What can be checked of a Redis URL without connecting: the port (1-65535) and the database number."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", "Port could not be cast to integer value as 'abc'", bad IPv6
        hint = " (the port must be a number from 1 to 65535)" if "port" in str(exc).lower() else ""
        raise ConfigError(f"Redis URL {shown!r}: {exc}{hint}") from None
    if port == 0:
        raise ConfigError(f"Redis URL {shown!r}: the port must be a number from 1 to 65535, not 0")
    databases = parse_qs(parts.query).get("db", [])  # ?db=N; the path of a unix:// URL is the socket, not the db
    if parts.scheme != "unix" and parts.path not in ("", "/"):
        databases.append(unquote(parts.path).removeprefix("/"))
    for db in databases:
        if not (db.isascii() and db.isdigit()):
            raise ConfigError(
                f"Redis URL {shown!r}: the database {db!r} must be a number >= 0 (redis://host:port/0 for the first)"
            )


#: the Kafka security protocols and SASL mechanisms the clients are set up for (kafka_options)
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: the secrets read from a file a variable names: field -> (the variable of the secret itself, the file's variable)
_SECRET_FILES = {
    "redis_password": ("METRICFOLD_REDIS_PASSWORD", "METRICFOLD_REDIS_PASSWORD_FILE"),
    "kafka_sasl_password": ("METRICFOLD_KAFKA_SASL_PASSWORD", "METRICFOLD_KAFKA_SASL_PASSWORD_FILE"),
}


def _read_secret(path: str, variable: str) -> str:
    """The first line of the file *path* names (a password file): errors name the file, never what it holds."""
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"{variable}: cannot read the password file {path!r} ({reason})") from None
    if not secret:
        raise ConfigError(f"{variable}: the password file {path!r} is empty (its first line is the password)")
    return secret


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    kafka: str = "localhost:9092"
    redis: str = "redis://localhost:6379/0"
    topic: str = "metricfold.events"
    namespace: str = "mf"
    group: str | None = None
    partitions: int = 12
    #: of new topics; None: min(3, the brokers in the cluster) (consumer.kafka_io.replication_plan)
    replication_factor: int | None = None
    kafka_security_protocol: str | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = dataclasses.field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    redis_username: str | None = None
    redis_password: str | None = dataclasses.field(default=None, repr=False)
    redis_ca_cert: str | None = None
    redis_client_cert: str | None = None
    redis_client_key: str | None = None
    #: a batch's checkpoints advance once this many replicas of each Redis master that took its writes have them
    #: (WAIT; fewer when a master has fewer connected replicas; 0: never wait)
    redis_wait_replicas: int = 1
    redis_wait_timeout_ms: int = 1000  #: how long WAIT waits for them before the batch is retried

    def __post_init__(self) -> None:
        if not 0 <= self.redis_wait_replicas <= 100:
            raise ConfigError(f"METRICFOLD_REDIS_WAIT_REPLICAS must be 0 to 100, got {self.redis_wait_replicas}")
        if not 1 <= self.redis_wait_timeout_ms <= 600_000:
            raise ConfigError(f"METRICFOLD_REDIS_WAIT_TIMEOUT_MS must be 1 to 600000 (ms), got {self.redis_wait_timeout_ms}")
        if not self.kafka or any(not part.strip() for part in self.kafka.split(",")):
            raise ConfigError(f"Kafka bootstrap servers {self.kafka_display!r} must be host:port[,host:port...]")
        if "@" in self.kafka:  # kafka-python would log it as a host name
            raise ConfigError(f"Kafka bootstrap servers {self.kafka_display!r} must be host:port[,host:port...] without "
                              "credentials: set METRICFOLD_KAFKA_SASL_USERNAME, and the password in the file "
                              "METRICFOLD_KAFKA_SASL_PASSWORD_FILE names (or METRICFOLD_KAFKA_SASL_PASSWORD)")
        if self.kafka_security_protocol and self.kafka_security_protocol.upper() not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigError(f"METRICFOLD_KAFKA_SECURITY_PROTOCOL {self.kafka_security_protocol!r} must be one of "
                              f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}")
        if self.kafka_sasl_mechanism and self.kafka_sasl_mechanism.upper() not in KAFKA_SASL_MECHANISMS:
            raise ConfigError(f"METRICFOLD_KAFKA_SASL_MECHANISM {self.kafka_sasl_mechanism!r} must be one of "
                              f"{', '.join(KAFKA_SASL_MECHANISMS)}")
        if not self.redis.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"Redis URL {self.redis_display!r} must start with redis://, rediss:// or unix://")
        _check_redis_url(self.redis)
        tls = {"redis_ca_cert": self.redis_ca_cert, "redis_client_cert": self.redis_client_cert,
               "redis_client_key": self.redis_client_key}
        given = [name for name, value in tls.items() if value]
        if given and not self.redis.startswith("rediss://"):
            names = ", ".join("METRICFOLD_" + g.upper() for g in given)
            raise ConfigError(f"{names} need a rediss:// Redis URL, got {self.redis_display!r}")
        if bool(self.redis_client_cert) != bool(self.redis_client_key):
            raise ConfigError("METRICFOLD_REDIS_CLIENT_CERT and METRICFOLD_REDIS_CLIENT_KEY go together: set both or neither")
        for what in ("partitions", "replication_factor"):
            if what == "replication_factor" and self.replication_factor is None:
                continue
            if not isinstance(getattr(self, what), int) or getattr(self, what) < 1:
                raise ConfigError(f"{what} must be a whole number >= 1, got {getattr(self, what)!r}")
        for what in ("topic", "namespace"):
            value = getattr(self, what)
            if not _NAME.fullmatch(value) or (what == "namespace" and ":" in value):
                raise ConfigError(f"{what} {value!r} must be letters, digits, '_', '-', '.' (no ':' or spaces)")

    def __repr__(self) -> str:  # the dataclass repr would show the URLs' passwords
        shown = {"redis": self.redis_display, "kafka": self.kafka_display}
        fields = (f"{f.name}={shown.get(f.name, getattr(self, f.name))!r}" for f in dataclasses.fields(self) if f.repr)
        return f"{type(self).__name__}({', '.join(fields)})"

    @property
    def redis_display(self) -> str:
        """The Redis URL as errors, banners and logs show it: without its password."""
        return redact_url(self.redis)

    @property
    def kafka_display(self) -> str:
        """The Kafka bootstrap servers as errors, banners and logs show them: without any password."""
        return ",".join(redact_url(server) for server in self.kafka.split(","))

    @property
    def group_id(self) -> str:
        return self.group or f"metricfold-{self.namespace}"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic}.dlq"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from METRICFOLD_* variables; keyword arguments that are not None win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = f"METRICFOLD_{field.name.upper()}"
            if env.get(name):
                values[field.name] = env[name]
                if field.type in ("int", "int | None"):
                    try:
                        values[field.name] = int(env[name])
                    except ValueError:
                        raise ConfigError(f"{name} must be a whole number, got {env[name]!r}") from None
        for field_name, (variable, file_variable) in _SECRET_FILES.items():
            if env.get(file_variable):
                if field_name in values:
                    raise ConfigError(f"{variable} and {file_variable} are both set: unset one")
                values[field_name] = _read_secret(env[file_variable], file_variable)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def kafka_options(self) -> dict[str, Any]:
        """The bootstrap servers and security options for kafka-python clients (every Kafka client of metricfold is
        made with them). What a Kafka client needs is checked here, when one is made, rather than when the settings
        are read: `serve` and the other Redis-only commands run with a role's settings that have no Kafka user."""
        options: dict[str, Any] = {"bootstrap_servers": self.kafka.split(",")}
        protocol = (self.kafka_security_protocol or "PLAINTEXT").upper()
        mechanism = (self.kafka_sasl_mechanism or "").upper()
        if protocol.startswith("SASL_"):
            missing = [name for name, value in (("METRICFOLD_KAFKA_SASL_MECHANISM", mechanism),
                                                ("METRICFOLD_KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                                                ("METRICFOLD_KAFKA_SASL_PASSWORD_FILE (or _PASSWORD)",
                                                 self.kafka_sasl_password)) if not value]
            if missing:
                raise ConfigError(f"METRICFOLD_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}: "
                                  "the Kafka user this client logs in as")
        if self.kafka_ssl_cafile and not protocol.endswith("SSL"):
            raise ConfigError(f"METRICFOLD_KAFKA_SSL_CAFILE needs METRICFOLD_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, "
                              f"not {protocol}")
        if self.kafka_security_protocol:
            options["security_protocol"] = protocol
        if mechanism:
            options["sasl_mechanism"] = mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_ssl_cafile:
            options["ssl_cafile"] = self.kafka_ssl_cafile
        return options
