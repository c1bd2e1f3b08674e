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

__all__ = [
    "JsonFormatter",
    "Metrics",
    "RateLimitFilter",
    "RateLimitedLog",
    "SecretFilter",
    "configure_logging",
    "make_tracer_provider",
]

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
            if status != "quarantined":
                by_status.add_metric([status], n)
        yield by_status
        quarantined = GaugeMetricFamily(
            "correlator_investigations_quarantined",
            "Failed investigations whose stored alert could not be read back (set aside).",
        )
        quarantined.add_metric([], counts.get("quarantined", 0))
        yield quarantined


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
        self.worker_restarts = Counter(
            "correlator_worker_restarts",
            "Worker loops (or worker processes) that died and were replaced.",
            registry=r,
        )
        self.connections_dropped = Counter(
            "correlator_connections_dropped",
            "Connections closed by the server, by reason (header_timeout, body_timeout, "
            "max_connections, max_pending, client_disconnect).",
            ["reason"],
            registry=r,
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
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


class _Budget:
    """At most ``burst`` events per ``per`` seconds for each key; counts what it refuses."""

    def __init__(self, burst: int, per: float) -> None:
        self.burst = burst
        self.per = per
        self._windows: dict[str, tuple[float, int, int]] = {}

    def take(self, key: str) -> tuple[bool, int]:
        """Whether an event of ``key`` may be logged, and how many were refused before it."""
        now = time.monotonic()
        start, used, refused = self._windows.get(key, (now, 0, 0))
        if now - start >= self.per:
            start, used = now, 0
        if used >= self.burst:
            self._windows[key] = (start, used, refused + 1)
            return False, 0
        self._windows[key] = (start, used + 1, 0)
        if len(self._windows) > 1000:  # keys are few; never let them grow without bound
            self._windows.clear()
        return True, refused


class RateLimitedLog:
    """One log line per event, at most ``burst`` per ``per`` seconds per kind of event.

    A line after a quiet spell says how many were left out (``suppressed``),
    so a flood of dropped connections costs a few lines, not megabytes.
    """

    def __init__(self, logger: logging.Logger, burst: int = 5, per: float = 10.0) -> None:
        self.logger = logger
        self._budget = _Budget(burst, per)

    def _log(self, level: int, key: str, msg: str, extra: dict[str, Any]) -> None:
        ok, suppressed = self._budget.take(key)
        if not ok:
            return
        if suppressed:
            extra = {**extra, "suppressed": suppressed}
        self.logger.log(level, msg, extra={"event": key, **extra})

    def warning(self, key: str, msg: str, **extra: Any) -> None:
        """Log ``msg`` at warning level unless ``key`` is over its budget."""
        self._log(logging.WARNING, key, msg, extra)

    def info(self, key: str, msg: str, **extra: Any) -> None:
        """Log ``msg`` at info level unless ``key`` is over its budget."""
        self._log(logging.INFO, key, msg, extra)


class RateLimitFilter(logging.Filter):
    """Drops repeats of the same message beyond ``burst`` per ``per`` seconds.

    For lines we do not write ourselves (uvicorn's "Invalid HTTP request
    received.", asyncio's and psycopg's); correlator's own lines pass (the
    noisy ones go through :class:`RateLimitedLog`).
    """

    def __init__(self, burst: int = 10, per: float = 10.0) -> None:
        super().__init__()
        self._budget = _Budget(burst, per)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL or record.name.startswith("correlator"):
            return True
        ok, suppressed = self._budget.take(f"{record.name}|{record.msg}")
        if ok and suppressed:
            record.suppressed = suppressed
        return ok


class SecretFilter(logging.Filter):
    """Replaces every registered secret in a line's message and fields by ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        text = record.getMessage()
        clean = self._scrub(text)
        if clean != text:
            record.msg, record.args = clean, None
        for key, value in list(record.__dict__.items()):
            if key not in _RESERVED and isinstance(value, str):
                setattr(record, key, self._scrub(value))
        if record.exc_info:
            record.exc_text = self._scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True

    def _scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


#: Secrets to keep out of every log line (the CLI adds the store's passwords).
SECRETS = SecretFilter()


def configure_logging(level: str = "info") -> None:
    """Send correlator's, uvicorn's, asyncio's and psycopg's logs to stderr as JSON lines.

    Lines are scrubbed of :data:`SECRETS` and repeats are rate-limited.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SECRETS)
    handler.addFilter(RateLimitFilter())
    for name in ("correlator", "uvicorn", "uvicorn.error", "asyncio", "psycopg"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper() if name.startswith(("correlator", "uvicorn")) else "WARNING")
        logger.propagate = False
