"""Many live pages at once (issue 20, item 5): the server's `/changes` streams share one Redis pub/sub connection,
so 500 open streams all subscribe, all get a change the consumer folds, and leave no subscription behind."""

from __future__ import annotations

import asyncio
import io
import logging
import resource
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

import producer as mf
from consumer.replay import replay
from consumer.store import ChangeFeed, Keys
from consumer.web.server import ServerThread
from schemas.errors import StoreUnavailable
from schemas.settings import Settings

from support import consume_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAMS = 500


def _enough_file_descriptors(streams: int) -> None:
    """A client and a server socket per stream, in this one process: raise the soft limit if it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * streams + 256
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.fail(f"{streams} streams need {need} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _fold_a_change(settings: Settings) -> None:
    with mf.init(entity="team", project="live", run_id="r1", settings=settings) as run:
        run.log({"loss": 0.25})
    consume_all(settings)


def _subscribers(settings: Settings) -> int:
    with redis.Redis.from_url(settings.redis, password=settings.redis_password) as client:
        generation = client.get(f"{settings.namespace}:active")
        assert generation is not None
        channel = Keys(settings.namespace, generation.decode()).channel("team/live")
        return int(dict(client.pubsub_numsub(channel))[channel.encode()])


def _subscribers_after(settings: Settings, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while (count := _subscribers(settings)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def test_500_open_streams_share_one_subscription_and_all_get_a_folded_change(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with mf.init(entity="team", project="live", run_id="r0", settings=settings) as run:
        run.log({"loss": 1.0})
    consume_all(settings)
    _enough_file_descriptors(STREAMS)
    caplog.set_level(logging.WARNING)

    async def scenario(base: str) -> tuple[list[bool], int]:
        ready = 0
        all_ready = asyncio.Event()
        limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(60, connect=30), limits=limits) as client:

            async def watch() -> bool:
                nonlocal ready
                async with client.stream("GET", "/api/projects/team/live/changes") as reply:
                    assert reply.status_code == 200
                    async for line in reply.aiter_lines():
                        if line == "event: ready":
                            ready += 1
                            if ready == STREAMS:
                                all_ready.set()
                        elif line == "data: r1":
                            return True
                return False

            streams = [asyncio.create_task(watch()) for _ in range(STREAMS)]
            try:
                await asyncio.wait_for(all_ready.wait(), 60)
            except TimeoutError:
                pytest.fail(f"only {ready} of {STREAMS} streams got `event: ready` within 60 s")
            subscribers = await asyncio.to_thread(_subscribers, settings)
            await asyncio.to_thread(_fold_a_change, settings)
            done, pending = await asyncio.wait(streams, timeout=60)
            for task in pending:
                task.cancel()
            return [t.result() for t in done if not t.cancelled()], subscribers

    with ServerThread(settings) as base:
        seen, subscribers = asyncio.run(scenario(base))
        left = _subscribers_after(settings, 15)  # the streams are closed: the feed leaves the channel

    assert len(seen) == STREAMS and all(seen)  # every stream got the change
    assert subscribers == 1  # one subscription of the project's channel for all 500 streams
    assert left == 0
    assert not [r for r in caplog.records if r.name.startswith(("metricfold", "uvicorn"))], caplog.text
    assert "Too many connections" not in caplog.text


def _next_data(lines: Iterator[str]) -> str:
    for line in lines:
        if line.startswith("data: "):
            return line[len("data: "):]
    raise AssertionError("the stream ended")


def test_a_replay_switch_reaches_every_open_stream_and_later_changes_come_from_the_new_generation(
    settings: Settings,
) -> None:
    for project in ("live", "other"):
        with mf.init(entity="team", project=project, run_id="r0", settings=settings) as run:
            run.log({"loss": 1.0})
    consume_all(settings)

    with (
        ServerThread(settings) as base,
        httpx.Client(base_url=base, timeout=30) as web,
        web.stream("GET", "/api/projects/team/live/changes") as live,
        web.stream("GET", "/api/projects/team/other/changes") as other,
    ):
        live_lines, other_lines = live.iter_lines(), other.iter_lines()
        assert _next_data(live_lines) == "subscribed" and _next_data(other_lines) == "subscribed"
        replay(settings, switch=True, out=io.StringIO())
        assert _next_data(live_lines) == "*" and _next_data(other_lines) == "*"
        _fold_a_change(settings)
        assert _next_data(live_lines) == "r1"

    assert _subscribers_after(settings, 15) == 0


def test_watches_end_with_a_clear_error_when_redis_cannot_be_reached() -> None:
    feed = ChangeFeed(Settings(redis="redis://127.0.0.1:1/0", namespace="tnowhere"))

    async def first_notices() -> None:
        try:
            watches = [feed.watch(f"team/p{i}").__anext__() for i in range(3)]
            results = await asyncio.wait_for(asyncio.gather(*watches, return_exceptions=True), 30)
        finally:
            await feed.aclose()
        for result in results:
            assert isinstance(result, StoreUnavailable) and "127.0.0.1:1" in str(result), result

    asyncio.run(first_notices())


@pytest.mark.parametrize("redis_mode", ["cluster"], indirect=True)
def test_on_a_redis_cluster_a_watch_gets_the_changes_the_consumer_folds(settings: Settings) -> None:
    """The live feed on Redis Cluster: GET of `<ns>:active` through the asyncio cluster client, the subscription on
    one node, the consumer's PUBLISH from whichever master holds the project: the notice arrives."""
    _fold_a_change(settings)  # the project exists (and a generation is active)

    async def scenario() -> list[str | None]:
        feed = ChangeFeed(settings)
        assert isinstance(feed.client, redis.asyncio.RedisCluster)
        seen: list[str | None] = []
        try:
            watch = feed.watch("team/live", tick=0.2)
            assert await anext(watch) is None  # subscribed
            with mf.init(entity="team", project="live", run_id="r2", settings=settings) as run:
                run.log({"loss": 0.5})
            await asyncio.to_thread(consume_all, settings)
            deadline = time.monotonic() + 15
            while "r2" not in seen and time.monotonic() < deadline:
                seen.append(await anext(watch))
            await watch.aclose()
        finally:
            await feed.aclose()
        return seen

    assert "r2" in asyncio.run(scenario())
