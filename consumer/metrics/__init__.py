"""Prometheus metrics and health answers: the consumer's (`metricfold consume --metrics-port`) and serve's.

The only package on the consumer side that imports prometheus_client. Each consumer process (and each serve app)
has a CollectorRegistry of its own, not the library's global one, so two in one process (tests) stay apart.

    consumer_metrics.py  ConsumerMetrics: the consume loop's counters, lag, health and readiness
    server.py            MetricsServer: /metrics, /healthz and /readyz of a ConsumerMetrics
    serve_metrics.py     ServeMetrics: `metricfold serve`'s request metrics
"""

from consumer.metrics.consumer_metrics import ALIVE_WITHIN_S, LAG_EVERY_S, READY_MAX_LAG, ConsumerMetrics
from consumer.metrics.serve_metrics import ServeMetrics
from consumer.metrics.server import CONTENT_TYPE, MetricsServer

__all__ = [
    "ALIVE_WITHIN_S",
    "CONTENT_TYPE",
    "LAG_EVERY_S",
    "READY_MAX_LAG",
    "ConsumerMetrics",
    "MetricsServer",
    "ServeMetrics",
]
