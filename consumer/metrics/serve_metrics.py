"""The request metrics of `metricfold serve` (ServeMetrics); consumer/web/app.py serves them on its own /metrics,
with CONTENT_TYPE."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

__all__ = ["ServeMetrics"]

_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServeMetrics:
    """The request metrics of one `metricfold serve` app (consumer/web/instrument.py feeds them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        self.requests = Counter("metricfold_serve_requests", "HTTP requests answered, by route (its template) and "
                                "status", ["route", "status"], registry=r)
        self.latency = Histogram("metricfold_serve_request_duration_seconds", "From a request's arrival until its "
                                 "response headers were sent, by route", ["route"], buckets=_REQUEST_BUCKETS, registry=r)
        self.streams = Gauge("metricfold_serve_live_streams", "Open live-update streams (server-sent events)", registry=r)

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
