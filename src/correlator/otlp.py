"""OTLP/JSON traces and logs into the span and log frames.

Accepts what real writers emit: the protobuf JSON mapping (lowerCamelCase
keys, hex ids, nanosecond strings, integer enums) and also snake_case keys,
base64 ids, enum names (``SPAN_KIND_SERVER``, ``STATUS_CODE_ERROR``) and
integer times. Tempo's trace-by-id shapes (``{"batches": [...]}`` and
``{"trace": {"resourceSpans": [...]}}``) are accepted as requests too, so the
Tempo adapter can reuse :func:`spans_from_otlp`.

Malformed input raises :class:`OtlpError`; the caller adds where it came from.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from correlator.errors import CorrelatorError
from correlator.model import LOG_COLUMNS, SPAN_COLUMNS

__all__ = [
    "LogCollector",
    "OtlpError",
    "SpanCollector",
    "any_value",
    "attributes",
    "logs_from_otlp",
    "normalize_id",
    "spans_from_otlp",
]

_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
_KINDS = {"UNSPECIFIED": 0, "INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
_SEVERITY_TEXT = {
    "TRACE": 1, "DEBUG": 5, "INFO": 9, "INFORMATION": 9, "NOTICE": 10, "WARN": 13, "WARNING": 13,
    "ERROR": 17, "ERR": 17, "CRITICAL": 21, "FATAL": 21, "PANIC": 21,
}  # fmt: skip
_SEVERITY_LEVEL = (
    (21, "fatal"),
    (17, "error"),
    (13, "warn"),
    (9, "info"),
    (5, "debug"),
    (1, "trace"),
)


class OtlpError(CorrelatorError):
    """An OTLP/JSON payload that cannot be read; the message says what is wrong."""


@functools.cache
def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)


def _get(d: Mapping[str, Any], camel: str, snake: str | None = None, default: Any = None) -> Any:
    """``d[camel]``, else ``d[snake]`` (snake_case derived when not given)."""
    if camel in d:
        return d[camel]
    return d.get(_snake(camel) if snake is None else snake, default)


def any_value(v: Any) -> Any:
    """Decode an OTLP ``AnyValue`` into a Python value."""
    if type(v) is dict and "stringValue" in v:  # the usual case, first
        return v["stringValue"]
    if not isinstance(v, Mapping):
        return v
    for camel, snake in (("stringValue", "string_value"), ("boolValue", "bool_value")):
        if camel in v or snake in v:
            return _get(v, camel, snake)
    if "intValue" in v or "int_value" in v:
        raw = _get(v, "intValue", "int_value")
        try:
            return int(raw)
        except (TypeError, ValueError):
            return raw
    if "doubleValue" in v or "double_value" in v:
        raw = _get(v, "doubleValue", "double_value")
        try:
            return float(raw)
        except (TypeError, ValueError):
            return raw
    if "arrayValue" in v or "array_value" in v:
        arr = _get(v, "arrayValue", "array_value") or {}
        return [any_value(x) for x in arr.get("values", [])]
    if "kvlistValue" in v or "kvlist_value" in v:
        kv = _get(v, "kvlistValue", "kvlist_value") or {}
        return attributes(kv.get("values", []))
    if "bytesValue" in v or "bytes_value" in v:
        return _get(v, "bytesValue", "bytes_value")
    return None


def attributes(items: Any) -> dict[str, Any]:
    """``[{"key": k, "value": AnyValue}, ...]`` as a dict (a plain dict passes through)."""
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items or ():
        if (type(item) is dict or isinstance(item, Mapping)) and "key" in item:
            out[str(item["key"])] = any_value(item.get("value"))
    return out


def normalize_id(raw: Any, size: int) -> str | None:
    """A trace (``size`` 16) or span (8) id as lowercase hex, from hex or base64."""
    if raw is None or raw == "":
        return None
    text = str(raw)
    if len(text) == size * 2 and _HEX_RE.match(text):
        return text.lower()
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if decoded and len(decoded) == size:
        return decoded.hex()
    if _HEX_RE.match(text) and len(text) < size * 2:
        # Tempo's search prints trace ids without leading zeros.
        return text.lower().zfill(size * 2)
    raise OtlpError(f"id {text!r} is neither {size * 2} hex digits nor base64 of {size} bytes")


def _nanos(raw: Any) -> int:
    if raw is None or raw == "":
        return 0
    try:
        return int(raw)
    except (TypeError, ValueError):
        try:
            return int(float(raw))
        except (TypeError, ValueError):
            raise OtlpError(f"time {raw!r} is not unix nanoseconds") from None


def _enum(raw: Any, names: Mapping[str, int], prefix: str) -> int:
    if raw is None:
        return 0
    if isinstance(raw, int):
        return raw
    text = str(raw).upper()
    if text.isdigit():
        return int(text)
    return names.get(text.removeprefix(prefix), 0)


def _as_str(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return v if isinstance(v, str) else str(v)


def _resource_groups(request: Mapping[str, Any], camel: str) -> list[Any]:
    if "trace" in request and isinstance(request["trace"], Mapping):
        request = request["trace"]
    groups = _get(request, camel)
    if groups is None and camel == "resourceSpans":
        groups = request.get("batches")
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise OtlpError(f"{camel} must be a list")
    return groups


def _scopes(group: Mapping[str, Any], camel: str, legacy: str) -> list[Any]:
    scopes = _get(group, camel)
    if scopes is None:
        scopes = _get(group, legacy)
    return list(scopes or [])


class SpanCollector:
    """Accumulates spans from many requests; :meth:`frame` builds the frame once."""

    def __init__(self) -> None:
        self._cols: dict[str, list[Any]] = {c: [] for c in SPAN_COLUMNS}

    def __len__(self) -> int:
        return len(self._cols["span_id"])

    def add(self, request: Mapping[str, Any]) -> int:
        """Add one ``ExportTraceServiceRequest``; returns the number of spans added."""
        if not isinstance(request, Mapping):
            raise OtlpError("an ExportTraceServiceRequest must be a JSON object")
        before = len(self)
        for group in _resource_groups(request, "resourceSpans"):
            res = attributes((group.get("resource") or {}).get("attributes"))
            service = _as_str(res.get("service.name")) or "unknown_service"
            zone = _as_str(res.get("cloud.availability_zone"))
            pod = _as_str(res.get("k8s.pod.name"))
            version = _as_str(res.get("service.version"))
            for scope in _scopes(group, "scopeSpans", "instrumentationLibrarySpans"):
                for span in scope.get("spans") or ():
                    self._add_span(span, service, zone, pod, version)
        return len(self) - before

    def _add_span(
        self,
        span: Mapping[str, Any],
        service: str,
        zone: str | None,
        pod: str | None,
        version: str | None,
    ) -> None:
        attrs = attributes(span.get("attributes"))
        kind = _enum(span.get("kind"), _KINDS, "SPAN_KIND_")
        status_obj = span.get("status") or {}
        status = _enum(status_obj.get("code"), _STATUS, "STATUS_CODE_")
        start_ns = _nanos(_get(span, "startTimeUnixNano"))
        end_ns = _nanos(_get(span, "endTimeUnixNano"))
        peer = None
        if kind in (3, 4):
            for key in ("peer.service", "server.address", "db.name", "net.peer.name"):
                peer = _as_str(attrs.get(key))
                if peer:
                    break
        error = None
        for event in span.get("events") or ():
            if event.get("name") == "exception":
                ea = attributes(event.get("attributes"))
                etype, emsg = (
                    _as_str(ea.get("exception.type")),
                    _as_str(ea.get("exception.message")),
                )
                error = ": ".join(x for x in (etype, emsg) if x) or "exception"
                break
        if error is None and status == 2:
            error = _as_str(status_obj.get("message")) or "error"
        c = self._cols
        c["trace_id"].append(normalize_id(_get(span, "traceId"), 16))
        c["span_id"].append(normalize_id(_get(span, "spanId"), 8))
        c["parent_span_id"].append(normalize_id(_get(span, "parentSpanId"), 8))
        c["service"].append(service)
        c["name"].append(str(span.get("name", "")))
        c["kind"].append(kind)
        c["start"].append(start_ns / 1e9)
        c["duration"].append(max(end_ns - start_ns, 0) / 1e9)
        c["status"].append(status)
        c["peer"].append(peer)
        c["db_system"].append(_as_str(attrs.get("db.system") or attrs.get("db.system.name")))
        c["zone"].append(zone)
        c["pod"].append(pod)
        c["version"].append(version)
        c["error"].append(error)

    def frame(self) -> pd.DataFrame:
        """The spans as a frame with ``SPAN_COLUMNS``."""
        c = self._cols
        data: dict[str, Any] = {k: pd.Series(v, dtype="object") for k, v in c.items()}
        data["kind"] = np.asarray(c["kind"], dtype=np.int64)
        data["status"] = np.asarray(c["status"], dtype=np.int64)
        data["start"] = np.asarray(c["start"], dtype=np.float64)
        data["duration"] = np.asarray(c["duration"], dtype=np.float64)
        return pd.DataFrame(data, columns=list(SPAN_COLUMNS))


def _level(number: int) -> str:
    for floor, name in _SEVERITY_LEVEL:
        if number >= floor:
            return name
    return ""


def _body(v: Any) -> str:
    value = any_value(v)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


class LogCollector:
    """Accumulates log records from many requests; :meth:`frame` builds the frame once."""

    def __init__(self) -> None:
        self._cols: dict[str, list[Any]] = {c: [] for c in LOG_COLUMNS}

    def __len__(self) -> int:
        return len(self._cols["ts"])

    def add(self, request: Mapping[str, Any]) -> int:
        """Add one ``ExportLogsServiceRequest``; returns the number of records added."""
        if not isinstance(request, Mapping):
            raise OtlpError("an ExportLogsServiceRequest must be a JSON object")
        before = len(self)
        for group in _resource_groups(request, "resourceLogs"):
            res = attributes((group.get("resource") or {}).get("attributes"))
            service = _as_str(res.get("service.name")) or "unknown_service"
            zone = _as_str(res.get("cloud.availability_zone"))
            pod = _as_str(res.get("k8s.pod.name"))
            for scope in _scopes(group, "scopeLogs", "instrumentationLibraryLogs"):
                for rec in _get(scope, "logRecords") or ():
                    self._add_record(rec, service, zone, pod)
        return len(self) - before

    def _add_record(self, rec: Mapping[str, Any], service: str, zone: Any, pod: Any) -> None:
        ts_ns = _nanos(_get(rec, "timeUnixNano")) or _nanos(_get(rec, "observedTimeUnixNano"))
        text = _as_str(_get(rec, "severityText"))
        number = _enum(_get(rec, "severityNumber"), {}, "SEVERITY_NUMBER_")
        raw_num = _get(rec, "severityNumber")
        if isinstance(raw_num, str) and not raw_num.isdigit():
            name = raw_num.upper().removeprefix("SEVERITY_NUMBER_").rstrip("0123456789")
            number = _SEVERITY_TEXT.get(name, 0)
        if not number and text:
            number = _SEVERITY_TEXT.get(text.upper(), 0)
        c = self._cols
        c["ts"].append(ts_ns / 1e9)
        c["service"].append(service)
        c["severity"].append(number)
        c["level"].append(text.lower() if text else _level(number))
        c["body"].append(_body(rec.get("body")))
        c["trace_id"].append(normalize_id(_get(rec, "traceId"), 16))
        c["span_id"].append(normalize_id(_get(rec, "spanId"), 8))
        c["zone"].append(zone)
        c["pod"].append(pod)

    def frame(self) -> pd.DataFrame:
        """The records as a frame with ``LOG_COLUMNS``."""
        c = self._cols
        data: dict[str, Any] = {k: pd.Series(v, dtype="object") for k, v in c.items()}
        data["ts"] = np.asarray(c["ts"], dtype=np.float64)
        data["severity"] = np.asarray(c["severity"], dtype=np.int64)
        return pd.DataFrame(data, columns=list(LOG_COLUMNS))


def spans_from_otlp(requests: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Spans of ``ExportTraceServiceRequest`` dicts as a frame with ``SPAN_COLUMNS``."""
    collector = SpanCollector()
    for request in requests:
        collector.add(request)
    return collector.frame()


def logs_from_otlp(requests: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Records of ``ExportLogsServiceRequest`` dicts as a frame with ``LOG_COLUMNS``."""
    collector = LogCollector()
    for request in requests:
        collector.add(request)
    return collector.frame()
