"""ASGI middleware counting `metricfold serve`'s requests for its /metrics (consumer.metrics.ServeMetrics).

Outermost but for Starlette's error handler, so requests the token guard turns away (401, the redirect that takes a
token out of a URL) are counted too. The route label is the matching route's template (`/runs/{entity}/...`), never
the request's own path, so the number of series stays bounded; `unmatched` for anything else. The latency is the
time until the response headers go out (for a live stream: until it opened). A response of type
text/event-stream counts as an open live stream until it ends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumer.metrics import ServeMetrics

__all__ = ["RequestMetrics"]

UNMATCHED = "unmatched"


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: ServeMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = list(routes)

    def _route(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:  # PARTIAL: the route, with another method (405)
                return str(getattr(route, "path", UNMATCHED))
        return UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        began = time.monotonic()
        started = stream = False

        async def counted(message: Message) -> None:
            nonlocal started, stream
            if message["type"] == "http.response.start" and not started:
                started = True
                self.metrics.answered(route, int(message["status"]), time.monotonic() - began)
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(b"text/event-stream"):
                    stream = True
                    self.metrics.streams.inc()
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            if not started:  # Starlette's error handler answers 500 after us
                self.metrics.answered(route, 500, time.monotonic() - began)
            raise
        finally:
            if stream:
                self.metrics.streams.dec()
