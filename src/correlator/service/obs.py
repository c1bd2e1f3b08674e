"""The service's view of itself: Prometheus metrics, OpenTelemetry traces, JSON logs.

Each app gets its own metrics registry (so tests can run several apps in one
process). Traces go through a :class:`~opentelemetry.sdk.trace.TracerProvider`
that exports over OTLP/HTTP only when an endpoint is configured; otherwise a
no-op tracer keeps the cost at zero.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["JsonFormatter", "Metrics", "configure_logging", "make_tracer_provider"]

_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _StoreCollector(Collector):
    """Reads queue depth and investigations by status from the store at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self._counts()
        except Exception:  # a scrape must not fail because the store is down
            return
        depth = GaugeMetricFamily(
            "correlator_queue_depth", "Investigations waiting or running (all replicas)."
        )
        depth.add_metric([], counts.get("queued", 0) + counts.get("running", 0))
        yield depth
        by_status = GaugeMetricFamily(
            "correlator_investigations", "Stored investigations by status.", labels=["status"]
        )
        for status, n in sorted(counts.items()):
            by_status.add_metric([status], n)
        yield by_status


class Metrics:
    """Every metric the service exports, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "correlator_webhook_requests", "Webhook requests by HTTP status.", ["code"], registry=r
        )
        self.alerts = Counter(
            "correlator_alerts_received",
            "Alerts received, by what storing them came to (new, duplicate, resolved).",
            ["outcome"],
            registry=r,
        )
        self.outcomes = Counter(
            "correlator_investigations_finished",
            "Investigations finished by this replica, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.stages = Histogram(
            "correlator_stage_duration_seconds",
            "Duration of each stage (accept, queue_wait, investigate, and the engine's stages).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.backend_errors = Counter(
            "correlator_backend_errors",
            "Gaps reported by investigations, by source (a backend that failed or was missing).",
            ["source"],
            registry=r,
        )
        self.notifications = Counter(
            "correlator_notifications",
            "Outgoing notifications by outcome.",
            ["outcome"],
            registry=r,
        )
        self.store_errors = Counter(
            "correlator_store_errors", "Failed store operations.", ["operation"], registry=r
        )

    def watch_store(self, counts: Callable[[], dict[str, int]]) -> None:
        """Export queue depth and per-status counts read from the store at scrape time."""
        self.registry.register(_StoreCollector(counts))


def make_tracer_provider(
    otlp_endpoint: str | None, service_name: str = "correlator", replica: str = ""
) -> trace.TracerProvider:
    """A provider exporting to ``otlp_endpoint`` (OTLP/HTTP), or a no-op one when ``None``."""
    if not otlp_endpoint:
        return trace.NoOpTracerProvider()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    resource = Resource.create({"service.name": service_name, "service.instance.id": replica})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "info") -> None:
    """Send correlator's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("correlator", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
