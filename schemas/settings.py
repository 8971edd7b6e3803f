"""Connection settings, read once from the environment (SPEC §7); every CLI option overrides its variable.

    METRICFOLD_KAFKA       bootstrap servers                default localhost:9092
    METRICFOLD_REDIS       Redis URL (redis:// or rediss://) default redis://localhost:6379/0
    METRICFOLD_TOPIC       event topic                      default metricfold.events
    METRICFOLD_NAMESPACE   Redis key prefix                 default mf
    METRICFOLD_GROUP       consumer group id                default metricfold-<namespace>
    METRICFOLD_PARTITIONS  partitions of a new event topic  default 12
    METRICFOLD_REPLICATION_FACTOR  of new topics            default 1 (use 3 on a real cluster)
    METRICFOLD_KAFKA_SECURITY_PROTOCOL, METRICFOLD_KAFKA_SASL_MECHANISM, METRICFOLD_KAFKA_SASL_USERNAME,
    METRICFOLD_KAFKA_SASL_PASSWORD, METRICFOLD_KAFKA_SSL_CAFILE   Kafka security (optional)
    METRICFOLD_REDIS_USERNAME, METRICFOLD_REDIS_PASSWORD          Redis ACL user (optional; or in the URL)
    METRICFOLD_REDIS_CA_CERT      CA bundle that signed the Redis server's certificate (rediss:// only)
    METRICFOLD_REDIS_CLIENT_CERT, METRICFOLD_REDIS_CLIENT_KEY     client certificate and key for mutual TLS

Credentials come only from here, never from code.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from schemas.errors import ConfigError

__all__ = ["Settings"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    kafka: str = "localhost:9092"
    redis: str = "redis://localhost:6379/0"
    topic: str = "metricfold.events"
    namespace: str = "mf"
    group: str | None = None
    partitions: int = 12
    replication_factor: int = 1
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

    def __post_init__(self) -> None:
        if not self.kafka or any(not part.strip() for part in self.kafka.split(",")):
            raise ConfigError(f"Kafka bootstrap servers {self.kafka!r} must be host:port[,host:port...]")
        if not self.redis.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"Redis URL {self.redis!r} must start with redis://, rediss:// or unix://")
        tls = {"redis_ca_cert": self.redis_ca_cert, "redis_client_cert": self.redis_client_cert,
               "redis_client_key": self.redis_client_key}
        given = [name for name, value in tls.items() if value]
        if given and not self.redis.startswith("rediss://"):
            names = ", ".join("METRICFOLD_" + g.upper() for g in given)
            raise ConfigError(f"{names} need a rediss:// Redis URL, got {self.redis!r}")
        if bool(self.redis_client_cert) != bool(self.redis_client_key):
            raise ConfigError("METRICFOLD_REDIS_CLIENT_CERT and METRICFOLD_REDIS_CLIENT_KEY go together: set both or neither")
        for what in ("partitions", "replication_factor"):
            if not isinstance(getattr(self, what), int) or getattr(self, what) < 1:
                raise ConfigError(f"{what} must be a whole number >= 1, got {getattr(self, what)!r}")
        for what in ("topic", "namespace"):
            value = getattr(self, what)
            if not _NAME.fullmatch(value) or (what == "namespace" and ":" in value):
                raise ConfigError(f"{what} {value!r} must be letters, digits, '_', '-', '.' (no ':' or spaces)")

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
                if field.type == "int":
                    try:
                        values[field.name] = int(env[name])
                    except ValueError:
                        raise ConfigError(f"{name} must be a whole number, got {env[name]!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def kafka_options(self) -> dict[str, Any]:
        """Security options for kafka-python clients (empty for plaintext)."""
        options: dict[str, Any] = {"bootstrap_servers": self.kafka.split(",")}
        if self.kafka_security_protocol:
            options["security_protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_ssl_cafile:
            options["ssl_cafile"] = self.kafka_ssl_cafile
        return options
