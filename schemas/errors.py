"""The product's exceptions: one base class, a small tree under it.

    MetricfoldError                 base of everything metricfold raises on purpose
    ├── ConfigError                 a setting, environment variable or CLI argument is wrong
    ├── ValidationError             a key, value, run path or option breaks a rule (ValueError too)
    │   └── LimitExceeded           a documented size limit was passed (names the limit)
    ├── CodecError                  bytes are not a metricfold event (ValueError too)
    │   ├── UnknownSchemaError      the writer-schema fingerprint is not in schemas/
    │   └── TruncatedError          the bytes end before the event does
    ├── BrokerUnavailable           Kafka cannot be reached (after retries)
    ├── StoreUnavailable            Redis cannot be reached (after retries)
    ├── WriteRefused                Redis (or encoding for it) refused some runs' writes for their content
    └── RunNotFound                 the read API was asked for a run Redis does not have (KeyError too)
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "CodecError",
    "ConfigError",
    "LimitExceeded",
    "MetricfoldError",
    "RunNotFound",
    "StoreUnavailable",
    "TruncatedError",
    "UnknownSchemaError",
    "ValidationError",
    "WriteRefused",
]


class MetricfoldError(Exception):
    """Raised for every error metricfold reports on purpose; catch this to catch them all."""


class ConfigError(MetricfoldError):
    """Raised when a setting, environment variable or command-line argument is invalid."""


class ValidationError(MetricfoldError, ValueError):
    """Raised when a key, value, run path or option breaks a rule; nothing was sent."""

    def __init__(self, message: str, *, key: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class LimitExceeded(ValidationError):
    """Raised when a value passes a documented limit (see schemas.limits.Limits)."""

    def __init__(self, message: str, *, key: str | None = None, limit: str, maximum: int) -> None:
        super().__init__(message, key=key)
        self.limit = limit
        self.maximum = maximum


class CodecError(MetricfoldError, ValueError):
    """Raised when bytes cannot be decoded as a metricfold event."""


class UnknownSchemaError(CodecError):
    """Raised when the bytes name a writer-schema fingerprint that no file in schemas/ has."""


class TruncatedError(CodecError):
    """Raised when the bytes end before the header or the event body does."""


class BrokerUnavailable(MetricfoldError):
    """Raised when Kafka cannot be reached after the configured retries."""


class StoreUnavailable(MetricfoldError):
    """Raised when Redis cannot be reached after the configured retries."""


class WriteRefused(MetricfoldError):
    """Raised when some runs' writes cannot be encoded for Redis or a write script fails on them: a fault of
    those runs' data (the consumer dead-letters the records behind it), not of Redis being away."""

    def __init__(self, message: str, run_paths: list[str]) -> None:
        super().__init__(message)
        self.run_paths = run_paths


class RunNotFound(MetricfoldError, KeyError):
    """Raised when the read API is asked for a run that the active generation does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
