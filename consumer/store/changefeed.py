"""ChangeFeed: the live pages' notices of changed runs, from Redis pub/sub (one connection per server)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import AsyncGenerator

import redis
import redis.asyncio

from consumer.store.client import _client_options, _shown, _text, is_cluster
from consumer.store.keys import Keys, active_key
from schemas.errors import StoreUnavailable
from schemas.settings import Settings

__all__ = ["ChangeFeed"]


_FEED_POLL_S = 0.05  # the fan-out task's read timeout: how soon it takes up a new watch's subscription
_FEED_PING_S = 15.0  # a PING on the pub/sub connection this often; no answer within _FEED_PING_TIMEOUT_S: lost
_FEED_PING_TIMEOUT_S = 10.0
_FEED_SUBSCRIBE_TIMEOUT_S = 10.0
_FEED_QUEUE = 256  # notices waiting per watch; beyond that they collapse into one "*" (refetch everything)
_feed_log = logging.getLogger("metricfold.serve")


@dataclasses.dataclass(eq=False)
class _Watch:
    """One open watch of a ChangeFeed: its notices, whether its subscription stands, the error that ended it."""

    queue: asyncio.Queue[str] = dataclasses.field(default_factory=lambda: asyncio.Queue(_FEED_QUEUE))
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    error: StoreUnavailable | None = None

    def put(self, notice: str) -> None:
        try:
            self.queue.put_nowait(notice)
        except asyncio.QueueFull:  # a stream that does not keep up refetches everything instead
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait("*")

    def fail(self, error: StoreUnavailable) -> None:
        self.error = error
        self.ready.set()
        self.put("")  # wakes the watch, which raises the error


class ChangeFeed:
    """Asynchronous pub/sub notices of projects' changed runs (for live pages), following generation switches.

    One pub/sub connection however many watches are open (`metricfold serve` shares one ChangeFeed among all its
    `/changes` streams): one task reads it, subscribes to the channel of every watched project, checks
    `<ns>:active` every *recheck* seconds and hands each notice to the watches of its project; it ends when no
    watch is left. Read-only: SUBSCRIBE, UNSUBSCRIBE, PING and GET of `<ns>:active` only.
    """

    def __init__(self, settings: Settings, *, recheck: float = 2.0) -> None:
        self.settings = settings
        self.recheck = recheck
        # no health_check_interval: redis-py's PING check reads from the connection, and only the fan-out task may
        # read the pub/sub one; that task PINGs it itself
        # on Redis Cluster: the cluster client for GET, and the pub/sub connection to any one node (a PUBLISH
        # reaches the subscribers of every node), chosen again whenever the fan-out starts over
        options = {**_client_options(settings), "socket_connect_timeout": 5, "socket_timeout": 10}
        self._cluster = is_cluster(settings)
        self.client: redis.asyncio.Redis | redis.asyncio.RedisCluster = (
            redis.asyncio.RedisCluster.from_url(settings.redis, **options) if self._cluster
            else redis.asyncio.Redis.from_url(settings.redis, **options))
        self._node: redis.asyncio.Redis | None = None  # cluster: the node of the pub/sub connection
        self._watches: dict[str, set[_Watch]] = {}
        self._dirty = False  # a watch came or went: the fan-out task (un)subscribes
        self._hub: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.cancel()
            await asyncio.gather(hub, return_exceptions=True)
        await self.client.aclose()
        if self._node is not None:
            await self._node.aclose()

    async def _active(self) -> str | None:
        try:
            value = await self.client.get(active_key(self.settings.namespace))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"cannot reach Redis at {self.settings.redis_display}: {_shown(exc)}") from exc
        return None if value is None else _text(value)

    async def watch(self, project_path: str, *, tick: float = 1.0) -> AsyncGenerator[str | None, None]:
        """Yield None once subscribed (from then on no change of the project is missed), then the run_id of each
        changed run of the project; None at least every *tick* seconds (a chance to stop or send a heartbeat), and
        "*" after a generation switch (everything may have changed). StoreUnavailable when Redis is lost."""
        watch = _Watch()
        self._watches.setdefault(project_path, set()).add(watch)
        self._dirty = True
        try:
            if self._hub is None or self._hub.done():
                self._hub = asyncio.get_running_loop().create_task(self._fan_out())
            try:
                await asyncio.wait_for(watch.ready.wait(), _FEED_SUBSCRIBE_TIMEOUT_S)
            except TimeoutError:
                raise StoreUnavailable(
                    f"Redis at {self.settings.redis_display} did not confirm the subscription to the changes of "
                    f"{project_path} within {_FEED_SUBSCRIBE_TIMEOUT_S:.0f} s"
                ) from None
            notice: str | None = None
            while True:
                if watch.error is not None:
                    raise StoreUnavailable(str(watch.error))
                yield notice
                try:
                    notice = await asyncio.wait_for(watch.queue.get(), tick)
                except TimeoutError:
                    notice = None
        finally:
            watches = self._watches.get(project_path)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[project_path]
                self._dirty = True

    def _notify(self, project: str | None, notice: str) -> None:
        """Hand *notice* to every watch of *project* (None: of every project)."""
        groups = list(self._watches.values()) if project is None else [self._watches.get(project, set())]
        for watches in groups:
            for watch in watches:
                watch.put(notice)

    def _stop(self, error: StoreUnavailable | None) -> None:
        """The fan-out task ends (no await from here until it has): a new watch starts a new one; *error* ends the
        open watches."""
        if self._hub is asyncio.current_task():
            self._hub = None
        if error is not None:
            for watches in self._watches.values():
                for watch in watches:
                    watch.fail(error)

    async def _pubsub(self) -> redis.asyncio.client.PubSub:
        if not isinstance(self.client, redis.asyncio.RedisCluster):
            return self.client.pubsub()
        try:
            await self.client.initialize()
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailable(f"cannot reach the Redis Cluster at {self.settings.redis_display}: {_shown(exc)}") from exc
        node = random.choice(self.client.get_nodes())
        if self._node is not None:
            await self._node.aclose()
        self._node = redis.asyncio.Redis(host=node.host, port=int(node.port), **_client_options(self.settings),
                                         socket_connect_timeout=5, socket_timeout=10)
        return self._node.pubsub()

    async def _fan_out(self) -> None:
        """The one reader of the pub/sub connection: (un)subscribes as watches come and go, follows generation
        switches, dispatches notices; ends once no watch is left for *recheck* seconds, or with an error for all."""
        pubsub: redis.asyncio.client.PubSub | None = None
        loop = asyncio.get_running_loop()
        namespace = self.settings.namespace
        generation: str | None = None
        channels: dict[str, str] = {}  # channel -> project: SUBSCRIBE sent in this generation
        confirmed: set[str] = set()  # ... and answered by Redis
        switched: set[str] = set()  # channels subscribed after a switch: "*" to their watches once confirmed
        checked = pinged = answered = idle = loop.time()
        first = True
        try:
            pubsub = await self._pubsub()
            await pubsub.connect()  # type: ignore[no-untyped-call]
            while True:
                now = loop.time()
                if first or now - checked >= self.recheck:
                    checked = now
                    active = await self._active()
                    if not first and active != generation:
                        if channels:
                            await pubsub.unsubscribe(*channels)
                        channels.clear()
                        confirmed.clear()
                        switched = {Keys(namespace, active).channel(p) for p in self._watches} if active else set()
                        if active is None:
                            self._notify(None, "*")
                        self._dirty = True
                    generation, first = active, False
                if pinged > answered and now - pinged > _FEED_PING_TIMEOUT_S:
                    raise redis.ConnectionError(f"no answer to PING within {_FEED_PING_TIMEOUT_S:.0f} s")
                if now - pinged >= _FEED_PING_S:
                    pinged = now
                    await pubsub.ping()
                if not self._watches and now - idle >= self.recheck:
                    self._stop(None)
                    return
                if self._watches:
                    idle = now
                if self._dirty:
                    self._dirty = False
                    wanted = {Keys(namespace, generation).channel(p): p for p in self._watches} if generation else {}
                    gone = [c for c in channels if c not in wanted]
                    new = [c for c in wanted if c not in channels]
                    if gone:
                        await pubsub.unsubscribe(*gone)
                        for channel in gone:
                            del channels[channel]
                            confirmed.discard(channel)
                    if new:
                        await pubsub.subscribe(*new)
                        channels.update((c, wanted[c]) for c in new)
                    for project, watches in self._watches.items():
                        if generation is None or Keys(namespace, generation).channel(project) in confirmed:
                            for watch in watches:
                                watch.ready.set()
                message = await pubsub.get_message(timeout=_FEED_POLL_S)
                if message is None:
                    continue
                answered = loop.time()
                channel = _text(message["channel"]) if message["channel"] is not None else ""
                owner = channels.get(channel)
                if owner is None:  # a PONG, or a channel of the generation before
                    continue
                if message["type"] == "subscribe":
                    if channel in confirmed or channel in switched:  # again after a reconnect, or after a switch
                        self._notify(owner, "*")
                    confirmed.add(channel)
                    switched.discard(channel)
                    for watch in self._watches.get(owner, ()):
                        watch.ready.set()
                elif message["type"] == "message":
                    self._notify(owner, _text(message["data"]))
        except StoreUnavailable as exc:
            self._stop(exc)
        except (redis.RedisError, OSError) as exc:
            self._stop(StoreUnavailable(f"lost the Redis subscription at {self.settings.redis_display}: {_shown(exc)}"))
        except asyncio.CancelledError:
            self._stop(StoreUnavailable("the server is stopping"))
            raise
        except Exception:
            _feed_log.exception("the live updates' fan-out failed")
            self._stop(StoreUnavailable("live updates failed (see the server log)"))
        finally:
            if pubsub is not None:
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed in newer redis-py
