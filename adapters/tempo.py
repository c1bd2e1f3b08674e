"""Traces from Grafana Tempo (TraceQL search, then trace by id).

:class:`TempoAdapter` implements :class:`~correlator.sources.TraceSource`:
TraceQL searches find failing, slow and (a few) normal traces of the services
in the window, and the same searches with the same bounds in the baseline
before it (so both periods are selected alike); each trace is then fetched by id (``/api/v2/traces/{id}``,
falling back to ``/api/traces/{id}`` on servers without v2) and mapped to
span rows with :func:`correlator.otlp.spans_from_otlp`.

Quirks handled (``shared/recorded/README.md``, T1-T9): search prints trace
ids without leading zeros, traces carry base64 ids; a missing trace is 404
with an empty body on v1 and 200 ``{"trace": {}}`` on v2; tag APIs differ by
version; TraceQL metrics omit ``value`` for zero samples.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import httpx
import numpy as np
import pandas as pd
from pydantic import Field

from correlator.escape import traceql_attribute, traceql_regex, traceql_string
from correlator.http import HttpBackend, HttpSettings
from correlator.model import SPAN_COLUMNS, Alert, Window, empty_frame
from correlator.otlp import OtlpError, spans_from_otlp
from correlator.sources import SourceError

__all__ = ["TempoAdapter", "TempoSettings", "TraceHit", "normalize_trace_id"]

_HEX = re.compile(r"^[0-9a-fA-F]+$")


def normalize_trace_id(raw: str) -> str:
    """A trace id as 32 lowercase hex digits, from hex (leading zeros optional) or base64."""
    text = str(raw).strip()
    if text and _HEX.match(text) and len(text) <= 32:
        return text.lower().zfill(32)
    try:
        padded = text + "=" * (-len(text) % 4)
        decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) in (8, 16):
        return decoded.hex().zfill(32)
    raise ValueError(f"{raw!r} is not a trace id (hex, up to 32 digits, or base64 of 16 bytes)")


@dataclass(frozen=True)
class TraceHit:
    """One search result."""

    trace_id: str
    root_service: str
    root_name: str
    start: float
    duration: float
    """Seconds."""
    services: Mapping[str, tuple[int, int]]
    """Service -> (span count, error count), when Tempo reports it."""


class TempoSettings(HttpSettings):
    """Settings of a Tempo backend (``backends: {tempo: {url: ...}}``)."""

    slow_threshold: float = Field(1.0, gt=0, description="seconds above which a trace is slow")
    sample: int = Field(5, ge=0, description="ordinary traces fetched for contrast")


class TempoAdapter:
    """A :class:`~correlator.sources.TraceSource` over Tempo's HTTP API.

    ``settings``: a :class:`TempoSettings`, any
    :class:`~correlator.http.HttpSettings`, or a URL; the keyword options
    override its fields. ``slow_threshold`` (seconds) is the duration above
    which a trace counts as slow; ``sample`` is how many ordinary traces are
    fetched for contrast.
    """

    Settings = TempoSettings
    display_name = "Tempo"
    name = "tempo"
    local = False
    """Talks to a server: ``source_timeout`` bounds each call."""

    def __init__(
        self,
        settings: HttpSettings | str,
        client: httpx.Client | None = None,
        *,
        slow_threshold: float | None = None,
        sample: int | None = None,
        backend: HttpBackend | None = None,
    ) -> None:
        own = TempoSettings.adopt(
            settings, self.name, self.display_name, slow_threshold=slow_threshold, sample=sample
        )
        self.settings = own
        self.name = own.name
        self.http = backend or HttpBackend(own, client)
        self.slow_threshold = own.slow_threshold
        self.sample = own.sample
        # Which trace-by-id API the server has, learned once (the same for every call).
        self._v2: bool | None = None

    def close(self) -> None:
        """Close the HTTP client if the adapter built it."""
        self.http.close()

    def bind(self, alert: Alert) -> Self:
        """Itself: every call says what it reads."""
        return self

    # -- queries ----------------------------------------------------------------------

    @staticmethod
    def service_condition(services: Sequence[str] | None) -> str:
        """A TraceQL condition on ``resource.service.name`` (``""`` for all services)."""
        if not services:
            return ""
        if len(services) == 1:
            return f"resource.service.name = {traceql_string(services[0])}"
        return f"resource.service.name =~ {traceql_regex(services)}"

    def _spanset(self, services: Sequence[str] | None, *extra: str) -> str:
        conds = [c for c in (self.service_condition(services), *extra) if c]
        return "{ " + " && ".join(conds) + " }" if conds else "{ }"

    # -- raw API ----------------------------------------------------------------------

    def search(
        self,
        query: str | None,
        start: float,
        end: float,
        limit: int | None = 20,
        spss: int | None = None,
        **extra: Any,
    ) -> list[TraceHit]:
        """``/api/search`` (TraceQL ``q``, or legacy params in ``extra``)."""
        params: dict[str, Any] = {"start": int(start), "end": math.ceil(end)}
        if limit:
            params["limit"] = limit
        if query:
            params["q"] = query
        if spss:
            params["spss"] = spss
        params.update(extra)
        body = self.http.get_json("/api/search", params)
        if not isinstance(body, dict):
            shown = self.http.excerpt(json.dumps(body))
            raise SourceError(f"{self.http.where('/api/search')}: search gave {shown!r}")
        return [_hit(t) for t in body.get("traces") or ()]

    def trace(
        self, trace_id: str, start: float | None = None, end: float | None = None
    ) -> dict[str, Any] | None:
        """A trace as an OTLP-shaped dict (``{"resourceSpans"|"batches": ...}``), or ``None``."""
        tid = normalize_trace_id(trace_id)
        params: dict[str, Any] = {}
        if start is not None and end is not None:
            params = {"start": int(start), "end": math.ceil(end)}
        if self._v2 is not False:
            path = f"/api/v2/traces/{tid}"
            response = self.http.request("GET", path, params=params, ok=(404,))
            if response.status_code == 200:
                # v2 answers 200 {"trace": {}} for a trace it does not have (T6).
                self._v2 = True
                body = self.http.parse_json(response, path)
                trace = body.get("trace") if isinstance(body, dict) else None
                return dict(trace) if trace and trace.get("resourceSpans") else None
            # 404 from v2 means no v2 API here (older Tempo): use v1 from now on.
            self._v2 = False
        response = self.http.request("GET", f"/api/traces/{tid}", params=params, ok=(404,))
        if response.status_code == 404:
            return None
        body = self.http.parse_json(response, f"/api/traces/{tid}")
        if not isinstance(body, dict) or not (body.get("batches") or body.get("resourceSpans")):
            return None
        return dict(body)

    def tags(self, start: float, end: float, scope: str | None = None) -> dict[str, list[str]]:
        """Tag names by scope (``resource``, ``span``, ``intrinsic``...); v1 gives scope ``""``."""
        params: dict[str, Any] = {"start": int(start), "end": math.ceil(end)}
        if scope:
            params["scope"] = scope
        try:
            body = self.http.get_json("/api/v2/search/tags", params)
            return {s["name"]: list(s.get("tags") or []) for s in body.get("scopes") or ()}
        except SourceError as err:
            if getattr(err, "status", None) not in (400, 404):
                raise
        params.pop("scope", None)
        body = self.http.get_json("/api/search/tags", params)
        return {"": list(body.get("tagNames") or [])}

    def tag_values(self, tag: str, start: float, end: float, query: str | None = None) -> list[str]:
        """Values of ``tag`` (scoped, e.g. ``resource.service.name``; v1 takes the bare name)."""
        tag = traceql_attribute(tag)
        params: dict[str, Any] = {"start": int(start), "end": math.ceil(end)}
        if query:
            params["q"] = query
        try:
            body = self.http.get_json(f"/api/v2/search/tag/{tag}/values", params)
            return [str(v.get("value")) for v in body.get("tagValues") or ()]
        except SourceError as err:
            if getattr(err, "status", None) not in (400, 404):
                raise
        bare = tag.split(".", 1)[1] if tag.startswith(("resource.", "span.")) else tag
        params.pop("q", None)
        body = self.http.get_json(f"/api/search/tag/{bare}/values", params)
        return [str(v) for v in body.get("tagValues") or ()]

    def metrics_range(
        self, query: str, start: float, end: float, step: float
    ) -> list[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
        """TraceQL metrics: ``(labels, ts seconds, values)`` per series; missing values are 0."""
        params = {"q": query, "start": int(start), "end": math.ceil(end), "step": f"{int(step)}s"}
        body = self.http.get_json("/api/metrics/query_range", params)
        out = []
        for series in (body or {}).get("series") or ():
            labels = {lbl["key"]: _any(lbl.get("value")) for lbl in series.get("labels") or ()}
            samples = series.get("samples") or []
            ts = np.array([int(s["timestampMs"]) / 1000 for s in samples], dtype=np.float64)
            values = np.array([float(s.get("value", 0.0)) for s in samples], dtype=np.float64)
            out.append((labels, ts, values))
        return out

    # -- TraceSource ------------------------------------------------------------------

    def find(
        self,
        window: Window,
        services: Sequence[str] | None,
        limit: int,
        start: float | None = None,
        end: float | None = None,
    ) -> list[str]:
        """Trace ids to fetch in ``[start, end]`` (default: the window): failing, slow, a sample."""
        start = window.start if start is None else start
        end = window.end if end is None else end
        wanted = {
            "error_traces": (self._spanset(services, "status = error"), limit),
            "slow_traces": (
                self._spanset(services, f"duration > {_go_duration(self.slow_threshold)}"),
                limit,
            ),
            "sample_traces": (self._spanset(services), self.sample),
        }
        ids: list[str] = []
        for query, n in wanted.values():
            if len(ids) >= limit or n <= 0:
                break
            for hit in self.search(query, start, end, limit=n):
                if hit.trace_id not in ids:
                    ids.append(hit.trace_id)
        return ids[:limit]

    def spans(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        limit: int = 200,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        """Spans of failing, slow and sample traces of ``services``, in the window and before it.

        The baseline ``[baseline_start, start)`` gets the same searches with the
        same bounds as the window, so both periods are selected alike and the
        span detector compares like with like (at most ``limit`` traces each).
        """
        ids: list[str] = []
        periods = [(window.start, window.end)]
        if window.baseline_start < window.start:
            # Tempo's search end is inclusive to the second: stop a second before the window.
            periods.append((window.baseline_start, max(window.baseline_start, window.start - 1)))
        for start, end in periods:
            for tid in self.find(window, services, limit, start, end):
                if tid not in ids:
                    ids.append(tid)
        traces = []
        for tid in ids:
            trace = self.trace(tid)
            if trace is not None:
                traces.append(trace)
        return self.frame(traces)

    def frame(self, traces: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Span rows (``SPAN_COLUMNS``) of traces as :meth:`trace` returns them."""
        traces = list(traces)
        if not traces:
            return empty_frame(SPAN_COLUMNS)
        try:
            return spans_from_otlp(traces)
        except OtlpError as err:
            raise SourceError(
                f"Tempo at {self.settings.public_url}: a trace is malformed: {err}"
            ) from err


def _go_duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _any(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if key in value:
            return value[key]
    return None


def _hit(raw: Mapping[str, Any]) -> TraceHit:
    stats = {}
    for svc, st in (raw.get("serviceStats") or {}).items():
        stats[str(svc)] = (int(st.get("spanCount", 0)), int(st.get("errorCount", 0)))
    return TraceHit(
        trace_id=normalize_trace_id(raw["traceID"]),
        root_service=str(raw.get("rootServiceName", "")),
        root_name=str(raw.get("rootTraceName", "")),
        start=int(raw.get("startTimeUnixNano", 0)) / 1e9,
        duration=float(raw.get("durationMs", 0)) / 1000,
        services=stats,
    )
