"""The source interfaces every backend implements.

A backend (the scenario-bundle files, Prometheus, Loki, Tempo, Jaeger,
Alertmanager) implements one or more of these small protocols. Methods raise
:class:`SourceError` (or a subclass) when the backend fails; the collect
stage turns that into a :class:`~correlator.model.Gap`, never a crash.

Exception tree::

    CorrelatorError
     └── SourceError            a backend could not answer (down, 5xx, timeout, bad body)
          └── SourceAuthError   401/403: credentials missing or wrong
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import pandas as pd

from correlator.catalog import Catalog
from correlator.errors import CorrelatorError
from correlator.model import Alert, Window

__all__ = [
    "LOG_COUNT_COLUMNS",
    "AlertSource",
    "LogCountSource",
    "LogSource",
    "MetricResult",
    "MetricSource",
    "SourceAuthError",
    "SourceError",
    "Sources",
    "TopologySource",
    "TraceSource",
]


class SourceError(CorrelatorError):
    """A backend could not answer. The message names the backend, URL and fix."""


class SourceAuthError(SourceError):
    """The backend refused our credentials (401/403)."""


@dataclass(frozen=True)
class MetricResult:
    """What a metric source returns for one investigation (a value, not frame attributes).

    ``frame``: ``correlator.model.SIGNAL_COLUMNS`` rows. ``step``: the spacing of
    its time grid in seconds; ``interval``: the data's own sample (scrape)
    interval in seconds, learned from the data or the backend (``None`` when
    unknown). ``queries``: role -> the query text that shows it; ``links``:
    role -> a URL that graphs it; ``warnings``: what could not be read (each
    becomes a gap in the report).
    """

    frame: pd.DataFrame
    step: float
    interval: float | None = None
    queries: Mapping[str, str] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)
    warnings: Sequence[str] = field(default_factory=tuple)


@runtime_checkable
class MetricSource(Protocol):
    """Reads metric signals for catalog roles."""

    name: str

    def signals(self, catalog: Catalog, window: Window, step: float) -> pd.DataFrame:
        """All catalog roles over ``[window.baseline_start, window.end]``.

        Returns a frame with ``correlator.model.SIGNAL_COLUMNS``, aggregated by
        service (and the role's dimensions), sampled every ``step`` seconds.
        Counters come back as per-second rates, histograms as the role's
        quantile in seconds. Implementations issue a bounded number of
        requests (one per role alternative), never one per service.
        """
        ...

    def query_for(self, catalog: Catalog, role: str) -> str | None:
        """The query text that shows ``role`` (for evidence), if any."""
        ...


@runtime_checkable
class LogSource(Protocol):
    """Reads log records."""

    name: str

    def logs(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        min_severity: int = 13,
        limit: int = 5000,
    ) -> pd.DataFrame:
        """Records at or above ``min_severity`` (OTLP number) over the baseline and the window.

        Returns ``correlator.model.LOG_COLUMNS``. ``services=None`` means all.
        Records come from ``[window.baseline_start, window.end]``, so detectors
        compare like with like; when ``limit`` cuts, each period (baseline
        ``[baseline_start, start)``, window ``[start, end]``) keeps a share
        chosen without regard to content, and the frame's
        ``attrs["warnings"]`` says what was cut.
        """
        ...


#: Columns of :meth:`LogCountSource.log_counts`: bucket start (unix seconds), service,
#: OTLP severity number (0 when unknown) and the number of records.
LOG_COUNT_COLUMNS = ("ts", "service", "severity", "count")


@runtime_checkable
class LogCountSource(Protocol):
    """Optional for a log source: record counts by service and severity, info included.

    Detectors judge error *shares* from these (a traffic surge alone is not an
    error surge) without pulling every line. Implement it next to ``logs``.
    """

    name: str

    def log_counts(
        self, window: Window, step: float, services: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Records per ``step``-second bucket over ``[window.baseline_start, window.end]``.

        Returns :data:`LOG_COUNT_COLUMNS`, one row per (bucket, service,
        severity) with a non-zero count.
        """
        ...


@runtime_checkable
class TraceSource(Protocol):
    """Reads spans."""

    name: str

    def spans(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        limit: int = 200,
    ) -> pd.DataFrame:
        """Spans of traces over the baseline and the window, each period sampled alike.

        Returns ``correlator.model.SPAN_COLUMNS``. ``limit`` bounds the traces
        of each period (baseline ``[baseline_start, start)``, window ``[start,
        end]``). What a period keeps must not depend on outcome unless the
        other period is selected the same way (the same searches with the same
        bounds), so that error shares and latency quantiles compare like with
        like.
        """
        ...


@runtime_checkable
class TopologySource(Protocol):
    """Reads the service graph."""

    name: str

    def edges(self, window: Window) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """``([(caller, callee), ...], {node: kind})`` for the window."""
        ...


@runtime_checkable
class AlertSource(Protocol):
    """Lists and resolves alerts."""

    name: str

    def alerts(self) -> list[Alert]:
        """Every alert this source can investigate."""
        ...

    def alert(self, fingerprint: str) -> Alert | None:
        """The alert with this fingerprint (a unique prefix is fine), or ``None``."""
        ...


@dataclass
class Sources:
    """The backends one investigation reads, by kind (a backend may appear in several lists)."""

    metrics: list[MetricSource] = field(default_factory=list)
    logs: list[LogSource] = field(default_factory=list)
    traces: list[TraceSource] = field(default_factory=list)
    topology: list[TopologySource] = field(default_factory=list)
    alerts: list[AlertSource] = field(default_factory=list)

    @classmethod
    def from_backends(cls, *backends: object) -> Sources:
        """Sort backends into lists by the protocols they implement."""
        out = cls()
        for b in backends:
            if isinstance(b, MetricSource):
                out.metrics.append(b)
            if isinstance(b, LogSource):
                out.logs.append(b)
            if isinstance(b, TraceSource):
                out.traces.append(b)
            if isinstance(b, TopologySource):
                out.topology.append(b)
            if isinstance(b, AlertSource):
                out.alerts.append(b)
        return out
