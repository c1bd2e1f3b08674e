"""Traces and topology from a Jaeger query service (API v3 or the legacy JSON API).

:class:`JaegerAdapter` implements :class:`~correlator.sources.TraceSource` and
:class:`~correlator.sources.TopologySource`.

* API v3 (Jaeger v2): ``/api/v3/services``, ``/api/v3/traces`` (search) and
  ``/api/v3/traces/{id}`` return OTLP JSON (``{"result": {"resourceSpans": ...}}``),
  mapped with :func:`correlator.otlp.spans_from_otlp`.
* Legacy JSON API (Jaeger v1, VictoriaTraces, ...): ``/api/services``,
  ``/api/traces``, ``/api/traces/{id}``, ``/api/dependencies``.

``api="auto"`` asks ``/api/v3/services`` once and falls back to the legacy API
when the server does not serve it (VictoriaTraces answers unknown paths with
400, not 404). The base URL may carry a path prefix (``.../select/jaeger``).

Quirks handled (``shared/recorded/README.md``, J1-J8): µs times, every tag
typed ``string`` (``error`` is ``"true"``/``"unset"``), span kind in the
``span.kind`` tag, a missing trace is 200 ``{"data": []}``, and
``/api/dependencies`` may be unsupported: edges then come from the spans.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Self

import httpx
import pandas as pd
from pydantic import Field

from correlator.http import HttpBackend, HttpSettings
from correlator.model import SPAN_COLUMNS, Alert, Window, empty_frame, format_time
from correlator.otlp import OtlpError, spans_from_otlp
from correlator.sources import SourceError

from .tempo import normalize_trace_id

__all__ = ["JaegerAdapter", "JaegerSettings", "spans_from_jaeger"]

Api = Literal["auto", "v3", "legacy"]
_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_FALLBACK_STATUS = (400, 404, 405, 501)


def _us(seconds: float) -> int:
    return math.floor(seconds * 1_000_000)


def _tags(items: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {str(t.get("key")): t.get("value") for t in items or ()}


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def spans_from_jaeger(traces: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Span rows (``SPAN_COLUMNS``) from legacy Jaeger JSON traces (``data[]`` items)."""
    rows: list[dict[str, Any]] = []
    for trace in traces:
        processes = trace.get("processes") or {}
        for span in trace.get("spans") or ():
            proc = processes.get(span.get("processID")) or span.get("process") or {}
            ptags = _tags(proc.get("tags"))
            tags = _tags(span.get("tags"))
            kind = _KINDS.get(str(tags.get("span.kind", "")).lower(), 0)
            code = str(tags.get("otel.status_code", "")).upper()
            status = (
                2 if code == "ERROR" or _truthy(tags.get("error")) else 1 if code == "OK" else 0
            )
            parent = None
            for ref in span.get("references") or ():
                if ref.get("refType") == "CHILD_OF" or parent is None:
                    parent = ref.get("spanID")
            peer = None
            if kind in (3, 4):
                for key in ("peer.service", "server.address", "db.name", "net.peer.name"):
                    peer = _text(tags.get(key))
                    if peer:
                        break
            error = None
            for log in span.get("logs") or ():
                fields = _tags(log.get("fields"))
                if fields.get("event") == "exception" or "exception.type" in fields:
                    parts = (
                        _text(fields.get("exception.type")),
                        _text(fields.get("exception.message")),
                    )
                    error = ": ".join(p for p in parts if p) or "exception"
                    break
            if error is None and status == 2:
                error = _text(tags.get("otel.status_description")) or "error"
            rows.append(
                {
                    "trace_id": normalize_trace_id(
                        str(span.get("traceID") or trace.get("traceID"))
                    ),
                    "span_id": str(span.get("spanID", "")).lower().zfill(16),
                    "parent_span_id": str(parent).lower().zfill(16) if parent else None,
                    "service": str(proc.get("serviceName") or "unknown_service"),
                    "name": str(span.get("operationName", "")),
                    "kind": kind,
                    "start": int(span.get("startTime", 0)) / 1e6,
                    "duration": int(span.get("duration", 0)) / 1e6,
                    "status": status,
                    "peer": peer,
                    "db_system": _text(tags.get("db.system")),
                    "zone": _text(ptags.get("cloud.availability_zone")),
                    "pod": _text(ptags.get("k8s.pod.name")),
                    "version": _text(ptags.get("service.version")),
                    "error": error,
                }
            )
    if not rows:
        return empty_frame(SPAN_COLUMNS)
    frame = pd.DataFrame(rows, columns=list(SPAN_COLUMNS))
    for col in ("kind", "status"):
        frame[col] = frame[col].astype("int64")
    for col in ("start", "duration"):
        frame[col] = frame[col].astype("float64")
    return frame


class JaegerSettings(HttpSettings):
    """Settings of a Jaeger query service (``backends: {jaeger: {url: ...}}``)."""

    api: Api = Field("auto", description="auto (detect), v3 or legacy")
    slow_threshold: float = Field(1.0, gt=0, description="seconds above which a trace is slow")


class JaegerAdapter:
    """A trace and topology source over Jaeger's query API (v3 or legacy).

    ``settings``: a :class:`JaegerSettings`, any
    :class:`~correlator.http.HttpSettings`, or a URL; the keyword options
    override its fields. ``slow_threshold`` (seconds) selects slow traces.
    """

    Settings = JaegerSettings
    display_name = "Jaeger"
    name = "jaeger"
    local = False
    """Talks to a server: ``source_timeout`` bounds each call."""

    def __init__(
        self,
        settings: HttpSettings | str,
        client: httpx.Client | None = None,
        *,
        api: Api | None = None,
        slow_threshold: float | None = None,
        backend: HttpBackend | None = None,
    ) -> None:
        own = JaegerSettings.adopt(
            settings, self.name, self.display_name, api=api, slow_threshold=slow_threshold
        )
        self.settings = own
        self.name = own.name
        self.http = backend or HttpBackend(own, client)
        # "auto" becomes the API the server has on first use (the same for every call).
        self.api: Api = own.api
        self.slow_threshold = own.slow_threshold

    def close(self) -> None:
        """Close the HTTP client if the adapter built it."""
        self.http.close()

    def bind(self, alert: Alert) -> Self:
        """Itself: every call says what it reads."""
        return self

    def _where(self) -> str:
        return f"Jaeger at {self.settings.public_url}"

    # -- API detection ----------------------------------------------------------------

    def services(self) -> list[str]:
        """Service names (detects the API on first use when ``api="auto"``)."""
        if self.api in ("auto", "v3"):
            try:
                body = self.http.get_json("/api/v3/services")
                self.api = "v3"
                return [str(s) for s in (body or {}).get("services") or ()]
            except SourceError as err:
                if self.api == "v3" or getattr(err, "status", None) not in _FALLBACK_STATUS:
                    raise
                self.api = "legacy"
        body = self._legacy("/api/services")
        return [str(s) for s in body.get("data") or ()]

    def _resolve_api(self) -> None:
        if self.api == "auto":
            self.services()

    def _legacy(self, path: str, params: Any = None) -> dict[str, Any]:
        body = self.http.get_json(path, params)
        if not isinstance(body, dict):
            shown = self.http.excerpt(json.dumps(body))
            raise SourceError(f"{self.http.where(path)}: expected a JSON object, got {shown!r}")
        if body.get("errors"):
            shown = self.http.excerpt(json.dumps(body["errors"]))
            raise SourceError(f"{self.http.where(path)}: {shown}")
        return body

    # -- traces -----------------------------------------------------------------------

    def find_traces(
        self,
        service: str,
        start: float,
        end: float,
        *,
        limit: int = 20,
        operation: str | None = None,
        tags: Mapping[str, str] | None = None,
        min_duration: float | None = None,
    ) -> pd.DataFrame:
        """Spans of the traces a search returns (``SPAN_COLUMNS``)."""
        self._resolve_api()
        if self.api == "v3":
            params: dict[str, Any] = {
                "query.service_name": service,
                "query.start_time_min": format_time(start),
                "query.start_time_max": format_time(end),
                "query.search_depth": limit,
                "query.num_traces": limit,
            }
            if operation:
                params["query.operation_name"] = operation
            if min_duration:
                params["query.duration_min"] = f"{min_duration:g}s"
            for key, value in (tags or {}).items():
                params[f"query.attributes.{key}"] = value
            return self._v3_frame(self.http.get_json("/api/v3/traces", params), "/api/v3/traces")
        legacy: dict[str, Any] = {
            "service": service, "start": _us(start), "end": _us(end), "limit": limit,
        }  # fmt: skip
        if operation:
            legacy["operation"] = operation
        if tags:
            legacy["tags"] = json.dumps(dict(tags))
        if min_duration:
            legacy["minDuration"] = f"{min_duration:g}s"
        body = self._legacy("/api/traces", legacy)
        return spans_from_jaeger(body.get("data") or ())

    def trace(self, trace_id: str) -> pd.DataFrame:
        """One trace's spans (empty when the trace is not found)."""
        self._resolve_api()
        tid = normalize_trace_id(trace_id)
        if self.api == "v3":
            path = f"/api/v3/traces/{tid}"
            response = self.http.request("GET", path, ok=(404,))
            if response.status_code == 404:
                return empty_frame(SPAN_COLUMNS)
            return self._v3_frame(self.http.parse_json(response, path), path)
        # A missing trace is 200 {"data": []} (J5); real Jaeger v1 says 404.
        response = self.http.request("GET", f"/api/traces/{tid}", ok=(404,))
        if response.status_code == 404:
            return empty_frame(SPAN_COLUMNS)
        body = self.http.parse_json(response, f"/api/traces/{tid}")
        return spans_from_jaeger((body or {}).get("data") or ())

    def _v3_frame(self, body: Any, path: str) -> pd.DataFrame:
        if not isinstance(body, dict):
            raise SourceError(f"{self._where()}{path}: expected a JSON object")
        result = body.get("result", body)
        results = result if isinstance(result, list) else [result]
        try:
            return spans_from_otlp(r.get("result", r) for r in results if isinstance(r, dict))
        except OtlpError as err:
            raise SourceError(f"{self._where()}{path}: malformed OTLP trace: {err}") from err

    def spans(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        limit: int = 200,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        """Failing, slow and sample traces of each service, in the window and before it.

        The baseline ``[baseline_start, start)`` gets the same three searches per
        service with the same bounds as the window (at most ``limit`` traces per
        period), so both periods are selected alike for the span detector.
        """
        names = list(services) if services else self.services()
        if not names:
            return empty_frame(SPAN_COLUMNS)
        per = max(1, limit // (3 * len(names)))
        periods = [(window.start, window.end)]
        if window.baseline_start < window.start:
            periods.append((window.baseline_start, window.start - 1e-6))
        frames = []
        keep: list[str] = []
        for start, end in periods:
            found = []
            for svc in names:
                found.append(self.find_traces(svc, start, end, limit=per, tags={"error": "true"}))
                found.append(
                    self.find_traces(svc, start, end, limit=per, min_duration=self.slow_threshold)
                )
                found.append(self.find_traces(svc, start, end, limit=per))
            found = [f for f in found if not f.empty]
            if not found:
                continue
            part = pd.concat(found, ignore_index=True)
            keep.extend(t for t in list(dict.fromkeys(part.trace_id))[:limit] if t not in keep)
            frames.append(part)
        if not frames:
            return empty_frame(SPAN_COLUMNS)
        out = pd.concat(frames, ignore_index=True).drop_duplicates(["trace_id", "span_id"])
        return out[out.trace_id.isin(keep)].reset_index(drop=True)

    # -- topology ---------------------------------------------------------------------

    def dependencies(self, window: Window) -> list[tuple[str, str, int]]:
        """``(parent, child, calls)`` from ``/api/dependencies`` (legacy API)."""
        end_ms = math.ceil(window.end * 1000)
        lookback = end_ms - math.floor(window.baseline_start * 1000)
        body = self._legacy("/api/dependencies", {"endTs": end_ms, "lookback": lookback})
        return [
            (str(d["parent"]), str(d["child"]), int(d.get("callCount", 0)))
            for d in body.get("data") or ()
        ]

    def edges(
        self, window: Window, *, deadline: float | None = None
    ) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """Caller -> callee edges; from ``/api/dependencies``, else derived from spans."""
        try:
            deps = self.dependencies(window)
            if deps:
                edges = sorted({(p, c) for p, c, _ in deps if p != c})
                return edges, {n: "service" for e in edges for n in e}
        except SourceError as err:
            if getattr(err, "status", None) not in _FALLBACK_STATUS:
                raise
        return edges_from_spans(self.spans(window, limit=50))


def edges_from_spans(spans: pd.DataFrame) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Caller -> callee service edges from parent/child spans, and node kinds."""
    if spans.empty:
        return [], {}
    by_id = spans.set_index(["trace_id", "span_id"])["service"].to_dict()
    edges: set[tuple[str, str]] = set()
    kinds: dict[str, str] = {s: "service" for s in spans.service.unique()}
    for row in spans.itertuples(index=False):
        parent = by_id.get((row.trace_id, row.parent_span_id)) if row.parent_span_id else None
        if parent and parent != row.service:
            edges.add((str(parent), str(row.service)))
        if row.kind == 3 and row.db_system and row.peer:
            edges.add((str(row.service), str(row.peer)))
            kinds[str(row.peer)] = "database"
    return sorted(edges), kinds
