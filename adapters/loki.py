"""Logs from Grafana Loki (LogQL over the HTTP API).

:class:`LokiAdapter` implements :class:`~correlator.sources.LogSource`. It
handles what real Loki does (see ``shared/recorded/README.md``, quirks L1-L10):

* entries come grouped by stream, not in time order: they are flattened and
  sorted (L3);
* push streams (labels ``service_name``/``level``, JSON lines) and OTLP streams
  (structured metadata ``severity_text``/``trace_id``..., plain message) live
  side by side and may hold the same event twice: both are read, and events
  with the same time, service, message and trace are kept once (L4);
* with ``X-Loki-Response-Encoding-Flags: categorize-labels`` entries carry a
  third element with ``structuredMetadata``/``parsed`` (L4);
* a response holding exactly ``limit`` lines is truncated without a flag, so
  :meth:`LokiAdapter.logs` pages backwards, ``end`` being exclusive (L5), reads
  the baseline and the window separately (each with its share of the limit)
  and says in ``attrs["warnings"]`` what a limit left unread;
* :meth:`LokiAdapter.log_counts` counts records of every level with one
  metric query (``count_over_time`` by service and level), so detectors get
  error shares without pulling every line;
* metric matrices omit zero steps; they are filled with zeros (L6);
* errors are text one-liners, kept in the message (L7).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
import numpy as np
import pandas as pd
from pydantic import Field

from correlator.escape import label_name, logql_string, promql_regex
from correlator.http import HttpBackend, HttpSettings
from correlator.model import LOG_COLUMNS, SIGNAL_COLUMNS, Alert, Window, empty_frame, format_time
from correlator.sources import SourceError

__all__ = ["LEVELS", "LogEntry", "LokiAdapter", "LokiSettings", "severity_of"]

#: Level words and their OTLP severity numbers.
LEVELS: dict[str, int] = {
    "trace": 1, "debug": 5, "info": 9, "information": 9, "notice": 10, "warn": 13,
    "warning": 13, "error": 17, "err": 17, "critical": 21, "crit": 21, "fatal": 21,
    "panic": 21, "emerg": 21, "alert": 21,
}  # fmt: skip
_LEVEL_TEXT = ((21, "fatal"), (17, "error"), (13, "warn"), (9, "info"), (5, "debug"), (1, "trace"))
_CATEGORIZE = {"X-Loki-Response-Encoding-Flags": "categorize-labels"}
_MAX_POINTS = 11_000


def severity_of(level: str | None) -> int:
    """The OTLP severity number of a level word (``0`` when unknown)."""
    if not level:
        return 0
    text = str(level).strip().lower()
    if text.isdigit():
        return int(text)
    return LEVELS.get(text, 0)


def _level_text(number: int) -> str:
    for floor, text in _LEVEL_TEXT:
        if number >= floor:
            return text
    return "unspecified"


@dataclass(frozen=True)
class LogEntry:
    """One log line: nanosecond time, the line, and every label it carries."""

    ts_ns: int
    line: str
    labels: Mapping[str, str] = field(default_factory=dict)
    """Stream labels, structured metadata and parsed labels, merged."""


def _ns(seconds: float) -> str:
    # Integer arithmetic: a float of unix nanoseconds loses the last digits.
    whole = math.floor(seconds)
    return str(whole * 1_000_000_000 + round((seconds - whole) * 1e9))


class LokiSettings(HttpSettings):
    """Settings of a Loki backend (``backends: {loki: {url: ...}}``)."""

    service_label: str = Field("service_name", description="the stream label naming the service")
    page_size: int = Field(1000, ge=1, le=5000, description="lines per request")


class LokiAdapter:
    """A :class:`~correlator.sources.LogSource` over Loki's HTTP API.

    ``settings``: a :class:`LokiSettings`, any
    :class:`~correlator.http.HttpSettings`, or a URL; the keyword options
    override its fields. ``service_label`` is the stream label naming the
    service (``service_name`` for OTLP and most agents). ``page_size`` bounds
    one request (Loki refuses more than ``max_entries_limit_per_query``, 5000
    by default).
    """

    Settings = LokiSettings
    display_name = "Loki"
    name = "loki"
    local = False
    """Talks to a server: ``source_timeout`` bounds each call."""

    def __init__(
        self,
        settings: HttpSettings | str,
        client: httpx.Client | None = None,
        *,
        service_label: str | None = None,
        page_size: int | None = None,
        backend: HttpBackend | None = None,
    ) -> None:
        own = LokiSettings.adopt(
            settings,
            self.name,
            self.display_name,
            service_label=service_label,
            page_size=None if page_size is None else max(1, min(page_size, 5000)),
        )
        self.settings = own
        self.name = own.name
        self.http = backend or HttpBackend(own, client)
        self.service_label = label_name(own.service_label)
        self.page_size = own.page_size

    def close(self) -> None:
        """Close the HTTP client if the adapter built it."""
        self.http.close()

    def bind(self, alert: Alert) -> Self:
        """Itself: every call says what it reads."""
        return self

    # -- queries ---------------------------------------------------------------------

    def selector(self, services: Sequence[str] | None) -> str:
        """A stream selector for ``services`` (all services when ``None``)."""
        lbl = self.service_label
        if not services:
            return f'{{{lbl}=~".+"}}'
        if len(services) == 1:
            return f"{{{lbl}={logql_string(services[0])}}}"
        return f"{{{lbl}=~{promql_regex(services)}}}"

    def level_filter(self, min_severity: int) -> str:
        """A label filter keeping lines at or above ``min_severity``, in any of the shapes.

        ``level`` (push stream label), ``severity_text`` (OTLP structured
        metadata) and ``detected_level`` (Loki's own detection) are all tried.
        """
        words = sorted(w for w, n in LEVELS.items() if n >= min_severity)
        regex = logql_string("(?i)" + "|".join(words))
        return " or ".join(f"{k}=~{regex}" for k in ("level", "severity_text", "detected_level"))

    def error_query(self, services: Sequence[str] | None, min_severity: int = 17) -> str:
        """The LogQL that :meth:`logs` sends."""
        return f"{self.selector(services)} | {self.level_filter(min_severity)}"

    # -- raw API ----------------------------------------------------------------------

    def _data(self, path: str, params: Mapping[str, Any], **kwargs: Any) -> Any:
        body = self.http.get_json(path, params, **kwargs)
        if not isinstance(body, dict) or body.get("status") not in ("success", None):
            raise SourceError(
                f"{self.http.where(path)}: unexpected answer "
                f"{self.http.excerpt(json.dumps(body))!r}; is this Loki's API?"
            )
        return body.get("data")

    def query_range(
        self,
        query: str,
        start: float,
        end: float,
        *,
        limit: int = 100,
        direction: str | None = "backward",
        categorize: bool = True,
        end_ns: int | None = None,
    ) -> list[LogEntry]:
        """A log query; entries flattened over streams, sorted by time (newest first if backward)."""
        params: dict[str, Any] = {
            "query": query,
            "start": _ns(start),
            "end": str(end_ns) if end_ns is not None else _ns(end),
            "limit": limit,
        }
        if direction:
            params["direction"] = direction
        data = self._data(
            "/loki/api/v1/query_range", params, headers=_CATEGORIZE if categorize else None
        )
        if not isinstance(data, dict) or data.get("resultType") != "streams":
            kind = data.get("resultType") if isinstance(data, dict) else None
            raise SourceError(
                f"Loki at {self.settings.public_url}: {query!r} returned {kind!r}, not log streams"
            )
        entries = list(_entries(data.get("result") or ()))
        entries.sort(key=lambda e: e.ts_ns, reverse=direction != "forward")
        return entries

    def metric_range(
        self, query: str, start: float, end: float, step: float, *, fill: bool = True
    ) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        """A metric query as ``(labels, ts, values)`` per series, missing steps filled with 0.

        ``fill=False`` keeps only the steps Loki returned (all non-zero, L6).
        """
        step = max(step, math.ceil((end - start) / (_MAX_POINTS - 1)), 1)
        params = {"query": query, "start": _ns(start), "end": _ns(end), "step": f"{step:g}s"}
        data = self._data("/loki/api/v1/query_range", params)
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise SourceError(
                f"Loki at {self.settings.public_url}: {query!r} is not a metric query "
                "(expected a matrix)"
            )
        first = math.ceil(start / step) * step if start % step else start
        grid = np.arange(first, end + step / 2, step, dtype=np.float64)
        out = []
        for series in data.get("result") or ():
            if not fill:
                pairs = series.get("values") or ()
                out.append(
                    (
                        dict(series.get("metric") or {}),
                        np.array([float(t) for t, _ in pairs], dtype=np.float64),
                        np.array([float(v) for _, v in pairs], dtype=np.float64),
                    )
                )
                continue
            values = dict.fromkeys(grid.tolist(), 0.0)
            for ts, value in series.get("values") or ():
                values[float(ts)] = float(value)
            ts_arr = np.array(sorted(values), dtype=np.float64)
            out.append(
                (
                    dict(series.get("metric") or {}),
                    ts_arr,
                    np.array([values[t] for t in ts_arr.tolist()], dtype=np.float64),
                )
            )
        return out

    def instant(self, query: str, at: float) -> list[tuple[dict[str, str], float]]:
        """An instant metric query: ``(labels, value)`` per series."""
        data = self._data("/loki/api/v1/query", {"query": query, "time": _ns(at)})
        if not isinstance(data, dict) or data.get("resultType") != "vector":
            raise SourceError(f"Loki at {self.settings.public_url}: {query!r} gave no vector")
        return [(dict(s.get("metric") or {}), float(s["value"][1])) for s in data["result"] or ()]

    def labels(self, start: float, end: float) -> list[str]:
        """Label names seen in ``[start, end]``."""
        data = self._data("/loki/api/v1/labels", {"start": _ns(start), "end": _ns(end)})
        return list(data or [])

    def label_values(self, name: str, start: float, end: float) -> list[str]:
        """Values of label ``name`` (``[]`` for an unknown label: Loki then sends no data)."""
        path = f"/loki/api/v1/label/{label_name(name)}/values"
        return list(self._data(path, {"start": _ns(start), "end": _ns(end)}) or [])

    def series(self, match: str, start: float, end: float) -> list[dict[str, str]]:
        """Label sets of the streams (and structured metadata) matching ``match``."""
        params = {"match[]": match, "start": _ns(start), "end": _ns(end)}
        return [dict(s) for s in self._data("/loki/api/v1/series", params) or []]

    def services(self, window: Window) -> list[str]:
        """Services with logs in the window."""
        return self.label_values(self.service_label, window.baseline_start, window.end)

    # -- LogSource --------------------------------------------------------------------

    def logs(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        min_severity: int = 13,
        limit: int = 5000,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        """Lines at or above ``min_severity`` over the baseline and the window, newest first.

        The window ``[start, end]`` and the baseline ``[baseline_start, start)``
        are read separately, each paging backwards from its end, so a busy
        window cannot crowd out the baseline: the window gets half of
        ``limit``, the baseline the rest. When a period's share runs out
        before its lines do, ``attrs["warnings"]`` says which span of time was
        not read (Loki itself never says a result was cut, L5).
        """
        query = self.error_query(services, min_severity)
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        warnings: list[str] = []
        budget = max(1, (limit + 1) // 2)
        got, note = self._page(query, window.start, window.end, budget, min_severity, rows)
        warnings += [f"{note} in the window"] if note else []
        if window.baseline_start < window.start:
            rest = max(limit - got, limit // 2, 1)
            # ``end`` is exclusive: the baseline stops where the window starts.
            _, note = self._page(
                query, window.baseline_start, window.start, rest, min_severity, rows
            )
            warnings += [f"{note} before the window"] if note else []
        frame = (
            pd.DataFrame(list(rows.values()), columns=list(LOG_COLUMNS))
            if rows
            else empty_frame(LOG_COLUMNS)
        )
        if rows:
            frame["ts"] = frame["ts"].astype("float64")
            frame["severity"] = frame["severity"].astype("int64")
            frame = frame.sort_values("ts", ascending=False, kind="stable").reset_index(drop=True)
        if warnings:
            frame.attrs["warnings"] = warnings
        return frame

    def _page(
        self,
        query: str,
        start: float,
        end: float,
        budget: int,
        min_severity: int,
        rows: dict[tuple[Any, ...], dict[str, Any]],
    ) -> tuple[int, str | None]:
        """Read up to ``budget`` lines of ``[start, end)`` newest first into ``rows``.

        Returns the lines fetched and, when the budget ran out first, what was
        left unread (Loki's ``end`` is exclusive, so periods do not overlap).
        """
        end_ns = int(_ns(end))
        fetched = 0
        while fetched < budget:
            want = min(self.page_size, budget - fetched)
            page = self.query_range(query, start, end, limit=want, end_ns=end_ns)
            fetched += len(page)
            for entry in page:
                row = self._row(entry)
                if row["severity"] < min_severity:
                    continue
                key = (entry.ts_ns, row["service"], row["body"], row["trace_id"])
                rows.setdefault(key, row)
            if len(page) < want:
                return fetched, None
            # ``end`` is exclusive: the next page starts just before the oldest line seen.
            oldest = min(e.ts_ns for e in page)
            if oldest >= end_ns:
                return fetched, None
            end_ns = oldest
        if end_ns <= int(_ns(start)):
            return fetched, None
        return fetched, (
            f"Loki: log lines from {format_time(start)} to {format_time(end_ns / 1e9)} were not "
            f"read ({budget} lines, the limit, were newer)"
        )

    def log_counts(
        self, window: Window, step: float, services: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Records of every level per ``step`` bucket, service and severity (one metric query).

        ``count_over_time`` grouped by service and by every place a level may
        live (the push stream's ``level``, OTLP's ``severity_text``, Loki's
        ``detected_level``). A Loki fed both by push and by OTLP holds each
        event twice (L4); both shapes double alike, so shares are unaffected.
        """
        lbl = self.service_label
        # Whole seconds, and coarse enough for Loki's 11,000-point cap (L7): the range
        # equals the step, so every record falls in exactly one bucket.
        step = float(
            max(
                math.ceil(step),
                math.ceil((window.end - window.baseline_start) / (_MAX_POINTS - 1)),
                1,
            )
        )
        rng = f"{int(step)}s"
        query = (
            f"sum by ({lbl}, level, severity_text, detected_level) "
            f"(count_over_time({self.selector(services)} [{rng}]))"
        )
        series = self.metric_range(query, window.baseline_start, window.end, step, fill=False)
        pinned = services[0] if services and len(services) == 1 else None
        parts = []
        for labels, ts, values in series:
            service = labels.get(lbl) or pinned
            if not service or not len(ts):
                continue
            level = next(
                (labels[k] for k in ("severity_text", "level", "detected_level") if labels.get(k)),
                None,
            )
            parts.append(
                pd.DataFrame(
                    {
                        # count_over_time at t counts (t - range, t]: the bucket starts a step earlier.
                        "ts": ts - step,
                        "service": service,
                        "severity": severity_of(level),
                        "count": values,
                    }
                )
            )
        columns = ["ts", "service", "severity", "count"]
        if not parts:
            return pd.DataFrame(
                {c: pd.Series(dtype="float64" if c != "service" else object) for c in columns}
            )
        frame = pd.concat(parts, ignore_index=True)
        frame = frame[frame["count"] > 0]
        frame = frame.groupby(["ts", "service", "severity"], as_index=False).agg(
            count=("count", "sum")
        )
        frame["severity"] = frame["severity"].astype("int64")
        return frame[columns]

    def log_rates(
        self,
        window: Window,
        step: float = 60.0,
        services: Sequence[str] | None = None,
        min_severity: int | None = None,
    ) -> pd.DataFrame:
        """Lines per second per service (``SIGNAL_COLUMNS``, role ``log_rate`` or ``log_error_rate``).

        One metric query for all services. With ``min_severity`` only lines
        at or above it count (role ``log_error_rate``). Note: a Loki fed by
        both push and OTLP holds each event twice, and a metric query cannot
        tell them apart, so rates are then doubled.
        """
        sel = self.selector(services)
        if min_severity is not None:
            sel = f"{sel} | {self.level_filter(min_severity)}"
        role = "log_error_rate" if min_severity is not None else "log_rate"
        rng = f"{max(int(step), 1)}s"
        query = f"sum by ({self.service_label}) (rate({sel} [{rng}]))"
        series = self.metric_range(query, window.baseline_start, window.end, step)
        frames = []
        for labels, ts, values in series:
            service = labels.get(self.service_label)
            if not service:
                continue
            n = len(ts)
            data: dict[str, Any] = {
                c: pd.Series([None] * n, dtype="object") for c in SIGNAL_COLUMNS
            }
            data["role"] = pd.Series([role] * n, dtype="object")
            data["service"] = pd.Series([service] * n, dtype="object")
            data["ts"], data["value"] = ts, values
            frames.append(pd.DataFrame(data, columns=list(SIGNAL_COLUMNS)))
        if not frames:
            return empty_frame(SIGNAL_COLUMNS)
        return pd.concat(frames, ignore_index=True)

    def _row(self, entry: LogEntry) -> dict[str, Any]:
        labels = dict(entry.labels)
        fields: dict[str, Any] = {}
        body = entry.line
        text = entry.line.lstrip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                fields = parsed
                for key in ("msg", "message", "body"):
                    if isinstance(parsed.get(key), str):
                        body = parsed[key]
                        break

        def first(*keys: str) -> str | None:
            for key in keys:
                value = labels.get(key)
                if value in (None, ""):
                    value = fields.get(key)
                if value not in (None, ""):
                    return str(value)
            return None

        severity = severity_of(first("severity_number"))
        level = first("level", "level_extracted", "severity_text", "detected_level", "severity")
        if not severity:
            severity = severity_of(level)
        service = first(self.service_label, "service_name", "service", "app", "job") or ""
        return {
            "ts": entry.ts_ns / 1e9,
            "service": service,
            "severity": severity,
            "level": (level or _level_text(severity)).lower(),
            "body": body,
            "trace_id": _hex_id(first("trace_id", "traceid", "traceID"), 32),
            "span_id": _hex_id(first("span_id", "spanid", "spanID"), 16),
            "zone": first("cloud_availability_zone", "zone", "availability_zone"),
            "pod": first("k8s_pod_name", "pod"),
        }


def _hex_id(value: str | None, width: int) -> str | None:
    if not value:
        return None
    text = value.strip().lower()
    if all(c in "0123456789abcdef" for c in text) and len(text) <= width:
        return text.zfill(width)
    return text


def _entries(streams: Iterable[Mapping[str, Any]]) -> Iterable[LogEntry]:
    for stream in streams:
        base = {str(k): str(v) for k, v in (stream.get("stream") or {}).items()}
        for value in stream.get("values") or ():
            labels = base
            if len(value) > 2 and isinstance(value[2], dict):
                labels = dict(base)
                for part in ("structuredMetadata", "parsed"):
                    for k, v in (value[2].get(part) or {}).items():
                        if not str(k).startswith("__error"):
                            labels.setdefault(str(k), str(v))
            try:
                ts = int(value[0])
            except (TypeError, ValueError, IndexError) as err:
                raise SourceError(
                    f"Loki returned an entry without a nanosecond time: {value!r:.80}"
                ) from err
            yield LogEntry(ts_ns=ts, line=str(value[1]), labels=labels)
