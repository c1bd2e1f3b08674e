"""Notebook helpers: an investigation's parts as DataFrames, and its rich display.

Every function takes an :class:`~correlator.model.Investigation` and returns
a new :class:`pandas.DataFrame` (never a view of the investigation's own
frames), with a ``time`` column (UTC datetimes) beside the unix-seconds
column so tables read well in Jupyter. The same functions back the
``Investigation`` methods (``inv.findings_frame()``, ``inv.log_lines()``...)
and ``Investigation._repr_html_``.

>>> import correlator
>>> inv = correlator.investigate("4f1c0e9a")
>>> inv                                  # a summary table in Jupyter
>>> inv.anomalies_frame()                # what moved, earliest first
>>> inv.log_lines("checkout", min_severity=17)
"""

from __future__ import annotations

from html import escape

import pandas as pd

from correlator.model import Investigation

__all__ = [
    "anomalies_frame",
    "evidence_frame",
    "findings_frame",
    "log_lines",
    "repr_html",
    "signals_frame",
    "span_frame",
]


def _time(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(pd.to_numeric(ts, errors="coerce"), unit="s", utc=True)


def findings_frame(inv: Investigation) -> pd.DataFrame:
    """One row per finding, best first: rank, service, cause, confidence, onset, evidence."""
    rows = [
        {
            "rank": rank,
            "service": f.service,
            "cause": f.cause,
            "confidence": round(float(f.confidence), 4),
            "onset": f.onset,
            "zone": f.zone,
            "pattern": f.pattern,
            "evidence": len(f.evidence),
            "main_evidence": f.evidence[0].summary if f.evidence else "",
        }
        for rank, f in enumerate(inv.findings, 1)
    ]
    cols = ["rank", "service", "cause", "confidence", "onset", "zone", "pattern", "evidence"]
    df = pd.DataFrame(rows, columns=[*cols, "main_evidence"])
    df.insert(5, "onset_time", _time(df["onset"]))
    return df


def anomalies_frame(inv: Investigation, service: str | None = None) -> pd.DataFrame:
    """Detected anomalies, earliest onset first, with ``onset_time`` and ``lead_s``.

    ``lead_s`` is how many seconds before the alert fired the anomaly began
    (negative: after). Causes move before symptoms, so the top rows matter most.
    """
    df = inv.anomalies.copy()
    if service is not None:
        df = df[df["service"] == service]
    df = df.sort_values("onset", na_position="last").reset_index(drop=True)
    onset = pd.to_numeric(df["onset"], errors="coerce")
    df.insert(3, "onset_time", _time(df["onset"]))
    df.insert(4, "lead_s", inv.alert.starts_at - onset)
    return df


def signals_frame(
    inv: Investigation,
    service: str | None = None,
    role: str | None = None,
    around: bool = True,
) -> pd.DataFrame:
    """The collected signals (long format), filtered by service and role.

    With ``around`` (the default) only the investigated window and as much
    baseline again before it; ``around=False`` returns everything collected.
    """
    df = inv.telemetry.signals
    if service is not None:
        df = df[df["service"] == service]
    if role is not None:
        df = df[df["role"] == role]
    if around:
        start = max(inv.window.baseline_start, inv.window.start - inv.window.duration)
        df = df[(df["ts"] >= start) & (df["ts"] <= inv.window.end)]
    df = df.sort_values(["role", "service", "ts"]).reset_index(drop=True)
    df.insert(3, "time", _time(df["ts"]))
    return df


def log_lines(
    inv: Investigation,
    service: str | None = None,
    contains: str | None = None,
    min_severity: int | None = None,
    window_only: bool = True,
) -> pd.DataFrame:
    """Log records, oldest first: by service, text (case-insensitive) and severity.

    ``min_severity`` is an OTLP severity number (9 info, 13 warn, 17 error).
    """
    df = inv.telemetry.logs
    if service is not None:
        df = df[df["service"] == service]
    if contains:
        df = df[df["body"].astype(str).str.contains(contains, case=False, regex=False)]
    if min_severity is not None:
        df = df[pd.to_numeric(df["severity"], errors="coerce") >= min_severity]
    if window_only:
        df = df[(df["ts"] >= inv.window.start) & (df["ts"] <= inv.window.end)]
    df = df.sort_values("ts").reset_index(drop=True)
    df.insert(1, "time", _time(df["ts"]))
    return df


def span_frame(
    inv: Investigation,
    service: str | None = None,
    errors_only: bool = False,
    trace_id: str | None = None,
) -> pd.DataFrame:
    """Spans, oldest first: by service, failed only (OTLP status 2), or one trace."""
    df = inv.telemetry.spans
    if service is not None:
        df = df[df["service"] == service]
    if errors_only:
        df = df[pd.to_numeric(df["status"], errors="coerce") == 2]
    if trace_id is not None:
        df = df[df["trace_id"] == trace_id]
    df = df.sort_values("start").reset_index(drop=True)
    df.insert(6, "time", _time(df["start"]))
    return df


def evidence_frame(inv: Investigation, finding: int = 0) -> pd.DataFrame:
    """The evidence of one finding (default: the top one) as a table."""
    cols = ["kind", "summary", "service", "signal", "onset", "onset_time", "query", "url"]
    if finding >= len(inv.findings):
        return pd.DataFrame(columns=cols)
    rows = [
        {
            "kind": e.kind,
            "summary": e.summary,
            "service": e.service,
            "signal": e.signal,
            "onset": e.onset,
            "query": e.query,
            "url": e.url,
        }
        for e in inv.findings[finding].evidence
    ]
    df = pd.DataFrame(rows, columns=[c for c in cols if c != "onset_time"])
    df.insert(5, "onset_time", _time(df["onset"]))
    return df


def repr_html(inv: Investigation, top: int = 5) -> str:
    """A compact HTML summary for Jupyter: the answer, the ranking, impact and gaps."""
    a = inv.alert
    head = (
        f"<p><b>{escape(a.name or 'alert')}</b> <code>{escape(a.fingerprint)}</code>, "
        f"fired {escape(str(_time(pd.Series([a.starts_at]))[0]))}</p>"
    )
    if not inv.findings:
        return head + "<p>No probable cause found: nothing deviated from its baseline.</p>"
    f = inv.findings[0]
    verdict = (
        f"<p>Likely root cause: <b style='color:#c0392b'>{escape(f.service)}</b>, "
        f"cause <b>{escape(f.cause)}</b>, confidence <b>{100 * f.confidence:.0f}%</b></p>"
    )
    table = findings_frame(inv).head(top)[
        ["rank", "service", "cause", "confidence", "main_evidence"]
    ]
    parts = [head, verdict, table.to_html(index=False, escape=True)]
    if inv.blast_radius:
        parts.append(f"<p>Blast radius: {escape(', '.join(inv.blast_radius))}</p>")
    if inv.gaps:
        gaps = "; ".join(f"{g.source}: {g.why}" for g in inv.gaps)
        parts.append(f"<p>Could not see: {escape(gaps)}</p>")
    parts.append(
        "<p style='color:#5d6d7e'>More: <code>inv.anomalies_frame()</code>, "
        "<code>inv.plot_signals()</code>, <code>inv.plot_topology()</code>, "
        "<code>inv.log_lines()</code>, <code>inv.span_frame()</code>, "
        "<code>inv.evidence_frame()</code>, <code>inv.to_html()</code></p>"
    )
    return "<div class='correlator-investigation'>" + "".join(parts) + "</div>"
