"""The source interfaces every backend implements: the whole adapter contract.

A backend (the scenario-bundle files, Prometheus, Loki, Tempo, Jaeger,
Alertmanager, or a third-party adapter) implements one or more of these small
protocols, each in full: every capability the engine uses is declared here
(``local``, :meth:`Source.bind`, the ``deadline`` keyword, and for metrics the
:class:`MetricResult` value with its queries, links and warnings), and the
engine uses nothing else. Methods raise :class:`SourceError` (or a subclass)
when the backend fails; the collect stage turns that into a
:class:`~correlator.model.Gap`, never a crash.

Sources keep no per-call state: one instance serves concurrent
investigations (the service's worker threads), each through
:meth:`Sources.bind`.

Exception tree::

    CorrelatorError
     └── SourceError            a backend could not answer (down, 5xx, timeout, bad body)
          └── SourceAuthError   401/403: credentials missing or wrong
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

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
    "RecordingSource",
    "SampleIntervalSource",
    "Source",
    "SourceAuthError",
    "SourceError",
    "Sources",
    "TopologySource",
    "TraceSource",
    "describe_non_source",
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
class Source(Protocol):
    """What every data source declares, whatever it reads.

    ``name`` names it in gaps and messages (the ``backends:`` key it was
    configured under). ``local`` says it reads files on this machine: the
    engine then bounds its calls by the investigation's deadline only, not by
    ``source_timeout`` (a first parse of a big bundle takes longer than a
    network answer should). :meth:`bind` gives the source one investigation
    reads: a backend serving many incidents (the bundle backend) returns a
    view of the alert's incident, any other returns itself. Sources keep no
    state between calls and are shared across threads; binding never changes
    the source it is called on.
    """

    name: str
    local: bool

    def bind(self, alert: Alert) -> Self:
        """This source as one investigation of ``alert`` reads it (often ``self``)."""
        ...

    def close(self) -> None:
        """Release what the source holds (HTTP connections); may do nothing."""
        ...


@runtime_checkable
class MetricSource(Source, Protocol):
    """Reads metric signals for catalog roles."""

    def signals(
        self, catalog: Catalog, window: Window, step: float, *, deadline: float | None = None
    ) -> MetricResult:
        """All catalog roles over ``[window.baseline_start, window.end]``.

        ``MetricResult.frame`` has ``correlator.model.SIGNAL_COLUMNS``,
        aggregated by service (and the role's dimensions), sampled every
        ``MetricResult.step`` seconds (``step`` or coarser). Counters come back
        as per-second rates, histograms as the role's quantile in seconds.
        Implementations issue a bounded number of requests (one per role
        alternative), never one per service, and fill ``queries`` (and
        ``links`` when the backend has a UI) for evidence.

        ``deadline`` is a :func:`time.monotonic` time: a source that can stop
        early returns what arrived by then and names what did not in
        ``warnings``; one that cannot may ignore it (the engine stops waiting
        at the deadline anyway).
        """
        ...


@runtime_checkable
class SampleIntervalSource(Source, Protocol):
    """Optional for a metric source: the data's own sample (scrape) interval.

    The engine asks before collecting, to choose a query step that follows the
    data (1 s to 5 min samples) rather than a fixed one.
    """

    def interval(self, window: Window, catalog: Catalog | None = None) -> float | None:
        """The sample interval in seconds of the data around ``window``, ``None`` if unknown."""
        ...


@runtime_checkable
class RecordingSource(Source, Protocol):
    """Optional for a local source holding a recording: where its data ends.

    A recording has nothing after its last sample. Read past it, every
    counter's rate falls to zero as its samples leave the range (as Prometheus
    shows for a target that vanished): a change of the recording, not of the
    system. The engine ends the window there.
    """

    def data_end(self, window: Window | None = None) -> float | None:
        """The time of the last metric sample of the data around ``window``, or ``None``."""
        ...


@runtime_checkable
class LogSource(Source, Protocol):
    """Reads log records."""

    def logs(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        min_severity: int = 13,
        limit: int = 5000,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        """Records at or above ``min_severity`` (OTLP number) over the baseline and the window.

        Returns ``correlator.model.LOG_COLUMNS``. ``services=None`` means all.
        ``deadline`` as for :meth:`MetricSource.signals`.
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
class LogCountSource(Source, Protocol):
    """Optional for a log source: record counts by service and severity, info included.

    Detectors judge error *shares* from these (a traffic surge alone is not an
    error surge) without pulling every line. Implement it next to ``logs``.
    """

    def log_counts(
        self, window: Window, step: float, services: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Records per ``step``-second bucket over ``[window.baseline_start, window.end]``.

        Returns :data:`LOG_COUNT_COLUMNS`, one row per (bucket, service,
        severity) with a non-zero count.
        """
        ...


@runtime_checkable
class TraceSource(Source, Protocol):
    """Reads spans."""

    def spans(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        limit: int = 200,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        """Spans of traces over the baseline and the window, each period sampled alike.

        Returns ``correlator.model.SPAN_COLUMNS``. ``limit`` bounds the traces
        of each period (baseline ``[baseline_start, start)``, window ``[start,
        end]``). What a period keeps must not depend on outcome unless the
        other period is selected the same way (the same searches with the same
        bounds), so that error shares and latency quantiles compare like with
        like. ``deadline`` as for :meth:`MetricSource.signals`.
        """
        ...


@runtime_checkable
class TopologySource(Source, Protocol):
    """Reads the service graph."""

    def edges(
        self, window: Window, *, deadline: float | None = None
    ) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """``([(caller, callee), ...], {node: kind})`` for the window.

        ``deadline`` as for :meth:`MetricSource.signals`.
        """
        ...


@runtime_checkable
class AlertSource(Protocol):
    """Lists and resolves alerts (no side effects: resolving binds nothing)."""

    name: str

    def alerts(self) -> list[Alert]:
        """Every alert this source can investigate."""
        ...

    def alert(self, fingerprint: str) -> Alert | None:
        """The alert with this fingerprint (a unique prefix is fine), or ``None``."""
        ...

    def close(self) -> None:
        """Release what the source holds (HTTP connections); may do nothing."""
        ...


_KINDS: tuple[tuple[str, type, tuple[str, ...]], ...] = (
    ("metrics", MetricSource, ("name", "local", "bind", "close", "signals")),
    ("logs", LogSource, ("name", "local", "bind", "close", "logs")),
    ("traces", TraceSource, ("name", "local", "bind", "close", "spans")),
    ("topology", TopologySource, ("name", "local", "bind", "close", "edges")),
    ("alerts", AlertSource, ("name", "close", "alerts", "alert")),
)


@dataclass(frozen=True)
class Sources:
    """The backends one investigation reads, by kind (a backend may appear in several).

    Immutable: the service shares one ``Sources`` between worker threads and
    each investigation reads ``sources.bind(alert)``.
    """

    metrics: Sequence[MetricSource] = ()
    logs: Sequence[LogSource] = ()
    traces: Sequence[TraceSource] = ()
    topology: Sequence[TopologySource] = ()
    alerts: Sequence[AlertSource] = ()

    def __post_init__(self) -> None:
        for kind in ("metrics", "logs", "traces", "topology", "alerts"):
            object.__setattr__(self, kind, tuple(getattr(self, kind)))

    @classmethod
    def from_backends(cls, *backends: object) -> Sources:
        """Sort backends into kinds by the protocols they implement.

        A backend that implements none is a mistake in the adapter, named here
        rather than silently left out.
        """
        sorted_: dict[str, list[object]] = {kind: [] for kind, _, _ in _KINDS}
        for b in backends:
            kinds = [kind for kind, proto, _ in _KINDS if isinstance(b, proto)]
            if not kinds:
                raise TypeError(describe_non_source(b))
            for kind in kinds:
                sorted_[kind].append(b)
        return cls(**sorted_)  # type: ignore[arg-type]

    def bind(self, alert: Alert) -> Sources:
        """The sources one investigation of ``alert`` reads (see :meth:`Source.bind`).

        Each backend is bound once, and its bound view takes its place in
        every kind it serves; ``self`` is left as it was.
        """
        bound: dict[int, object] = {}

        def view(source: Source) -> Any:
            if id(source) not in bound:
                bound[id(source)] = source.bind(alert)
            return bound[id(source)]

        metrics = [view(s) for s in self.metrics]
        logs = [view(s) for s in self.logs]
        traces = [view(s) for s in self.traces]
        topology = [view(s) for s in self.topology]
        alerts = [bound.get(id(s), s) for s in self.alerts]
        return Sources(metrics, logs, traces, topology, alerts)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close every backend once (whoever built the sources closes them)."""
        every: dict[int, MetricSource | LogSource | TraceSource | TopologySource | AlertSource]
        every = {}
        for group in (self.metrics, self.logs, self.traces, self.topology, self.alerts):
            for source in group:
                every.setdefault(id(source), source)
        for source in every.values():
            source.close()


def describe_non_source(backend: object) -> str:
    """Why ``backend`` is no source: what the protocols it seems to aim at need and it lacks."""
    name = getattr(backend, "name", None) or type(backend).__name__
    # The protocols whose data method it has (else every one) are the ones it meant.
    aimed = [k for k in _KINDS if hasattr(backend, k[2][-1])] or list(_KINDS)
    needs = "; ".join(
        f"{proto.__name__} needs {', '.join(members)} "
        f"(missing: {', '.join(m for m in members if not hasattr(backend, m))})"
        for _, proto, members in aimed
    )
    return (
        f"backend {name!r} implements no source protocol of correlator.sources: {needs}; "
        "see correlator.sources for the contract"
    )
