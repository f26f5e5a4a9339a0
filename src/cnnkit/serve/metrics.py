"""The server's Prometheus metrics, in a registry of its own (several apps in one process, as
in the tests, never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """Requests by endpoint and status, latency, errors by reason, batch sizes, queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cnnkit_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cnnkit_predict_seconds",
            "POST /predict latency, from request to response",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "cnnkit_errors", "refused or failed predictions", ["reason"], registry=self.registry
        )
        self.batch_size = Histogram(
            "cnnkit_batch_size", "images per model call", buckets=BATCH_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "cnnkit_batch_seconds", "seconds per model call", buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.waiting = Gauge(
            "cnnkit_queue_waiting", "images waiting for the model", registry=self.registry
        )
        ProcessCollector(registry=self.registry)  # memory, CPU time, open files

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
