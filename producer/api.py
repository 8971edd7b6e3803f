"""``Api``: after a run, edit its summary (SPEC §2): publish SummaryUpdate events for the changed keys only.

``Api().run("e/p/r").summary[k] = v``, ``.update({...})`` and ``del .summary[k]`` each publish one
SummaryUpdate event at once, and wait for Kafka's ack (BrokerUnavailable if it does not come): only the
keys written, never the whole document, so two writers of different keys never clobber each other.
``.update()`` with no argument publishes the keys whose loaded value was changed in place.

Each handle has its own producer id (seq from 0). Reading what the consumer folded needs a *loader*
(``path -> {top-level key: value}``, raising RunNotFound), which the read API plugs in; without one,
reads see only this handle's own writes and say so.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from producer.summaries import Summary
from producer.transport import KafkaTransport
from schemas.codec import default_codec
from schemas.errors import BrokerUnavailable
from schemas.limits import Limits, parse_run_path
from schemas.settings import Settings

__all__ = ["Api", "ApiRun", "ApiSummary", "Loader"]

Loader = Callable[[str], dict[str, Any]]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=True)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or (a != a and b != b)  # NaN equals NaN here


class _Publisher:
    """Sends single SummaryUpdate events for one run with a fresh producer id, waiting for each ack."""

    def __init__(self, path: str, settings: Settings, limits: Limits, timeout_s: float) -> None:
        self.entity, self.project, self.run_id = parse_run_path(path)
        self.key = path.encode()
        self.producer_id = str(uuid.uuid4())
        self.seq = 0
        self.timeout_s = timeout_s
        self.limit = limits.kafka_max_record_bytes - 64 * 1024
        self._transport = KafkaTransport(settings, limits, connect_timeout_s=min(timeout_s, 10.0))

    def __call__(self, sets: dict[str, Any], removes: list[str], nbytes: int) -> None:
        datum = {
            "entity": self.entity,
            "project": self.project,
            "run_id": self.run_id,
            "producer_id": self.producer_id,
            "seq": self.seq,
            "ts_ms": time.time_ns() // 1_000_000,
            "set": sets,
            "remove": removes,
        }
        value = default_codec().encode("metricfold.SummaryUpdate", datum)
        self._transport.connect()
        delivery = self._transport.send(self.key, value)
        self._transport.flush(self.timeout_s)
        if not delivery.ok:
            raise BrokerUnavailable(
                f"Kafka did not acknowledge the summary update of {self.key.decode()}: "
                f"{delivery.error or 'timed out'}; nothing was changed"
            )
        self.seq += 1

    def close(self) -> None:
        self._transport.close(5.0)


class ApiSummary(Summary):
    """A finished (or running) run's summary seen from outside; writes publish only the changed keys."""

    def __init__(self, publish: _Publisher, limits: Limits, loaded: dict[str, Any] | None) -> None:
        super().__init__(publish, limits)
        self._loaded = loaded
        self._snapshot = copy.deepcopy(loaded) if loaded is not None else None

    def _lookup(self, key: str) -> Any:
        if key in self._overrides or key in self._hidden:
            return super()._lookup(key)
        if self._loaded is None:
            raise NotImplementedError(
                f"summary[{key!r}]: reading what the consumer folded needs the read API (not plugged in); "
                "this handle only shows its own writes"
            )
        return self._loaded[key]

    def __getitem__(self, key: str) -> Any:
        if key not in self._overrides and key not in self._hidden and self._loaded is not None:
            return self._loaded[key]
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[str]:
        keys = dict.fromkeys(k for k in (self._loaded or {}) if k not in self._hidden)
        keys.update(dict.fromkeys(self._overrides))
        return iter(list(keys))

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """With arguments: set those keys. Without: publish loaded values that were changed in place."""
        if other or kwargs:
            super().update(other, **kwargs)
            return
        if self._loaded is None or self._snapshot is None:
            return
        changed = {
            k: v
            for k, v in self._loaded.items()
            if k not in self._overrides and (k not in self._snapshot or not _same(v, self._snapshot[k]))
        }
        if changed:
            super().update(changed)
            self._snapshot.update(copy.deepcopy(changed))


class ApiRun:
    """A handle on one run: ``.path`` and ``.summary``."""

    def __init__(self, path: str, settings: Settings, limits: Limits, loader: Loader | None, timeout_s: float) -> None:
        self.entity, self.project, self.id = parse_run_path(path)
        self.path = path
        self._publisher = _Publisher(path, settings, limits, timeout_s)
        self.summary = ApiSummary(self._publisher, limits, self._load(loader))

    def _load(self, loader: Loader | None) -> dict[str, Any] | None:
        """The folded summary from the read API, or None while none is plugged in."""
        return None if loader is None else loader(self.path)

    def close(self) -> None:
        self._publisher.close()

    def __enter__(self) -> ApiRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Api:
    """Entry point for after-the-run work; connection settings from the environment by default."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        limits: Limits | None = None,
        loader: Loader | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.limits = limits or Limits.from_env()
        self.loader = loader
        self.timeout_s = timeout_s

    def run(self, path: str) -> ApiRun:
        """A handle on the run ``entity/project/run_id`` (checked; ValidationError if malformed)."""
        return ApiRun(path, self.settings, self.limits, self.loader, self.timeout_s)
