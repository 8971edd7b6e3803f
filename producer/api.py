"""``Api``: after a run, edit its summary (RULES.md §2): publish SummaryUpdate events for the changed keys only.

``Api().run("e/p/r").summary[k] = v``, ``.update({...})`` and ``del .summary[k]`` each publish one
SummaryUpdate event at once, and wait for Kafka's ack (BrokerUnavailable if it does not come): only the
keys written, never the whole document, so two writers of different keys never clobber each other.
``.update()`` with no argument publishes the keys whose loaded value was changed in place.

Each handle has its own producer id (seq from 0). Reads come from Redis, from the active generation,
as the consumer folded them (eventually consistent: ``metricfold consume --until-caught-up`` waits):
``.summary[k]``, ``.summary.get_tensor(k)`` (the exact array), ``.config``, ``.state``, ``.name``,
``.tags``, ``.meta``; ``Api().runs("entity/project", order="-acc.best", limit=50)`` lists runs sorted by
a summary path from the project's sorted sets. Every read goes through the store's public read interface
(``consumer.store.open_reader``, the one the web page uses), imported on the first read, so ``import producer``
imports neither the consumer package nor redis. A custom *loader* (``path -> {key: value}``) may replace the
Redis read (for tests or other stores).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from producer.summaries import Summary
from producer.transport import KafkaTransport
from schemas.codec import default_codec
from schemas.errors import BrokerUnavailable, RunNotFound, ValidationError
from schemas.events import SUMMARY_UPDATE
from schemas.filters import BY_UPDATE, parse_filters
from schemas.limits import Limits, parse_run_path
from schemas.settings import Settings
from schemas.tensors import from_npy

if TYPE_CHECKING:
    from consumer.store import StoreReader

__all__ = ["Api", "ApiRun", "ApiSummary", "Loader", "open_store_reader"]

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
        value = default_codec().encode(SUMMARY_UPDATE, datum)
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

    def __init__(
        self,
        publish: _Publisher,
        limits: Limits,
        loaded: dict[str, Any] | None,
        tensor: Callable[[str], np.ndarray] | None = None,
    ) -> None:
        super().__init__(publish, limits)
        self._loaded = loaded
        self._snapshot = copy.deepcopy(loaded) if loaded is not None else None
        self._tensor = tensor

    def get_tensor(self, key: str) -> np.ndarray:
        """The full array stored for a tensor-valued summary key (display path, e.g. "weights"), exactly as logged."""
        if self._tensor is None:
            raise NotImplementedError("get_tensor needs the Redis read API (this handle has a custom loader)")
        return self._tensor(key)

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
    """A handle on one run: ``.path``, ``.summary`` (read and edit), and the run's meta as folded."""

    def __init__(
        self,
        path: str,
        settings: Settings,
        limits: Limits,
        loader: Loader | None,
        timeout_s: float,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.entity, self.project, self.id = parse_run_path(path)
        self.path = path
        self._settings = settings
        self._data: dict[str, Any] = data if data is not None else ({} if loader is not None else _read_run(settings, path))
        self._publisher = _Publisher(path, settings, limits, timeout_s)
        loaded = loader(path) if loader is not None else self._data.get("summary", {})
        self.summary = ApiSummary(self._publisher, limits, loaded, None if loader is not None else self._get_tensor)

    @property
    def meta(self) -> dict[str, str]:
        """The run's meta hash as stored (state, created, updated, name, config, tags, events, ...)."""
        return dict(self._data.get("meta", {}))

    @property
    def state(self) -> str | None:
        return self.meta.get("state")

    @property
    def name(self) -> str | None:
        return self.meta.get("name") or None

    @property
    def config(self) -> dict[str, Any]:
        return dict(json.loads(self.meta.get("config") or "{}"))

    @property
    def tags(self) -> list[str]:
        return list(json.loads(self.meta.get("tags") or "[]"))

    @property
    def flat(self) -> dict[str, Any]:
        """The flat view: display path (loss.min, grad.norm) -> scalar, as dashboards read it."""
        return dict(self._data.get("flat", {}))

    def _get_tensor(self, key: str) -> np.ndarray:
        sha = self._data.get("tensors", {}).get(key)
        if sha is None:
            known = sorted(self._data.get("tensors", {}))
            raise KeyError(f"summary[{key!r}] of {self.path} is not a tensor (tensor keys: {known})")
        with open_store_reader(self._settings) as reader:
            blob = reader.read_blob(self.path, sha, generation=self._data["generation"])
        if blob is None:
            raise RunNotFound(f"the tensor bytes of {self.path} summary[{key!r}] are gone (was the generation replaced?)")
        return from_npy(blob)

    def __repr__(self) -> str:
        return f"<ApiRun {self.path} state={self.state}>"

    def close(self) -> None:
        self._publisher.close()

    def __enter__(self) -> ApiRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store_reader(settings: Settings) -> StoreReader:
    """The store's public read interface (the web page's too), imported on first use: ``import producer`` imports
    neither the consumer package nor redis."""
    from consumer.store import open_reader

    return open_reader(settings)


def _read_run(settings: Settings, path: str) -> dict[str, Any]:
    with open_store_reader(settings) as reader:
        return reader.read_run(path)


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
        """The run ``entity/project/run_id`` as folded in Redis (RunNotFound if the consumer has not seen it)."""
        return ApiRun(path, self.settings, self.limits, self.loader, self.timeout_s)

    def runs(
        self, project: str, filters: Mapping[str, Any] | None = None, *, order: str = f"-{BY_UPDATE}", limit: int = 50,
        offset: int = 0,
    ) -> list[ApiRun]:
        """Runs of ``entity/project`` sorted by a summary path (``"-acc.best"``: largest first) or ``-updated``,
        those that pass *filters* (W&B's syntax, e.g. ``{"summary.acc.best": {"$gt": 0.9}, "state": "finished"}``;
        ``$gt $gte $lt $lte $eq $ne $in $nin $and $or`` on numeric summary paths, ``state``, ``tags``, ``group``,
        ``job_type``; ``config.<key>`` equality; README "Filtering and exporting runs").

        Uses the project's sorted sets and index sets, never a scan; a run without a value at the sort path is not
        listed, nor one without a number at a filtered path. An unknown project raises RunNotFound, a sort path the
        project has no number at or a malformed filter ValidationError (as the web's 404 and 400).
        """
        where = parse_filters(filters)
        if not isinstance(order, str) or order in ("", "-", "+"):
            raise ValidationError(f"order must be a summary path such as '-acc.best' or 'loss.min', got {order!r}")
        if not isinstance(limit, int) or not 1 <= limit <= 10_000 or not isinstance(offset, int) or offset < 0:
            raise ValidationError(f"limit must be 1..10000 and offset >= 0, got limit={limit!r} offset={offset!r}")
        entity, name, _ = parse_run_path(f"{project}/x")
        descending = order.startswith("-")
        path = order.lstrip("+-")
        with open_store_reader(self.settings) as reader:
            page = reader.read_table(
                f"{entity}/{name}", sort=path, descending=descending, offset=offset, limit=limit, where=where
            )
            paths = [f"{entity}/{name}/{row['run_id']}" for row in page.rows]
            return [ApiRun(p, self.settings, self.limits, None, self.timeout_s, reader.read_run(p)) for p in paths]
