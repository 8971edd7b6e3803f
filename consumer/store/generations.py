"""Generations: each fold of the topic writes one (`<ns>:<gen>:...`); `<ns>:active` names the one readers use, and a
replay builds a new one beside it and switches in one step.

The live consumer's writes must stop landing in a generation once another is active. Its writes are one script per
project (one hash slot on Redis Cluster, where `<ns>:active` lives in another), so the switch retires the old
generation project by project: after setting `<ns>:active`, it sets each project's `retired` marker, and a live
write to a retired project is refused (the consumer then moves to the active generation). A project the consumer
adds to the `projects` set after the switch read it is refused by the consumer's own check of `<ns>:active`
(writer.py, `_announce`). Deleting the old generation leaves the markers, which expire after RETIRED_TTL_S: a
consumer that slept longer than that would write into a deleted generation."""

from __future__ import annotations

import redis

from consumer.store.client import _mapped, _text
from consumer.store.keys import Keys, active_key
from schemas.settings import Settings

__all__ = ["RETIRED_TTL_S", "Generations"]

RETIRED_TTL_S = 7 * 24 * 3600


class Generations:
    """The store's generation handling (a part of `Store`): which one is active, making, switching, deleting."""

    settings: Settings
    client: redis.Redis
    _generation: str | None

    def active_generation(self) -> str | None:
        with _mapped(self.settings):
            value = self.client.get(active_key(self.settings.namespace))
        return value.decode() if isinstance(value, bytes) else value

    def set_active(self, generation: str) -> None:
        """Make *generation* the one every reader and the live consumer use: readers see it in one step; then the
        generation that was active is retired (live writes into it are refused from now on)."""
        with _mapped(self.settings):
            reply = self.client.set(active_key(self.settings.namespace), generation, get=True)
            old = _text(reply) if isinstance(reply, bytes | str) else None
            if old and old != generation:
                keys = Keys(self.settings.namespace, old)
                pipe = self.client.pipeline(transaction=False)
                for project in self.client.smembers(keys.projects):
                    pipe.set(keys.retired(_text(project)), "1", ex=RETIRED_TTL_S)
                pipe.execute()

    def generation_has_keys(self, generation: str) -> bool:
        with _mapped(self.settings):
            keys = self.client.scan_iter(match=Keys(self.settings.namespace, generation).every_key, count=1000)
            return next(iter(keys), None) is not None

    def delete_generation(self, generation: str) -> int:
        """Delete every key of a generation (never the active one) but its projects' `retired` markers, which
        expire by themselves; returns how many."""
        if generation == self.active_generation():
            raise ValueError(f"refusing to delete the active generation {generation!r}")
        deleted = 0
        with _mapped(self.settings):
            batch: list[bytes] = []
            keys = Keys(self.settings.namespace, generation)
            for key in self.client.scan_iter(match=keys.every_key, count=2000):
                if keys.is_retired_marker(key):
                    continue
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += self.client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += self.client.unlink(*batch)
        return deleted

    def use_generation(self, generation: str) -> None:
        """Write to (and read from) *generation* from now on (the live consumer after a replay's switch)."""
        self._generation = generation

    def ensure_generation(self, initial: str = "g1") -> str:
        """The generation to write: the given one, else the active one (made `initial` if none is)."""
        if self._generation is None:
            with _mapped(self.settings):
                self.client.set(active_key(self.settings.namespace), initial, nx=True)
            self._generation = self.active_generation() or initial
        return self._generation

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.namespace, self.ensure_generation())

