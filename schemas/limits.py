"""Documented input limits, shared by the client (checked before sending) and the consumer (checked again).

Every limit can be changed with an environment variable of the same name in upper case, prefixed with
``METRICFOLD_`` (for example ``METRICFOLD_MAX_TENSOR_BYTES``). Kafka's record limit is derived from the
tensor limit (see ``kafka_max_record_bytes``), so a tensor under the limit always fits in one record.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from schemas.errors import ConfigError, ValidationError

__all__ = ["RUN_PART_PATTERN", "Limits", "check_run_part", "parse_run_path"]

#: entity, project and run id: letters, digits, '_', '-', '.'; 1-128 characters; no '/', ':', '{', '}' or
#: spaces, which would break run paths, Redis key hash tags or topic keys.
RUN_PART_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    """Size limits for one event. Defaults are the documented numbers."""

    max_key_length: int = 256  #: characters in one key (one level of a nested dict)
    max_key_depth: int = 16  #: levels of nesting in a logged dict
    max_values_per_event: int = 10_000  #: leaf values in one log / summary update
    max_string_length: int = 65_536  #: characters in one string value
    max_tensor_bytes: int = 16 * 1024 * 1024  #: .npy bytes of one tensor

    @property
    def kafka_max_record_bytes(self) -> int:
        """The Kafka record limit that fits one tensor at the limit plus its event's overhead."""
        return self.max_tensor_bytes + 8 * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for field in dataclasses.fields(cls):
            name = f"METRICFOLD_{field.name.upper()}"
            if name in env:
                try:
                    values[field.name] = int(env[name])
                except ValueError:
                    raise ConfigError(f"{name} must be a whole number, got {env[name]!r}") from None
                if values[field.name] <= 0:
                    raise ConfigError(f"{name} must be positive, got {env[name]!r}")
        return cls(**values)


def check_run_part(what: str, value: object) -> str:
    """Return *value* if it is a valid entity / project / run id, else raise ValidationError naming it."""
    if not isinstance(value, str) or not RUN_PART_PATTERN.fullmatch(value):
        raise ValidationError(
            f"{what} {value!r} is not valid: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter, digit or '_'",
            key=what,
            value=value,
        )
    return value


def parse_run_path(path: object) -> tuple[str, str, str]:
    """Split ``"entity/project/run_id"`` into its three checked parts."""
    if not isinstance(path, str) or path.count("/") != 2:
        raise ValidationError(f"run path {path!r} must look like 'entity/project/run_id'", value=path)
    entity, project, run_id = path.split("/")
    return (check_run_part("entity", entity), check_run_part("project", project), check_run_part("run_id", run_id))
