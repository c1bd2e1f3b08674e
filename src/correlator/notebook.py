"""The notebook layer: an investigation's parts as DataFrames, plots and rich display.

:class:`~correlator.model.Investigation` is plain data and knows nothing of
presentation. This module depends on it, never the reverse:

- Functions (:func:`findings_frame`, :func:`anomalies_frame`, ...) take an
  ``Investigation`` and return a new :class:`pandas.DataFrame` (never a view
  of the investigation's own frames), with a ``time`` column (UTC datetimes)
  beside the unix-seconds column so tables read well in Jupyter.
- :class:`NotebookInvestigation` is the same data with those functions, the
  plots and the HTML page as methods, and ``_repr_html_`` for Jupyter. It is
  what :func:`investigate` (exported as ``correlator.investigate``) returns;
  :meth:`NotebookInvestigation.of` wraps any other investigation (from
  :func:`correlator.api.investigate`, the engine or the service store).

>>> import correlator
>>> inv = correlator.investigate("4f1c0e9a")
>>> inv                                  # a summary table in Jupyter
>>> inv.anomalies_frame()                # what moved, earliest first
>>> inv.log_lines("checkout", min_severity=17)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import fields
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from correlator.model import Alert, Investigation

if TYPE_CHECKING:
    from correlator.config import Settings

__all__ = [
    "NotebookInvestigation",
    "anomalies_frame",
    "evidence_frame",
    "findings_frame",
    "investigate",
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


class NotebookInvestigation(Investigation):
    """An :class:`~correlator.model.Investigation` with notebook conveniences.

    The same fields (it *is* an ``Investigation``: reports, ``to_json()`` and
    ``isinstance`` work unchanged); the methods below call this module's
    functions, :mod:`correlator.plots` and :mod:`correlator.report_html`, so
    the model itself imports none of them.
    """

    @classmethod
    def of(cls, inv: Investigation) -> NotebookInvestigation:
        """``inv`` with notebook methods (its data is shared, not copied)."""
        if isinstance(inv, cls):
            return inv
        return cls(**{f.name: getattr(inv, f.name) for f in fields(inv)})

    def _repr_html_(self) -> str:
        """Rich display in Jupyter: the answer, the ranking, impact and gaps."""
        return repr_html(self)

    def findings_frame(self) -> pd.DataFrame:
        """The findings as a table, best first (:func:`findings_frame`)."""
        return findings_frame(self)

    def anomalies_frame(self, service: str | None = None) -> pd.DataFrame:
        """Anomalies, earliest onset first, with onset times and lead before the alert."""
        return anomalies_frame(self, service)

    def signals_frame(
        self, service: str | None = None, role: str | None = None, around: bool = True
    ) -> pd.DataFrame:
        """Collected signals around the window, by service and role."""
        return signals_frame(self, service, role, around)

    def log_lines(
        self,
        service: str | None = None,
        contains: str | None = None,
        min_severity: int | None = None,
        window_only: bool = True,
    ) -> pd.DataFrame:
        """Matching log records in the window, oldest first."""
        return log_lines(self, service, contains, min_severity, window_only)

    def span_frame(
        self, service: str | None = None, errors_only: bool = False, trace_id: str | None = None
    ) -> pd.DataFrame:
        """Spans, oldest first: by service, failed only, or one trace."""
        return span_frame(self, service, errors_only, trace_id)

    def evidence_frame(self, finding: int = 0) -> pd.DataFrame:
        """The evidence of one finding (default: the top one) as a table."""
        return evidence_frame(self, finding)

    # matplotlib is the heavy part: plots (and the page, which embeds them) load on use.
    def plot_signals(self, service: str | None = None, roles: list[str] | None = None) -> Any:
        """A matplotlib Figure: a suspect's signals, baseline band, onsets, alert time."""
        from correlator.plots import plot_signals

        return plot_signals(self, service, roles)

    def plot_topology(self) -> Any:
        """A matplotlib Figure: the service graph, root cause and blast radius highlighted."""
        from correlator.plots import plot_topology

        return plot_topology(self)

    def plot_evidence(self, finding: int = 0) -> Any:
        """A matplotlib Figure: the evidence of one finding as a table."""
        from correlator.plots import plot_evidence

        return plot_evidence(self, finding)

    def to_html(self) -> str:
        """The self-contained HTML report (see :mod:`correlator.report_html`)."""
        from correlator.report_html import render_html

        return render_html(self)


def investigate(
    target: str | Alert | Mapping[str, Any],
    source: str | Path | None = None,
    config: str | Path | Settings | None = None,
) -> NotebookInvestigation:
    """:func:`correlator.api.investigate`, with notebook methods and rich display."""
    from correlator.api import investigate as run

    return NotebookInvestigation.of(run(target, source, config))


def _show_every_investigation_richly() -> None:
    """In IPython, display plain :class:`Investigation` objects as :func:`repr_html` does.

    Only when IPython is already running (never imported here): then an
    investigation from :func:`correlator.api.investigate`, the engine or the
    service store shows as richly as a :class:`NotebookInvestigation`.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(Investigation, repr_html)


_show_every_investigation_richly()
