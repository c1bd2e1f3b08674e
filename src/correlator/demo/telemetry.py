"""OpenTelemetry for one demo process: OTLP/JSON files, Prometheus metrics, instrumentation.

Traces and logs go to ``<otlp_dir>/<service>-<instance>.traces.otlp.jsonl`` and
``.logs.otlp.jsonl``: one ``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest``
per line in the protobuf JSON mapping with hex ids (as in scenario bundles),
encoded by OpenTelemetry's own OTLP encoders. With an OTLP/HTTP endpoint they
also go there. Metrics are served for Prometheus by ``prometheus_client``
(OpenTelemetry's instruments through the Prometheus reader, plus the process,
platform and GC collectors: CPU seconds, resident memory, collections).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "OtlpJsonLogExporter",
    "OtlpJsonSpanExporter",
    "PeerServiceProcessor",
    "otlp_file",
    "to_otlp_json",
]

_ID_FIELDS = {"traceId", "spanId", "parentSpanId"}


def otlp_file(otlp_dir: Path, service: str, instance: str, signal: str) -> Path:
    """``<otlp_dir>/<service>-<instance>.<signal>.otlp.jsonl`` (signal: traces or logs)."""
    return otlp_dir / f"{service}-{instance}.{signal}.otlp.jsonl"


def _hex_ids(node: Any) -> Any:
    """Turn the base64 bytes the protobuf JSON mapping gives ids into OTLP/JSON's hex."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in _ID_FIELDS and isinstance(v, str):
                out[k] = base64.b64decode(v).hex()
            else:
                out[k] = _hex_ids(v)
        return out
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def to_otlp_json(message: Message) -> str:
    """One OTLP export request as a line of OTLP/JSON (camelCase, hex ids, integer enums)."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    return json.dumps(_hex_ids(data), separators=(",", ":"))


class _JsonlWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._fh = path.open("a", encoding="utf-8")

    def write(self, line: str) -> None:
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


class OtlpJsonSpanExporter(SpanExporter):
    """Appends each batch of spans to a file as one OTLP/JSON ``ExportTraceServiceRequest``."""

    def __init__(self, path: Path) -> None:
        self._out = _JsonlWriter(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write one line; failure to write is reported, not raised."""
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            self._out.write(to_otlp_json(encode_spans(spans)))
        except (OSError, ValueError):
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file."""
        self._out.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Every line is flushed as it is written."""
        return True


class OtlpJsonLogExporter(LogRecordExporter):
    """Appends each batch of log records as one OTLP/JSON ``ExportLogsServiceRequest``."""

    def __init__(self, path: Path) -> None:
        self._out = _JsonlWriter(path)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Write one line; failure to write is reported, not raised."""
        if not batch:
            return LogRecordExportResult.SUCCESS
        try:
            self._out.write(to_otlp_json(encode_logs(batch)))
        except (OSError, ValueError):
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file."""
        self._out.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Every line is flushed as it is written."""
        return True


class PeerServiceProcessor(SpanProcessor):
    """Names the database of the PostgreSQL driver's client spans (``peer.service``).

    The driver's spans carry only the server's address (127.0.0.1 here, like
    every service); ``peer.service`` is the attribute OpenTelemetry meant to be
    set from configuration for this, and readers take it first.
    """

    def __init__(self, scopes: dict[str, str]) -> None:
        self.scopes = scopes

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Set ``peer.service`` on spans of the configured instrumentation scopes."""
        scope = span.instrumentation_scope
        name = self.scopes.get(scope.name) if scope is not None else None
        if name:
            span.set_attribute("peer.service", name)


def setup(
    *,
    service: str,
    instance: str,
    version: str,
    otlp_dir: Path,
    metrics_port: int,
    otlp_endpoint: str | None = None,
) -> None:
    """Install tracer, logger and meter providers for this process and instrument
    httpx, psycopg and logging. Serves ``/metrics`` on ``127.0.0.1:metrics_port``."""
    import prometheus_client
    from opentelemetry import metrics, trace
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.logging import LoggingInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.view import DropAggregation, View
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from correlator.demo.shop.runtime import peer_of_port

    pod = f"{service}-{instance}"
    resource = Resource.create(
        {
            "service.name": service,
            "service.version": version,
            "service.instance.id": pod,
            # Instances are named like StatefulSet pods, so per-instance views work.
            "k8s.pod.name": pod,
            "deployment.environment.name": "demo",
        }
    )
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        PeerServiceProcessor({"opentelemetry.instrumentation.psycopg": "postgres"})
    )
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OtlpJsonSpanExporter(otlp_file(otlp_dir, service, instance, "traces")),
            schedule_delay_millis=1000,
        )
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(
            OtlpJsonLogExporter(otlp_file(otlp_dir, service, instance, "logs")),
            schedule_delay_millis=1000,
        )
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = otlp_endpoint.rstrip("/")
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=base + "/v1/traces"))
        )
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=base + "/v1/logs"))
        )
    trace.set_tracer_provider(tracer_provider)
    set_logger_provider(logger_provider)

    reader = PrometheusMetricReader()
    # The httpx instrumentation labels its client histogram with the peer's address
    # (127.0.0.1 for every peer here); the shop's client records the same duration
    # under the peer's service name instead (runtime.Peers), so this one is dropped.
    drop_httpx = View(
        meter_name="opentelemetry.instrumentation.httpx", aggregation=DropAggregation()
    )
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[reader], views=[drop_httpx])
    )
    prometheus_client.start_http_server(metrics_port, addr="127.0.0.1")

    def name_peer(span: Any, request: Any) -> None:
        peer = peer_of_port(getattr(request.url, "port", None))
        if peer and span.is_recording():
            span.set_attribute("peer.service", peer)

    async def name_peer_async(span: Any, request: Any) -> None:
        name_peer(span, request)

    HTTPXClientInstrumentor().instrument(request_hook=name_peer, async_request_hook=name_peer_async)
    PsycopgInstrumentor().instrument(enable_commenter=False)
    # Also installs the handler that turns log records into OpenTelemetry logs
    # (with the current trace and span ids) on the root logger.
    LoggingInstrumentor().instrument(
        set_logging_format=False, inject_trace_context=True, log_handler_level=logging.INFO
    )

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    stderr = logging.StreamHandler()
    stderr.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {pod} %(name)s "
            "[trace=%(otelTraceID)s span=%(otelSpanID)s] %(message)s",
            defaults={"otelTraceID": "0", "otelSpanID": "0"},
        )
    )
    root.addHandler(stderr)
    for noisy in ("httpx", "httpcore", "werkzeug", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def shutdown() -> None:
    """Flush and close the providers (spans and logs still queued reach their files)."""
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider

    for provider in (trace.get_tracer_provider(), get_logger_provider()):
        stop = getattr(provider, "shutdown", None)
        if callable(stop):
            stop()
