"""Server-sent events: `event: ready` once subscribed, then `event: change` with the run_id of each run of the
project that the consumer folded.

Fed by the Redis pub/sub channel `<ns>:<gen>:changes:<entity/project>`: the server's one ChangeFeed holds one
pub/sub connection for every open stream (one subscription per watched project, fanned out to its streams), so
the number of open pages is not bounded by Redis connections. `*` means the generation switched (a replay):
everything may have changed. A comment line every 15 s keeps
proxies from closing an idle stream.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import StreamingResponse

from consumer.store import ChangeFeed, Store
from consumer.web.params import parse_project
from schemas.errors import StoreUnavailable

__all__ = ["HEARTBEAT_S", "changes"]

HEARTBEAT_S = 15.0
log = logging.getLogger("metricfold.serve")


async def _stream(feed: ChangeFeed, project: str) -> AsyncIterator[str]:
    ready = False
    quiet = 0.0
    try:
        async with contextlib.aclosing(feed.watch(project, tick=1.0)) as notices:  # leave the feed when the page goes
            async for notice in notices:
                if not ready:  # the first notice comes once subscribed: from here on no change is missed
                    ready = True
                    yield "retry: 2000\nevent: ready\ndata: subscribed\n\n"
                if notice is None:
                    quiet += 1.0
                    if quiet >= HEARTBEAT_S:
                        quiet = 0.0
                        yield ": keepalive\n\n"
                    continue
                yield "event: change\ndata: " + notice.replace("\r", "").replace("\n", "") + "\n\n"
    except StoreUnavailable as exc:  # end the stream: the browser reconnects (retry: 2 s) and catches up
        log.warning("live updates of %s stopped: %s", project, exc)


async def changes(request: Request) -> StreamingResponse:
    project = parse_project(request.path_params["entity"], request.path_params["project"])
    store: Store = request.app.state.store
    await run_in_threadpool(store.read_table, project, limit=1)  # 404 for an unknown project, before streaming
    return StreamingResponse(
        _stream(request.app.state.feed, project),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
