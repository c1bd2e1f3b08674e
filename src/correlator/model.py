"""The domain model shared by every stage of an investigation.

Data flows forward (see docs/design.md): an :class:`Alert` is resolved, a
:class:`Window` is chosen, sources fill :class:`Telemetry`, detection yields
anomalies, patterns yield :class:`Finding` objects, and the
:class:`Investigation` carries all of it to the report.

Frames (pandas DataFrames) have fixed columns, listed in the ``*_COLUMNS``
constants below, so every source (bundle files, Prometheus, Loki, ...) hands
the engine the same shape.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ANOMALY_COLUMNS",
    "BUILTIN_CAUSES",
    "CAUSE_ALIASES",
    "LOG_COLUMNS",
    "SIGNAL_COLUMNS",
    "SIGNAL_TEXT_COLUMNS",
    "SPAN_COLUMNS",
    "Alert",
    "Evidence",
    "Finding",
    "Gap",
    "Investigation",
    "Outcome",
    "Telemetry",
    "Window",
    "canonical_cause",
    "cause_matches",
    "compact_signals",
    "empty_frame",
    "parse_time",
]

#: Long-format metric frame every metrics source returns.
#: ``role`` is a catalog role (``request_rate``, ``cpu``...), ``service`` the
#: service (or database) the series belongs to, ``ts`` unix seconds (float),
#: ``value`` a float. Dimension columns are ``None`` when a role lacks them:
#: ``peer`` (the other end of an edge: for edge roles ``service`` is the callee
#: and ``peer`` the caller), ``pod``, ``node``, ``zone``, ``version``, and
#: ``detail`` (any other distinguishing label value, e.g. a reason or state).
SIGNAL_COLUMNS = (
    "role",
    "service",
    "ts",
    "value",
    "peer",
    "pod",
    "node",
    "zone",
    "version",
    "detail",
)

#: The text columns of ``SIGNAL_COLUMNS``. In the frame the engine works on
#: (see :func:`compact_signals`) they are categoricals sharing one dtype, and a
#: missing dimension is NaN.
SIGNAL_TEXT_COLUMNS = ("role", "service", "peer", "pod", "node", "zone", "version", "detail")

#: One row per span. ``start`` unix seconds, ``duration`` seconds, ``kind`` the
#: OTLP SpanKind integer (1 internal, 2 server, 3 client, 4 producer, 5 consumer),
#: ``status`` the OTLP status code (0 unset, 1 ok, 2 error). ``peer`` names the
#: callee of a client span when known (``peer.service``, ``server.address``,
#: ``db.name``), ``db_system`` is set on database calls, ``error`` holds the
#: exception type/message or status message when the span failed.
SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "service",
    "name",
    "kind",
    "start",
    "duration",
    "status",
    "peer",
    "db_system",
    "zone",
    "pod",
    "version",
    "error",
)

#: One row per log record. ``ts`` unix seconds, ``severity`` the OTLP severity
#: number (9 info, 13 warn, 17 error, 21 fatal), ``level`` the text.
LOG_COLUMNS = ("ts", "service", "severity", "level", "body", "trace_id", "span_id", "zone", "pod")

#: The cause words of the built-in patterns: the six the project began with, and three
#: that real incidents often have (CPU saturation, network delay, a code fault).
BUILTIN_CAUSES: tuple[str, ...] = (
    "deployment",
    "db_overload",
    "az_failure",
    "memory_leak",
    "dependency_failure",
    "traffic_spike",
    "cpu_saturation",
    "network_delay",
    "code_fault",
)

#: Other words for built-in causes (older scenario bundles use them in ``truth``).
CAUSE_ALIASES: dict[str, str] = {
    "cpu_contention": "cpu_saturation",
    "code_exception": "code_fault",
}

#: Causes for which naming the right service with cause ``unknown`` also counts as right:
#: every cause but the six the project began with (whose patterns must name them).
_UNKNOWN_OK_BEYOND = BUILTIN_CAUSES[:6]


def canonical_cause(word: str) -> str:
    """The built-in cause a word means (itself when it is one or has no alias)."""
    return CAUSE_ALIASES.get(word, word)


def cause_matches(found: str, truth: str) -> bool:
    """Whether a finding's cause is right for a true cause (the scoring rule).

    The same cause (aliases included) is right; so is ``unknown`` for a fault outside
    the six original built-in causes (the service is what must be named).
    """
    want = canonical_cause(truth)
    if canonical_cause(found) == want:
        return True
    return found == "unknown" and want not in _UNKNOWN_OK_BEYOND


#: The one anomaly table every detector (metrics, spans, logs, plugins) fills; see
#: ``correlator.detector``. ``service`` is who the anomaly is about; ``role`` what
#: it means (a role of ``correlator.roles``, or ``series`` for a series no role
#: knows); ``peer`` the other end of a call (the caller on ``edge_*`` rows, the
#: callee on ``client_*`` rows) or ``""``; ``modality`` ``metrics``, ``spans`` or
#: ``logs``; ``signal`` names the series, operation or log template; ``onset`` and
#: ``end`` unix seconds; ``score`` the strength on one comparable scale (a
#: sustained robust z: the deviation in units of the series' own baseline noise);
#: ``direction`` ``up``/``down``; ``baseline`` and ``peak`` values in the signal's
#: unit; ``evidence`` one line a person can read.
ANOMALY_COLUMNS = (
    "service",
    "role",
    "onset",
    "end",
    "score",
    "direction",
    "baseline",
    "peak",
    "peer",
    "modality",
    "signal",
    "evidence",
)


def empty_frame(columns: tuple[str, ...]) -> pd.DataFrame:
    """An empty frame with the given columns (object dtype)."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def _is_compact(frame: pd.DataFrame) -> bool:
    if not all(c in frame.columns for c in SIGNAL_COLUMNS):
        return False
    first = frame["role"].dtype
    return (
        isinstance(first, pd.CategoricalDtype)
        and all(frame[c].dtype == first for c in SIGNAL_TEXT_COLUMNS)
        and all(frame[c].dtype == np.float64 for c in ("ts", "value"))
    )


def compact_signals(frame: pd.DataFrame) -> pd.DataFrame:
    """A ``SIGNAL_COLUMNS`` frame in the compact form the engine works on.

    The text columns (:data:`SIGNAL_TEXT_COLUMNS`) become categoricals sharing
    one dtype whose categories are every label value of any of them and ``""``
    (so a column fills with the empty string), sorted:
    a row costs a few bytes instead of eight pointers, comparisons run on
    integer codes, and since the dtype is shared the columns still compare,
    merge and fill into one another as the text they hold (groupby and sort
    order are the text's order). Missing values are NaN; ``ts`` and
    ``value`` are float64. A frame already in this form is returned as it is.
    """
    if _is_compact(frame):
        return frame
    codes: dict[str, Any] = {}
    uniques: dict[str, pd.Index] = {}
    for c in SIGNAL_TEXT_COLUMNS:
        if c in frame.columns:
            k, u = pd.factorize(frame[c].to_numpy(dtype=object))
            codes[c], uniques[c] = k, pd.Index([str(x) for x in u], dtype=object)
        else:
            codes[c], uniques[c] = np.full(len(frame), -1), pd.Index([], dtype=object)
    vocab = sorted(set().union({""}, *(set(u) for u in uniques.values())))
    dtype = pd.CategoricalDtype(pd.Index(vocab, dtype=object))
    data: dict[str, Any] = {}
    for c in SIGNAL_TEXT_COLUMNS:
        to_vocab = np.append(dtype.categories.get_indexer(uniques[c]), -1)  # -1 (NA) stays
        data[c] = pd.Categorical.from_codes(to_vocab[codes[c]], dtype=dtype)
    for c in ("ts", "value"):
        data[c] = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64)
    return pd.DataFrame(data, index=frame.index, columns=list(SIGNAL_COLUMNS))


def parse_time(value: str | float | int | datetime) -> float:
    """Parse RFC 3339 text, a datetime or unix seconds into unix seconds."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        dt = value
    else:
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        # fromisoformat takes at most microseconds; trim nanosecond fractions
        # but keep any offset that follows them.
        if "." in text:
            head, _, rest = text.partition(".")
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = f"{head}.{rest[:digits][:6]}{rest[digits:]}"
        dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def format_time(ts: float) -> str:
    """Unix seconds as RFC 3339 UTC text (``2026-03-02T10:31:00Z``)."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    if dt.microsecond:
        return dt.isoformat().replace("+00:00", "Z")
    # Not strftime("%Y"): glibc does not zero-pad years below 1000, and
    # "1-01-01T..." cannot be parsed back.
    return f"{dt.year:04d}" + dt.strftime("-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Alert:
    """An alert as Alertmanager's API v2 (or a webhook v4 payload) holds it."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: float = 0.0
    ends_at: float | None = None
    status: str = "firing"
    generator_url: str = ""
    source: str = ""

    @property
    def name(self) -> str:
        """The ``alertname`` label, or ``""``."""
        return self.labels.get("alertname", "")

    @property
    def service(self) -> str | None:
        """The service the alert names, from the usual labels."""
        for key in ("service", "service_name", "job", "app", "deployment", "container"):
            if self.labels.get(key):
                return self.labels[key]
        return None

    def to_json(self) -> dict[str, Any]:
        """The alert as JSON-ready data (the report contract's ``alert``)."""
        return {
            "fingerprint": self.fingerprint,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": format_time(self.starts_at),
            "endsAt": format_time(self.ends_at) if self.ends_at else None,
            "status": self.status,
            "generatorURL": self.generator_url,
        }


@dataclass(frozen=True)
class Window:
    """The investigated span of time, and the baseline before it (unix seconds)."""

    start: float
    end: float
    baseline_start: float

    @property
    def duration(self) -> float:
        """Length of the investigated span in seconds."""
        return self.end - self.start


class Outcome(enum.StrEnum):
    """What an adapter call or a pattern evaluation came to, as a value."""

    OK = "ok"
    NO_DATA = "no_data"
    ERROR = "error"
    NOT_EVALUATED = "not_evaluated"


@dataclass(frozen=True)
class Gap:
    """Something the investigation could not see, and why."""

    source: str
    why: str
    signal: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"source": self.source, "why": self.why}
        if self.signal:
            out["signal"] = self.signal
        return out


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence a person can act on.

    ``kind`` is one of ``metric``, ``log``, ``trace``, ``deploy``,
    ``topology``, ``zone`` (free text is allowed for plugins).
    """

    kind: str
    summary: str
    service: str | None = None
    signal: str | None = None
    onset: float | None = None
    query: str | None = None
    url: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form; ``None`` fields are left out."""
        out: dict[str, Any] = {"kind": self.kind, "summary": self.summary}
        for key in ("service", "signal", "query", "url"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.onset is not None:
            out["onset"] = format_time(self.onset)
        if self.data:
            out["data"] = self.data
        return out


@dataclass(frozen=True)
class Finding:
    """A probable cause: a service, a cause word, a calibrated confidence."""

    service: str
    cause: str
    confidence: float
    evidence: tuple[Evidence, ...] = ()
    pattern: str = ""
    score: float = 0.0
    features: dict[str, float] = field(default_factory=dict)
    onset: float | None = None
    zone: str | None = None
    covers: tuple[str, ...] = ()
    """Other services this finding accounts for (a zone's affected services): their
    standing as a root service counts for it too."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the report contract's ``findings[]``)."""
        out: dict[str, Any] = {
            "service": self.service,
            "cause": self.cause,
            "confidence": round(float(self.confidence), 4),
            "pattern": self.pattern,
            "evidence": [e.to_json() for e in self.evidence],
        }
        if self.onset is not None:
            out["onset"] = format_time(self.onset)
        if self.zone:
            out["zone"] = self.zone
        return out


@dataclass
class Telemetry:
    """What the collect stage gathered (frames with the ``*_COLUMNS`` shapes)."""

    signals: pd.DataFrame = field(default_factory=lambda: empty_frame(SIGNAL_COLUMNS))
    logs: pd.DataFrame = field(default_factory=lambda: empty_frame(LOG_COLUMNS))
    spans: pd.DataFrame = field(default_factory=lambda: empty_frame(SPAN_COLUMNS))
    log_counts: pd.DataFrame = field(
        default_factory=lambda: empty_frame(("ts", "service", "severity", "count"))
    )
    """Log records per time bucket, service and severity (info included), where a log
    source can count them (``correlator.sources.LogCountSource``)."""
    sample_interval: float | None = None
    """The metrics' own sample (scrape) interval in seconds, when a source learned it."""
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    """Declared/discovered topology edges: ``(caller, callee, kind_of_callee)``."""
    node_kinds: dict[str, str] = field(default_factory=dict)
    """Node id -> ``service``/``database``/``cache``/``queue``/``external``."""
    queries: dict[str, str] = field(default_factory=dict)
    """Role -> the query text that produced it (for evidence)."""
    links: dict[str, str] = field(default_factory=dict)
    """Role -> a URL that shows the query in the backend's UI."""


@dataclass
class Investigation:
    """The result of one investigation: plain data that every report renders.

    Rendering depends on this class, never the reverse: :mod:`correlator.report`
    (text, Markdown, JSON), :mod:`correlator.report_html`, :mod:`correlator.plots`
    and :mod:`correlator.notebook`, whose
    :class:`~correlator.notebook.NotebookInvestigation` (what
    ``correlator.investigate`` returns) adds the notebook methods and rich display.
    """

    alert: Alert
    window: Window
    findings: list[Finding]
    blast_radius: list[str]
    gaps: list[Gap]
    timings: dict[str, float]
    telemetry: Telemetry = field(default_factory=Telemetry)
    anomalies: pd.DataFrame = field(default_factory=lambda: empty_frame(ANOMALY_COLUMNS))
    topology: Any = None
    """A ``networkx.DiGraph`` (caller -> callee)."""
    not_evaluated: list[dict[str, str]] = field(default_factory=list)
    """Patterns that could not be evaluated, with why."""

    def to_json(self) -> dict[str, Any]:
        """The JSON output contract (see docs/json-output.md)."""
        return {
            "alert": self.alert.to_json(),
            "window": {
                "start": format_time(self.window.start),
                "end": format_time(self.window.end),
            },
            "findings": [f.to_json() for f in self.findings],
            "blast_radius": list(self.blast_radius),
            "gaps": [g.to_json() for g in self.gaps],
            "not_evaluated": list(self.not_evaluated),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
