"""A canonical SHA-256 of one generation's Redis state, equal however the state was produced.

Encoding: every key under `<namespace>:<generation>:` is taken with that prefix removed, except the
consumer's bookkeeping that depends on how the work was split — the per-partition checkpoint hashes
(`checkpoint:<topic>`) and the `indexes` marker (whether a consumer had to fill the filter index sets) — and the
keys are sorted by their bytes. Each key adds to the hash:

    key \\0 type \\0 then, by type:
      string  the value
      hash    for each field, sorted:  field \\0 value \\0
      set     for each member, sorted: member \\0
      zset    for each member, sorted: member \\0 score as repr(float) \\0
      list    for each item, in order: item \\0
    \\n

so two generations have the same digest exactly when they hold the same keys with the same contents.
"""

from __future__ import annotations

import hashlib
from typing import Any

from consumer.store import Keys, Store
from consumer.store.keys import CHECKPOINT_PART, INDEXES_PART

__all__ = ["digest_generation", "dump_generation"]

_EXCLUDED_PARTS = (CHECKPOINT_PART.encode(),)
_INDEXES = INDEXES_PART.encode()


def dump_generation(store: Store, generation: str) -> dict[bytes, tuple[str, Any]]:
    """Every key of the generation (prefix removed) -> (type, canonical contents)."""
    prefix = f"{Keys(store.settings.namespace, generation).prefix}:".encode()
    client = store.client
    keys = sorted(k for k in client.scan_iter(match=prefix + b"*", count=2000) if k.startswith(prefix))
    out: dict[bytes, tuple[str, Any]] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.type(key)
        types = [t.decode() if isinstance(t, bytes) else t for t in pipe.execute()]
        pipe = client.pipeline(transaction=False)
        for key, kind in zip(chunk, types, strict=True):
            if kind == "string":
                pipe.get(key)
            elif kind == "hash":
                pipe.hgetall(key)
            elif kind == "set":
                pipe.smembers(key)
            elif kind == "zset":
                pipe.zrange(key, 0, -1, withscores=True)
            else:
                pipe.lrange(key, 0, -1)
        for key, kind, value in zip(chunk, types, pipe.execute(), strict=True):
            short = key[len(prefix) :]
            if short.startswith(_EXCLUDED_PARTS) or short == _INDEXES:
                continue
            if kind == "hash":
                value = sorted(value.items())
            elif kind == "set":
                value = sorted(value)
            elif kind == "zset":
                value = sorted((m, repr(float(s))) for m, s in value)
            out[short] = (kind, value)
    return out


def digest_generation(store: Store, generation: str | None = None) -> str:
    generation = generation or store.active_generation()
    if generation is None:
        return hashlib.sha256(b"").hexdigest()
    h = hashlib.sha256()
    for key, (kind, value) in sorted(dump_generation(store, generation).items()):
        h.update(key + b"\0" + kind.encode() + b"\0")
        if kind in ("string",):
            h.update(value or b"")
        elif kind in ("hash", "zset"):
            for a, b in value:
                h.update(a + b"\0" + (b if isinstance(b, bytes) else b.encode()) + b"\0")
        else:
            for item in value:
                h.update(item + b"\0")
        h.update(b"\n")
    return h.hexdigest()
