"""OTLP/JSON file exporters for the OpenTelemetry SDK, and a tiny instrumented "service".

The exporters encode with the SDK's own OTLP encoder (the protobuf messages an
OTLP/HTTP exporter sends) and write each batch as one line in the OTLP/JSON
encoding (protobuf JSON mapping with hex ids, as the OTLP spec asks), appending
to a file: what ``correlator demo`` services write and the ``otlp_files``
adapter reads.

``Service`` drives the real SDK (tracer and logger providers, synchronous
processors) with chosen timestamps, so a test can lay down hours of telemetry
in a moment.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

try:  # the SDK renamed its log exporter base (1.39); older releases have only the old name
    from opentelemetry.sdk._logs.export import LogRecordExporter as LogExporter
    from opentelemetry.sdk._logs.export import LogRecordExportResult as LogExportResult
except ImportError:  # pragma: no cover
    from opentelemetry.sdk._logs.export import (  # type: ignore[no-redef]
        LogExporter,
        LogExportResult,
    )

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: Any) -> Any:
    """Protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants ids as hex."""
    if isinstance(node, dict):
        return {
            k: base64.b64decode(v).hex() if k in _ID_KEYS and isinstance(v, str) else _hex_ids(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def otlp_json(message: Any) -> str:
    """One OTLP/JSON line for a protobuf export request."""
    doc = MessageToDict(message, use_integers_for_enums=True)
    return json.dumps(_hex_ids(doc), separators=(",", ":"))


class _Appender:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Held open for the exporter's life, as a real file exporter does.
        self.fh: IO[str] = (
            gzip.open(path, "at", encoding="utf-8")  # noqa: SIM115
            if path.name.endswith(".gz")
            else path.open("a", encoding="utf-8")
        )

    def write(self, line: str) -> None:
        self.fh.write(line + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class FileSpanExporter(SpanExporter):
    """Appends each batch of spans as one ``ExportTraceServiceRequest`` line."""

    def __init__(self, path: Path) -> None:
        self.out = _Appender(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.out.write(otlp_json(encode_spans(spans)))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.out.close()


class FileLogExporter(LogExporter):
    """Appends each batch of log records as one ``ExportLogsServiceRequest`` line."""

    def __init__(self, path: Path) -> None:
        self.out = _Appender(path)

    def export(self, batch: Sequence[Any]) -> LogExportResult:
        self.out.write(otlp_json(encode_logs(batch)))
        return LogExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self.out.close()


class Service:
    """One instrumented process: a tracer and a logger writing OTLP/JSON files in ``folder``."""

    def __init__(self, folder: Path, name: str, instance: str = "0", gz: bool = False) -> None:
        ext = ".gz" if gz else ""
        resource = Resource.create({"service.name": name, "service.instance.id": instance})
        self.traces_path = folder / f"{name}-{instance}.traces.otlp.jsonl{ext}"
        self.logs_path = folder / f"{name}-{instance}.logs.otlp.jsonl{ext}"
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            SimpleSpanProcessor(FileSpanExporter(self.traces_path))
        )
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(FileLogExporter(self.logs_path))
        )
        self.tracer = self.tracer_provider.get_tracer("shop")
        self.logger = self.logger_provider.get_logger("shop")
        self.name = name

    def request(
        self, at: float, duration: float = 0.05, error: str | None = None, peer: str | None = None
    ) -> None:
        """A server span at ``at`` (unix seconds), a client child span to ``peer``, and a log."""
        start = int(at * 1e9)
        end = start + int(duration * 1e9)
        span = self.tracer.start_span("GET /cart", kind=SpanKind.SERVER, start_time=start)
        span.set_attribute("http.request.method", "GET")
        ctx = trace.set_span_in_context(span)
        if peer:
            child = self.tracer.start_span(
                f"GET {peer}", context=ctx, kind=SpanKind.CLIENT, start_time=start + 1000
            )
            child.set_attribute("server.address", peer)
            child.end(end_time=end - 1000)
        if error:
            span.record_exception(RuntimeError(error), timestamp=end - 500)
            span.set_status(Status(StatusCode.ERROR, error))
        self.logger.emit(
            LogRecord(
                timestamp=end - 100,
                context=ctx,
                severity_number=SeverityNumber.ERROR if error else SeverityNumber.INFO,
                severity_text="ERROR" if error else "INFO",
                body=f"cart failed: {error}" if error else "cart served",
            )
        )
        span.end(end_time=end)

    def close(self) -> None:
        """Flush and close both files."""
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
