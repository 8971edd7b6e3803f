"""`metricfold serve`: the runs page, the run page, live updates and the JSON API, read from Redis (read-only).

Modules: app (routes), params (checked parameters), data (what is shown), pages and widgets (escaped HTML),
assets (CSS and the small script), sse (live updates from pub/sub), security (token, headers), openapi, server.
Needs the `serve` extra: pip install 'metricfold[serve]' (Starlette + uvicorn).
"""

from __future__ import annotations

__all__: list[str] = []
