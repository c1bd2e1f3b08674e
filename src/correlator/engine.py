"""The investigation pipeline: window -> collect -> detect -> topology -> patterns -> rank.

:func:`investigate` runs one alert through every stage (see DESIGN.md) and
times each into ``Investigation.timings``. Sources are read concurrently, each
bounded by ``settings.source_timeout``; a source that raises or is too slow
becomes a :class:`~correlator.model.Gap`, never a crash. A pattern that fails
becomes a ``not_evaluated`` entry with why. The whole run respects
``settings.deadline``: stages that would start after it are skipped and
reported as gaps.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import networkx as nx
import pandas as pd

from correlator.alerts import alert_metrics
from correlator.calibration import Calibration
from correlator.catalog import Catalog, default_catalog
from correlator.config import Settings
from correlator.detect import aggregate, baseline_end, grid_step, series_index
from correlator.detector import DetectInput, Detector, anomaly_frame, load_detectors
from correlator.errors import CorrelatorError
from correlator.http import time_limit
from correlator.identity import resolve_peers
from correlator.model import (
    ANOMALY_COLUMNS,
    LOG_COLUMNS,
    SIGNAL_COLUMNS,
    SPAN_COLUMNS,
    Alert,
    Finding,
    Gap,
    Investigation,
    Outcome,
    Telemetry,
    Window,
    compact_signals,
    empty_frame,
)
from correlator.pattern import PatternContext, config_for, load_patterns
from correlator.promql import choose_step
from correlator.rank import UNKNOWN, rank
from correlator.redact import redact
from correlator.roles import GENERIC
from correlator.sources import (
    LOG_COUNT_COLUMNS,
    LogCountSource,
    MetricResult,
    RecordingSource,
    SampleIntervalSource,
    Source,
    Sources,
)
from correlator.topology import (
    attribute_edges,
    blast_radius,
    build_graph,
    common_mode,
    comovement,
    fired_by,
    instrumented,
    laid_at_callee,
    laid_at_dark_callee,
    laid_at_shared_end,
    named_by_callers,
    order_scales,
    over_by,
    root_scores,
)

__all__ = ["analyse", "auto_step", "collect", "investigate", "make_window", "query_step"]


def make_window(
    alert: Alert, settings: Settings, now: float | None = None, sources: Sources | None = None
) -> Window:
    """The alert's range widened by ``window.before``/``after``, plus the baseline look-back.

    An alert without an end is taken to end where it started; the end never
    lies in the future, nor after the last sample of a recording among
    ``sources`` (:class:`~correlator.sources.RecordingSource`).
    """
    w = settings.window
    end_of_alert = alert.ends_at if alert.ends_at and alert.ends_at > alert.starts_at else None
    start = alert.starts_at - w.before
    end = (end_of_alert or alert.starts_at) + w.after
    end = min(end, now if now is not None else time.time())
    end = max(end, alert.starts_at)
    window = Window(start=start, end=end, baseline_start=start - w.baseline)
    last = _end_of_recording(sources, window) if sources is not None else None
    if last is None or last >= end:
        return window
    return Window(start=start, end=max(last, alert.starts_at), baseline_start=start - w.baseline)


def query_step(sources: Sources, window: Window, catalog: Catalog, settings: Settings) -> float:
    """The step to collect at: the configured one, else one that follows the data's sample
    interval (never finer; coarse enough to bound the points; see
    :func:`correlator.promql.choose_step`)."""
    if settings.step:
        return float(settings.step)
    return choose_step(window.end - window.baseline_start, _interval(sources, window, catalog))


def _interval(sources: Sources, window: Window, catalog: Catalog) -> float | None:
    """The sample interval of the first local metric source that knows its data's (a
    source that cannot tell, or fails to, is skipped: collect reports what fails).

    Only local sources (files) are asked before collecting: asking a server costs a
    round trip outside the collect stage's time bounds. A server-backed source learns
    the interval within its own call and sets its ``rate()`` ranges from it.
    """
    for m in sources.metrics:
        if m.local and isinstance(m, SampleIntervalSource):
            try:
                found = m.interval(window, catalog)
            except Exception:  # a third-party source can fail in any way
                continue
            if found:
                return float(found)
    return None


def _end_of_recording(sources: Sources, window: Window) -> float | None:
    """The last sample's time of the local recordings among ``sources`` around ``window``
    (``None`` if none tells): past it, every rate of a recording falls to zero."""
    ends = []
    # One backend often serves all three kinds: ask each once.
    unique = {id(s): s for s in (*sources.metrics, *sources.logs, *sources.traces)}
    for s in unique.values():
        if getattr(s, "local", False) and isinstance(s, RecordingSource):
            try:
                found = s.data_end(window)
            except Exception:  # a third-party source can fail in any way
                continue
            if found:
                ends.append(float(found))
    return max(ends) if ends else None


def auto_step(window: Window) -> float:
    """A query step giving about 400 points over baseline plus window, at least 15 s."""
    span = window.end - window.baseline_start
    return float(max(15.0, round(span / 400.0 / 15.0) * 15.0))


@dataclass(frozen=True)
class _Job:
    """One source call of the collect stage."""

    kind: str
    source: str
    call: Callable[[], Any]
    until: float
    """The :func:`time.monotonic` time after which the call is abandoned."""
    limit: str
    """How the gap names that limit."""


def _limited(call: Callable[[], Any], until: float, seconds: float, why: str) -> Callable[[], Any]:
    """``call`` with every HTTP request it sends (in its thread or the threads it starts with
    :func:`correlator.http.carry`) cut at ``until``: its thread ends then, not whenever a
    hung backend lets go."""

    def run() -> Any:
        with time_limit(until, seconds, why):
            return call()

    return run


def _call(pool: cf.ThreadPoolExecutor, jobs: list[_Job]) -> tuple[list[Any], list[Gap]]:
    """Run jobs concurrently; a job that fails or outlives its ``until`` is a gap.

    Returns each job's result (``None`` for a gap), in job order.
    """
    futures = [pool.submit(job.call) for job in jobs]
    results: list[Any] = [None] * len(jobs)
    gaps: list[Gap] = []
    for i, (fut, job) in enumerate(zip(futures, jobs, strict=True)):
        # A far deadline (the evaluation scripts pass 1e12) must not overflow the lock wait.
        budget = min(job.until - time.monotonic(), threading.TIMEOUT_MAX)
        try:
            results[i] = fut.result(timeout=max(budget, 0.0))
        except cf.TimeoutError:
            fut.cancel()
            gaps.append(Gap(job.source, f"{job.kind}: no answer within {job.limit}"))
        except CorrelatorError as exc:
            gaps.append(Gap(job.source, f"{job.kind}: {exc}"))
        except Exception as exc:  # a third-party source can fail in any way
            gaps.append(Gap(job.source, f"{job.kind}: {type(exc).__name__}: {exc}"))
    return results, gaps


#: Seconds between the deadline a source is given and the engine's own: its
#: partial answer must arrive before the engine stops waiting.
_MARGIN = 0.2


def collect(
    sources: Sources,
    catalog: Catalog,
    window: Window,
    step: float,
    timeout: float,
    deadline: float,
) -> tuple[Telemetry, list[Gap]]:
    """Read every source concurrently into one :class:`Telemetry` (and the gaps).

    Each call is bounded by ``timeout`` seconds (``source_timeout``), except
    for ``local`` sources, which read files here and are bounded by
    ``deadline`` (a :func:`time.monotonic` time) only. Each source is told its
    own limit as ``deadline=``, so one that can stop early answers in time, and
    every HTTP request it sends through :mod:`correlator.http` is cut whole at
    that limit (see :func:`correlator.http.time_limit`), so that no thread or
    connection outlives the investigation.
    """
    now = time.monotonic()
    remote = min(now + timeout, deadline)
    # Name the limit that binds: a short deadline cuts before source_timeout does.
    if deadline <= now + timeout:
        remote_why, remote_s = "the investigation's deadline", deadline - now
    else:
        remote_why, remote_s = "source_timeout", timeout

    def bounded(call: Callable[[], Any], local: bool) -> tuple[Callable[[], Any], float, str]:
        until, seconds = (deadline, deadline - now) if local else (remote, remote_s)
        why = "the investigation's deadline" if local else remote_why
        # The source's own requests end just before the engine stops waiting.
        whole = seconds >= 10 or abs(seconds - round(seconds)) < 0.05
        shown = f"{seconds:.0f}s" if whole else f"{seconds:.1f}s"
        return _limited(call, until - _MARGIN, seconds, why), until, f"{shown} ({why})"

    def job(kind: str, source: Source, call: Callable[..., Any], *args: Any) -> _Job:
        until = deadline if source.local else remote
        run, until, limit = bounded(partial(call, *args, deadline=until - _MARGIN), source.local)
        return _Job(kind, source.name, run, until, limit)

    def counts(lg: LogCountSource) -> _Job:
        run, until, limit = bounded(partial(lg.log_counts, window, step), False)
        return _Job("log_counts", lg.name, run, until, limit)

    jobs = [job("metrics", m, m.signals, catalog, window, step) for m in sources.metrics]
    jobs += [job("logs", lg, lg.logs, window) for lg in sources.logs]
    # Record counts by severity (info included), where a log source can give them cheaply.
    jobs += [counts(lg) for lg in sources.logs if isinstance(lg, LogCountSource)]
    jobs += [job("traces", t, t.spans, window) for t in sources.traces]
    jobs += [job("topology", tp, tp.edges, window) for tp in sources.topology]
    pool = cf.ThreadPoolExecutor(max_workers=max(len(jobs), 1), thread_name_prefix="collect")
    try:
        results, gaps = _call(pool, jobs)
    finally:
        # Do not wait for a hung source: its HTTP requests are cut at its limit (above), so
        # its thread ends then; a third-party source that blocks elsewhere ends on its own.
        pool.shutdown(wait=False, cancel_futures=True)
    tel = Telemetry()
    frames: dict[str, list[pd.DataFrame]] = {
        "metrics": [],
        "logs": [],
        "traces": [],
        "log_counts": [],
    }
    for j, value in zip(jobs, results, strict=True):
        if value is None:
            continue  # a gap
        if j.kind == "topology":
            edges, kinds = value
            tel.node_kinds.update(kinds)
            tel.edges.extend((a, b, kinds.get(b, "service")) for a, b in edges)
        elif j.kind == "metrics":
            if not isinstance(value, MetricResult):
                gaps.append(
                    Gap(j.source, f"metrics: returned {type(value).__name__}, not a MetricResult")
                )
                continue
            frames["metrics"].append(value.frame)
            if tel.sample_interval is None and value.interval:
                tel.sample_interval = float(value.interval)
            gaps.extend(Gap(j.source, f"metrics: {note}") for note in value.warnings)
            # The first metric source to name a role's query (and link) shows it.
            for role, query in value.queries.items():
                tel.queries.setdefault(role, query)
            for role, url in value.links.items():
                tel.links.setdefault(role, url)
        else:
            frames[j.kind].append(value)
            # What a limit cut (lines, traces) is a gap too: the evidence is a sample.
            notes = value.attrs.get("warnings", ()) if isinstance(value, pd.DataFrame) else ()
            gaps.extend(Gap(j.source, f"{j.kind}: {note}") for note in notes)
    # Counts come from the same backend as the lines: when both failed, one gap says it.
    failed_logs = {g.source for g in gaps if g.why.startswith("logs: ")}
    gaps = [g for g in gaps if not (g.why.startswith("log_counts: ") and g.source in failed_logs)]
    # A source's message may quote its backend: no credential reaches the report.
    gaps = [dataclasses.replace(g, why=redact(g.why)) for g in gaps]
    tel.signals = compact_signals(_concat(frames["metrics"], SIGNAL_COLUMNS))
    tel.log_counts = _concat(frames["log_counts"], LOG_COUNT_COLUMNS)
    tel.logs = _concat(frames["logs"], LOG_COLUMNS)
    tel.spans = _concat(frames["traces"], SPAN_COLUMNS)
    return tel, gaps


def _concat(frames: list[Any], columns: tuple[str, ...]) -> pd.DataFrame:
    frames = [f for f in frames if isinstance(f, pd.DataFrame) and len(f)]
    if not frames:
        return empty_frame(columns)
    one: pd.DataFrame = frames[0]
    if len(frames) == 1 and tuple(one.columns) == columns and one.index.equals(_range(len(one))):
        return one  # the usual single source: no copy of a frame of millions of rows
    out: pd.DataFrame = pd.concat(
        [f.reindex(columns=list(columns)) for f in frames], ignore_index=True
    )
    return out


def _range(n: int) -> pd.RangeIndex:
    return pd.RangeIndex(n)


def investigate(
    alert: Alert,
    sources: Sources,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    calibration: Calibration | None = None,
) -> Investigation:
    """Investigate one alert: ranked, calibrated findings, blast radius, gaps and timings."""
    settings = settings or Settings()
    catalog = catalog or default_catalog()
    t_begin = time.monotonic()
    deadline = t_begin + settings.deadline
    timings: dict[str, float] = {}
    gaps: list[Gap] = []

    def lap(stage: str, t0: float) -> float:
        now = time.monotonic()
        timings[stage] = now - t0
        return now

    t = time.monotonic()
    window = make_window(alert, settings, sources=sources)
    step = query_step(sources, window, catalog, settings)
    t = lap("window", t)

    telemetry, source_gaps = collect(
        sources, catalog, window, step, settings.source_timeout, deadline
    )
    gaps += source_gaps
    if not (sources.metrics or sources.logs or sources.traces):
        gaps.append(Gap("sources", "no metric, log or trace source is configured"))
    lap("collect", t)
    return analyse(
        alert,
        window,
        step,
        telemetry,
        settings,
        catalog,
        calibration,
        gaps=gaps,
        timings=timings,
        deadline=deadline,
        t_begin=t_begin,
    )


def analyse(
    alert: Alert,
    window: Window,
    step: float,
    telemetry: Telemetry,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    calibration: Calibration | None = None,
    *,
    gaps: list[Gap] | None = None,
    timings: dict[str, float] | None = None,
    deadline: float | None = None,
    t_begin: float | None = None,
) -> Investigation:
    """The stages after collection (detect, topology, patterns, rank) on given telemetry.

    :func:`investigate` calls it after reading the sources; notebooks and the
    evaluation scripts call it directly on telemetry they already hold.
    """
    settings = settings or Settings()
    catalog = catalog or default_catalog()
    t_begin = time.monotonic() if t_begin is None else t_begin
    deadline = t_begin + settings.deadline if deadline is None else deadline
    timings = {} if timings is None else timings
    gaps = [] if gaps is None else gaps
    not_evaluated: list[dict[str, str]] = []

    def lap(stage: str, t0: float) -> float:
        now = time.monotonic()
        timings[stage] = now - t0
        return now

    t = time.monotonic()
    # Sources hand the engine compact frames (see collect); notebooks and scripts may not.
    # The caller's telemetry is not changed: the compact frame goes into a copy.
    telemetry = dataclasses.replace(telemetry, signals=compact_signals(telemetry.signals))
    # One name per service: callee names that spell a known service become it.
    telemetry = resolve_peers(telemetry)
    anomalies = empty_frame(ANOMALY_COLUMNS)
    signals = aggregate(telemetry.signals)
    data_step = grid_step(signals["ts"].to_numpy(dtype=float)) if len(signals) else step
    base_end = baseline_end(_data_start(telemetry, window), window, alert.starts_at)
    graph: nx.DiGraph = build_graph(telemetry, telemetry.signals)
    if time.monotonic() < deadline:
        gaps += _baseline_gaps(telemetry, window, base_end)
        inp = DetectInput(
            alert=alert,
            window=window,
            telemetry=telemetry,
            catalog=catalog,
            aggregated=signals,
            step=data_step,
            baseline_end=base_end,
        )
        anomalies, detector_gaps = run_detectors(inp, load_detectors(), deadline)
        gaps += detector_gaps
        step = data_step
        lag = max(30.0, 2.0 * step)
        anomalies = attribute_edges(anomalies, signals)
        seen = instrumented(telemetry)
        anomalies = laid_at_shared_end(laid_at_callee(anomalies, lag), seen, lag, _callees(graph))
        anomalies = laid_at_dark_callee(anomalies, graph, seen, lag)
        anomalies = named_by_callers(anomalies, lag, _callees(graph))
        anomalies, common = common_mode(anomalies, signals, max(120.0, 4.0 * step))
        gaps += [Gap("metrics", why, signal) for signal, why in common]
    else:
        gaps.append(Gap("engine", "deadline reached before detection"))
    t = lap("detect", t)

    rows = series_index(signals)  # each series' rows, for topology and patterns alike
    follows = comovement(
        anomalies,
        signals,
        alert.service,
        window.baseline_start,
        _alert_keys(alert, catalog),
        index=rows,
    )
    # Onsets are known to about a rate's window (see order_scales): within that, order
    # says nothing; earliness counts over minutes, or over a few steps when they are long.
    tolerance, lag = order_scales(step)
    roots = root_scores(
        graph,
        anomalies,
        alert.service,
        onset_tolerance=tolerance,
        tau=max(300.0, 4.0 * step),
        lag=lag,
        comove=follows,
        fired=fired_by(alert.starts_at, step),
        over=over_by(alert.status, alert.ends_at, window.end, step),
    )
    t = lap("topology", t)

    ctx = PatternContext(
        alert=alert,
        window=window,
        telemetry=telemetry,
        catalog=catalog,
        anomalies=anomalies,
        graph=graph,
        roots=roots,
        signals=signals,
        step=step,
        baseline_seconds=base_end - _data_start(telemetry, window),
        series_rows=rows,
    )
    candidates: list[Finding] = []
    patterns = load_patterns(settings.patterns.enabled)
    for name, cls in patterns.items():
        config = config_for(cls, settings.patterns.options.get(name))
        if time.monotonic() >= deadline:
            not_evaluated.append({"pattern": name, "why": "deadline reached"})
            continue
        try:
            result = cls().evaluate(ctx, config)
        except Exception as exc:  # a plugin can fail in any way; it must not sink the run
            not_evaluated.append({"pattern": name, "why": f"error: {type(exc).__name__}: {exc}"})
            continue
        if result.outcome in (Outcome.NOT_EVALUATED, Outcome.NO_DATA, Outcome.ERROR):
            not_evaluated.append({"pattern": name, "why": result.reason or str(result.outcome)})
        candidates.extend(result.findings)
    unknown_patterns = [n for n in settings.patterns.options if n not in patterns]
    for n in unknown_patterns:
        gaps.append(Gap("config", f"patterns.options.{n}: no such pattern is enabled"))
    t = lap("patterns", t)

    findings = rank(ctx, candidates, calibration, top_n=settings.top_n)
    anomalous = set(anomalies["service"]) if len(anomalies) else set()
    radius = blast_radius(graph, findings[0].service, anomalous) if findings else []
    lap("rank", t)
    timings["total"] = time.monotonic() - t_begin
    return Investigation(
        alert=alert,
        window=window,
        findings=findings,
        blast_radius=radius,
        gaps=gaps,
        timings=timings,
        telemetry=telemetry,
        anomalies=anomalies,
        topology=graph,
        not_evaluated=not_evaluated,
    )


def _alert_keys(alert: Alert, catalog: Catalog) -> tuple[str, ...]:
    """The aggregated series keys (roles, or ``series:<family>``) of the metrics the
    alert's rule reads, in the order it names them."""
    out: list[str] = []
    for name in alert_metrics(alert):
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        out += [f"{GENERIC}:{n}" for n in dict.fromkeys((name, base))]
        out += [
            role
            for role in catalog.roles
            if any(spec.metric in (name, base) for spec in catalog.specs(role))
        ]
    return tuple(dict.fromkeys(out))


def run_detectors(
    data: DetectInput, detectors: dict[str, Detector], deadline: float
) -> tuple[pd.DataFrame, list[Gap]]:
    """Every detector's rows merged into the one anomaly table, and their gaps.

    A detector that fails (a plugin can fail in any way) or would start after the
    deadline becomes a gap; the others' rows still count.
    """
    frames: list[pd.DataFrame] = []
    gaps: list[Gap] = []
    for name, det in detectors.items():
        if time.monotonic() >= deadline:
            gaps.append(Gap("engine", f"detector {name}: deadline reached before it ran"))
            continue
        try:
            out = det.detect(data)
        except Exception as exc:  # a plugin can fail in any way; it must not sink the run
            gaps.append(Gap("engine", f"detector {name}: {type(exc).__name__}: {exc}"))
            continue
        gaps.extend(out.gaps)
        if len(out.anomalies):
            frames.append(out.anomalies)
    if not frames:
        return empty_frame(ANOMALY_COLUMNS), gaps
    return anomaly_frame(pd.concat(frames, ignore_index=True)), gaps


def _callees(graph: nx.DiGraph) -> dict[str, set[str]]:
    """Per service, the services it calls."""
    return {str(n): {str(m) for m in graph.successors(n)} for n in graph.nodes}


def _data_start(telemetry: Telemetry, window: Window) -> float:
    """The earliest time any collected data covers (the window's start when there is none)."""
    starts = [
        float(frame[col].min())
        for frame, col in (
            (telemetry.signals, "ts"),
            (telemetry.spans, "start"),
            (telemetry.logs, "ts"),
        )
        if len(frame)
    ]
    return max(min(starts), window.baseline_start) if starts else window.start


#: Normal data before the fault that makes a baseline full (the bundle format's advice).
FULL_BASELINE = 1800.0


def _baseline_gaps(telemetry: Telemetry, window: Window, base_end: float) -> list[Gap]:
    """A gap when the data holds less than :data:`FULL_BASELINE` of normal behaviour."""
    if not len(telemetry.signals) and not len(telemetry.spans) and not len(telemetry.logs):
        return []
    have = base_end - _data_start(telemetry, window)
    if have >= FULL_BASELINE:
        return []
    return [
        Gap(
            "baseline",
            f"only {max(have, 0.0) / 60:.0f} min of normal data before the alert's window "
            f"({FULL_BASELINE / 60:.0f} min or more gives surer answers): each series was "
            "judged against what there was, up to its own onset",
        )
    ]


__all__ += ["UNKNOWN", "run_detectors"]
