"""Metrics from anything that speaks the Prometheus HTTP API.

Prometheus, Thanos, Mimir/Cortex (set ``tenant``) and VictoriaMetrics all
answer ``/api/v1/query_range`` and ``/api/v1/query``. :class:`PrometheusAdapter`
implements :class:`~correlator.sources.MetricSource`: for every catalog
:class:`~correlator.catalog.SignalSpec` alternative it sends **one**
``query_range`` whose PromQL aggregates by service (and the spec's
dimensions), so the request count depends on the catalog, never on the number
of services. The queries run concurrently (``concurrency`` at a time) within
a time budget; a query still unanswered when the budget runs out is abandoned
and reported, not waited on.

Service attribution: a series belongs to the first non-empty of the spec's
``service_labels``, failing that to its pod name without the
Deployment/StatefulSet suffix (as :func:`correlator.catalog.service_from_pod`
does). The query partitions the series by which label decides, so that the
common case aggregates by a real label with no per-series regex work::

    sum by (service_name) (rate(x{service_name!=""}[1m]))
    or sum by (service) (rate(x{service_name="",service!=""}[1m]))
    or sum by (correlator_service) (label_replace(
         rate(x{service_name="",service="",pod!=""}[1m]),
         "correlator_service", "$1", "pod", "(?s)(.+?)(?:-[0-9a-z]{5,10}-[0-9a-z]{5}|-[0-9]+)?"))

Only the series attributed by their pod name go through a regex, and through
one (:data:`POD_REGEX`) rather than a chain. The values are those of one
aggregation over every series with a chain of ``label_replace`` calls
(:func:`render_chain`), at a fraction of the cost for Prometheus, which
evaluates ``label_replace`` per series *and step* in a range query (about
3x less server time at 1000 services; see BENCHMARKS.md, ``## Backends``).
When one service turns up
in two partitions (some of its series carry ``service_name``, others only
``service``), sums, maxima and minima are combined here; a histogram quantile
or an average cannot be, and that spec is asked again with :func:`render_chain`.

Every query text comes from :mod:`correlator.promql`, the one PromQL renderer
(``render_promql`` and ``render_chain`` here are its ``render`` and
``render_chain``): what evidence shows is what was sent. The ``rate()`` range
follows the data's sample interval (:meth:`PrometheusAdapter.interval`).
Besides the catalog's roles, every other series that names a service comes as
the role ``series`` (see :mod:`correlator.generic`): one query per service
label (and its ``count by``), capped at :data:`correlator.generic.MAX_SERIES`
series.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar
from urllib.parse import urlencode

import httpx
import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import Field

from correlator import generic
from correlator.catalog import Catalog, SignalSpec
from correlator.http import HttpBackend, HttpSettings, carry, time_limit
from correlator.model import SIGNAL_COLUMNS, Alert, Window, empty_frame
from correlator.promql import (
    PART_LABEL,
    POD_REGEX,
    SERVICE_LABEL,
    members_query,
    render_counts,
    render_generic,
    render_interval,
    render_samples,
    sample_interval,
    service_of,
    snap_interval,
)
from correlator.promql import render as render_promql
from correlator.promql import render_chain as render_chain
from correlator.roles import GENERIC
from correlator.sources import MetricResult, SourceError

__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_POINTS",
    "POD_REGEX",
    "SERVICE_LABEL",
    "PrometheusAdapter",
    "PrometheusSettings",
    "choose_step",
    "render_chain",
    "render_promql",
    "service_of",
]

#: Prometheus refuses a range query with more than 11,000 points per series.
MAX_POINTS = 11_000
#: How far back (seconds) the raw samples that give the sample interval are read.
INTERVAL_REACH = 1800.0
#: Queries in flight at once against one backend.
DEFAULT_CONCURRENCY = 4
_T = TypeVar("_T")
_NO_TIME = "uncatalogued series: no time left to read them"
Series = tuple[dict[str, str], npt.NDArray[np.float64], npt.NDArray[np.float64]]
_DIM_COLUMNS = ("peer", "pod", "node", "zone", "version", "detail")


def choose_step(window: Window, minimum: float = 15.0, max_points: int = MAX_POINTS) -> float:
    """A step (seconds) for ``[baseline_start, end]``: at least ``minimum``, under the point limit."""
    span = max(window.end - window.baseline_start, 1.0)
    return float(max(minimum, math.ceil(span / (max_points - 1))))


def _duration(seconds: float) -> str:
    """Seconds rounded up to whole seconds, as a duration (``90s``): timeouts, graph ranges."""
    return f"{max(math.ceil(seconds), 1)}s"


@dataclass(frozen=True)
class _Job:
    """One catalog alternative to fetch."""

    role: str
    index: int
    spec: SignalSpec

    @property
    def label(self) -> str:
        return f"{self.role} ({self.spec.source or self.spec.metric or 'selector'})"


class PrometheusSettings(HttpSettings):
    """Settings of a Prometheus-API backend (``backends: {prometheus: {url: ...}}``)."""

    ui_url: str | None = Field(None, description="base of the graph links (default: url)")
    min_step: float = Field(
        0.0, ge=0, description="smallest query step in seconds (default: none, the data's own)"
    )
    rate_window: float | None = Field(
        None, gt=0, description="rate() range in seconds (default: from the step)"
    )
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, description="queries in flight at once")
    budget: float | None = Field(
        None, gt=0, description="seconds one signals() call may take (default: 0.9 x timeout)"
    )
    interval: float | None = Field(
        None, gt=0, description="the data's sample interval in seconds (default: learned)"
    )
    generic: bool = Field(True, description="also read series no catalog role knows")
    probe: bool = Field(
        True, description="ask for the sample interval and label names before querying"
    )


class PrometheusAdapter:
    """A :class:`~correlator.sources.MetricSource` over the Prometheus HTTP API.

    ``settings`` say where and how to connect (a :class:`PrometheusSettings`,
    any :class:`~correlator.http.HttpSettings`, or a URL); the keyword options
    override its fields. ``client`` may be injected (default: built from
    ``settings``). ``ui_url`` is the base of the graph links (default: the
    API URL). ``min_step`` bounds the step from below. ``concurrency``
    queries are in flight at once (default :data:`DEFAULT_CONCURRENCY`).
    ``budget`` is the seconds one :meth:`signals` call may take (default:
    the backend's timeout less 10%, so partial results come back before the
    engine's ``source_timeout``, 10 s like the timeout by default); queries
    unanswered by then are abandoned and named in the result's ``warnings``.
    The adapter keeps no per-call state: one instance serves concurrent calls.
    ``rate_window`` (seconds) overrides the ``rate()`` range, which is
    otherwise :func:`correlator.promql.rate_range` of the step and the data's
    sample interval: ``interval`` (seconds) when given, else learned by
    :meth:`interval`. ``generic=False`` leaves out the series no catalog role
    knows (role ``series``; see :mod:`correlator.generic`). ``probe=False`` asks
    the backend nothing but the queries (no interval or label-name probes: for
    an API that answers only ``query_range``).
    """

    Settings = PrometheusSettings
    display_name = "Prometheus"
    name = "prometheus"
    local = False
    """Talks to a server: ``source_timeout`` bounds each call."""

    def __init__(
        self,
        settings: HttpSettings | str,
        client: httpx.Client | None = None,
        *,
        ui_url: str | None = None,
        min_step: float | None = None,
        rate_window: float | None = None,
        name: str | None = None,
        backend: HttpBackend | None = None,
        concurrency: int | None = None,
        budget: float | None = None,
        interval: float | None = None,
        generic: bool | None = None,
        probe: bool | None = None,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        own = PrometheusSettings.adopt(
            settings,
            self.name,
            self.display_name,
            name=name,
            ui_url=ui_url,
            min_step=min_step,
            rate_window=rate_window,
            concurrency=concurrency,
            budget=budget,
            interval=interval,
            generic=generic,
            probe=probe,
        )
        self.settings = own
        self.name = own.name
        self.http = backend or HttpBackend(own, client)
        self.ui_url = (own.ui_url or self.http.base_url).rstrip("/")
        self.min_step = own.min_step
        self.rate_window = own.rate_window
        self.concurrency = own.concurrency
        self.budget = own.budget if own.budget is not None else 0.9 * own.timeout
        self.known_interval = own.interval
        self.generic = own.generic
        self.probe = own.probe
        self._fallbacks = 0
        self._count = threading.Lock()

    @property
    def fallbacks(self) -> int:
        """Specs asked again with :func:`render_chain` since the adapter was built (services
        in two partitions whose values cannot be combined here)."""
        return self._fallbacks

    def bind(self, alert: Alert) -> Self:
        """Itself: every call says what it reads."""
        return self

    def close(self) -> None:
        """Close the HTTP client if the adapter built it."""
        self.http.close()

    # -- low level ------------------------------------------------------------------

    def _api(self, path: str, form: Mapping[str, Any]) -> Any:
        # POST keeps long queries out of the URL; every Prometheus-API backend accepts it.
        response = self.http.request("POST", path, data=form)
        body = self.http.parse_json(response, path)
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else None
            shown = detail if isinstance(detail, str) and detail else json.dumps(body)
            raise SourceError(
                f"{self.settings.display_name} at {self.settings.public_url}{path}: "
                f"answered without success: {self.http.excerpt(shown)}"
            )
        return body.get("data") or {}

    def query_range(
        self, query: str, start: float, end: float, step: float, timeout: float | None = None
    ) -> list[Series]:
        """Run a range query; returns ``(labels, ts, values)`` per series.

        ``timeout`` (seconds) is passed on, so the server stops evaluating when
        the caller stops waiting.
        """
        form = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        if timeout is not None:
            form["timeout"] = _duration(timeout)
        data = self._api("/api/v1/query_range", form)
        if data.get("resultType") != "matrix":
            raise SourceError(
                f"{self.settings.display_name}: query_range returned {data.get('resultType')!r}, "
                "expected a matrix"
            )
        out: list[Series] = []
        for series in data.get("result") or ():
            values = series.get("values") or []
            if values:
                ts_text, value_text = zip(*values, strict=True)
                ts = np.array(ts_text, dtype=np.float64)
                vals = np.array(value_text, dtype=np.float64)  # "NaN", "+Inf" parse too
            else:
                ts = vals = np.empty(0, dtype=np.float64)
            out.append((dict(series.get("metric") or {}), ts, vals))
        return out

    def instant(self, query: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """Run an instant query; returns ``(labels, value)`` per series (scalars: ``{}``)."""
        form: dict[str, Any] = {"query": query}
        if at is not None:
            form["time"] = f"{at:.3f}"
        data = self._api("/api/v1/query", form)
        kind = data.get("resultType")
        result = data.get("result")
        if kind in ("scalar", "string"):
            return [({}, float(result[1]))] if kind == "scalar" else []
        return [(dict(s.get("metric") or {}), float(s["value"][1])) for s in result or ()]

    def graph_url(self, query: str, start: float, end: float, step: float) -> str:
        """A link that opens ``query`` over ``[start, end]`` in the Prometheus graph UI."""
        from correlator.model import format_time

        params = {
            "g0.expr": query,
            "g0.tab": "0",
            "g0.range_input": _duration(end - start),
            "g0.end_input": format_time(end).replace("T", " ").rstrip("Z"),
            "g0.step_input": f"{step:g}",
        }
        return f"{self.ui_url}/graph?{urlencode(params)}"

    # -- MetricSource ---------------------------------------------------------------

    def query_for(self, catalog: Catalog, role: str, step: float = 60.0) -> str | None:
        """The query of the role's first alternative at ``step``."""
        specs = catalog.specs(role)
        if not specs:
            return None
        return render_promql(specs[0], step, self.known_interval, self.rate_window)

    def signals(
        self, catalog: Catalog, window: Window, step: float, *, deadline: float | None = None
    ) -> MetricResult:
        """Every catalog role over ``[window.baseline_start, window.end]``: one query per spec.

        For each role and service the first alternative with data wins. The
        queries run ``concurrency`` at a time; the call returns by ``deadline``
        (a :func:`time.monotonic` time) or after ``budget`` seconds, whichever
        comes first, with what has arrived: the queries abandoned (and those
        the backend rejected as invalid) are listed in the result's
        ``warnings``. Any other failure of the backend (down, 5xx after
        retries, 401) stops the remaining queries and raises
        :class:`~correlator.sources.SourceError`. ``queries`` holds, per role,
        the query whose data was used (else the first alternative's) and
        ``links`` a graph URL for each query used.
        """
        step = max(float(step), choose_step(window, self.min_step))
        # The grid starts at the baseline start itself, not at a step multiple:
        # the bundle backend samples the same instants, so both backends agree.
        start = window.baseline_start
        end = window.end
        stop_at = time.monotonic() + self.budget
        limit = f"the {self.budget:g}s budget"
        if deadline is not None and deadline < stop_at:
            stop_at, limit = deadline, "the deadline"
        # Every request of this call, in whichever of its threads, ends by stop_at: none is
        # left running (holding a thread and a socket) after the call has returned.
        why = f"the {self.budget:g}s budget, backends.{self.name}.budget"
        with time_limit(stop_at, self.budget, why):
            return self._signals(catalog, window, step, start, end, stop_at, limit)

    def _signals(
        self,
        catalog: Catalog,
        window: Window,
        step: float,
        start: float,
        end: float,
        stop_at: float,
        limit: str,
    ) -> MetricResult:
        """:meth:`signals` within its time limit."""
        interval = self.known_interval
        present: frozenset[str] | None = None
        if self.probe:
            interval = interval or self._probe(window, catalog, stop_at)
            present = self._labels(start, end, stop_at)
        jobs = [
            _Job(role, i, spec)
            for role, specs in catalog.roles.items()
            for i, spec in enumerate(specs)
        ]
        frames, warnings, fallbacks = self._run(
            jobs, start, end, step, stop_at, limit, interval, present
        )
        queries: dict[str, str] = {}
        links: dict[str, str] = {}
        kept: list[pd.DataFrame] = []
        winners: list[tuple[SignalSpec, list[str]]] = []
        for role, specs in catalog.roles.items():
            seen: set[str] = set()
            for i in range(len(specs)):
                got = frames.get((role, i))
                if got is None:
                    continue
                frame, query = got
                frame = frame[~frame["service"].isin(seen)]
                if frame.empty:
                    continue
                seen.update(frame["service"].unique())
                winners.append((specs[i], [str(x) for x in frame["service"].unique()]))
                kept.append(frame)
                queries.setdefault(role, query)
                links.setdefault(role, self.graph_url(query, start, end, step))
        with self._count:
            self._fallbacks += fallbacks
        extra, notes, generic_query = (
            self._generic(start, end, step, interval, winners, stop_at, present)
            if self.generic
            else (None, [], "")
        )
        if extra is not None:
            kept.append(extra)
            queries.setdefault(GENERIC, generic_query)
            links.setdefault(GENERIC, self.graph_url(generic_query, start, end, step))
        if notes == [_NO_TIME] and any("abandoned" in w for w in warnings):
            # One gap says it: what was abandoned, the uncatalogued series with it.
            notes = []
            warnings[-1] += "; and the uncatalogued series"
        warnings += notes
        for role, specs in catalog.roles.items():
            if role not in queries and specs:
                queries[role] = render_promql(specs[0], step, interval, self.rate_window, present)
        out = (
            pd.concat(kept, ignore_index=True).loc[:, list(SIGNAL_COLUMNS)]
            if kept
            else empty_frame(SIGNAL_COLUMNS)
        )
        return MetricResult(
            frame=out,
            step=step,
            interval=interval,
            queries=queries,
            links=links,
            warnings=tuple(warnings),
        )

    def interval(self, window: Window, catalog: Catalog | None = None) -> float | None:
        """The data's sample interval (seconds) before the window, ``None`` when unknown.

        Learned from the data first, as the bundle backend learns it: the
        median spacing of the raw samples of a few series (three ``up``
        series, written once per scrape, else three the catalog names) over
        the half hour before ``window.start``. Failing that (no data there),
        the median ``scrapeInterval`` of the active targets
        (``/api/v1/targets``), which says how Prometheus scrapes now, not
        necessarily how it did then. A backend that cannot answer gives
        ``None``, never an error.
        """
        try:
            for query in render_interval(catalog):
                picked = self.instant(query, at=window.start)
                if not picked:
                    continue
                times = [
                    self._sample_times(render_samples(labels, INTERVAL_REACH), window.start)
                    for labels, _ in picked
                ]
                learned = sample_interval(times)
                if learned is not None:
                    return learned
        except SourceError:
            return None  # down or refusing: the signals call says so, not this probe
        return self._target_interval()

    def _sample_times(self, query: str, at: float) -> npt.NDArray[np.float64]:
        """The raw sample times of the one series an instant range-selector query returns."""
        data = self._api("/api/v1/query", {"query": query, "time": f"{at:.3f}"})
        result = data.get("result") or []
        if data.get("resultType") != "matrix" or not result:
            return np.empty(0, dtype=np.float64)
        return np.array([float(t) for t, _ in result[0].get("values") or ()], dtype=np.float64)

    def _labels(self, start: float, end: float, stop_at: float) -> frozenset[str] | None:
        """Every label name of the series in ``[start, end]`` (``/api/v1/labels``; ``None``:
        not known in time or not supported, and then every service label is queried)."""
        form = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
        try:
            names = _bounded(stop_at, self._api, "/api/v1/labels", form)
        except (cf.TimeoutError, SourceError):
            return None
        if not isinstance(names, list):
            return None
        return frozenset(str(n) for n in names)

    def _probe(self, window: Window, catalog: Catalog, stop_at: float) -> float | None:
        """:meth:`interval`, given up on (``None``) at ``stop_at`` rather than waited for."""
        try:
            return _bounded(stop_at, self.interval, window, catalog)
        except cf.TimeoutError:
            return None

    def _target_interval(self) -> float | None:
        """The median scrape interval of the active targets (``None``: no targets API)."""
        try:
            response = self.http.request("GET", "/api/v1/targets", params={"state": "active"})
            body = self.http.parse_json(response, "/api/v1/targets")
        except SourceError:
            return None
        targets = ((body or {}).get("data") or {}).get("activeTargets") or []
        seconds = [
            _parse_duration(str(t.get("scrapeInterval", "")))
            for t in targets
            if isinstance(t, dict)
        ]
        known = sorted(x for x in seconds if x)
        return snap_interval(known[len(known) // 2]) if known else None

    def _generic(
        self,
        start: float,
        end: float,
        step: float,
        interval: float | None,
        winners: list[tuple[SignalSpec, list[str]]],
        stop_at: float,
        present: frozenset[str] | None = None,
    ) -> tuple[pd.DataFrame | None, list[str], str]:
        """Every series that names a service and no winning alternative used (role ``series``).

        One ``sum by (__name__, <label>, le, quantile)`` range query per
        service label and its ``count by`` (how many series each sum had;
        see :mod:`correlator.generic`), at most
        :data:`correlator.generic.MAX_SERIES` series in all (a warning says
        when more were there). A query the backend refuses or does not
        answer in time is a warning: the catalog's data stands without it.
        """
        queries = render_generic(generic.taken_regex(winners), present)
        warnings: list[str] = []
        if time.monotonic() >= stop_at:
            return None, [_NO_TIME], ""
        queries = self._within_cap(queries, end, warnings, stop_at)
        # Each sum comes with how many series it had (the same selector's count): a counter
        # summed over pods is no rate where pods came or went.
        asked = [(label, q, False) for label, q in queries] + [
            (label, members_query(q), True) for label, q in queries
        ]
        results: list[tuple[str, bool, list[Series]]] = []
        pool = cf.ThreadPoolExecutor(
            max_workers=max(1, min(self.concurrency, len(asked))),
            thread_name_prefix=f"{self.name}-generic",
        )
        try:
            futures = [
                pool.submit(
                    carry(self.query_range),
                    q,
                    start,
                    end,
                    step,
                    max(stop_at - time.monotonic(), 1.0),
                )
                for _, q, _count in asked
            ]
            for (label, _query, count), fut in zip(asked, futures, strict=True):
                what = " (how many)" if count else ""
                try:
                    results.append(
                        (label, count, fut.result(timeout=max(stop_at - time.monotonic(), 0.0)))
                    )
                except cf.TimeoutError:
                    warnings.append(f"uncatalogued series by {label}{what}: unanswered in time")
                except SourceError as err:
                    warnings.append(f"uncatalogued series by {label}{what}: {err}")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        grid = np.arange(start, end + step / 2, step, dtype=np.float64)
        index: dict[tuple[str, str, str, str, generic.Part], int] = {}
        cells: list[tuple[int, npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
        counted: list[tuple[tuple[str, str, str, str, generic.Part], Series]] = []
        dropped = 0
        for label, count, got in results:
            for lbls, ts, values in got:
                name, service = lbls.get("__name__", ""), lbls.get(label, "")
                le, q = lbls.get("le", ""), lbls.get("quantile", "")
                part = generic.classify(name, bool(le), bool(q))
                if not name or not service or part == "skip":
                    continue
                key = (name, service, le, q, part)
                if count:
                    counted.append((key, (lbls, ts, values)))
                    continue
                if key not in index and len(index) >= generic.MAX_SERIES:
                    dropped += 1
                    continue
                cells.append((index.setdefault(key, len(index)), ts, values))
        if dropped:
            warnings.append(
                f"{len(index) + dropped} uncatalogued series named a service; only the first "
                f"{generic.MAX_SERIES} were read (add the rest to a catalog to judge them)"
            )
        if not index:
            return None, warnings, queries[0][1] if queries else ""
        sums = np.full((len(index), len(grid)), np.nan)
        members = np.full((len(index), len(grid)), np.nan)
        for row, ts, values in cells:
            _add_on_grid(sums, row, ts, values, start, step)
        for counted_key, (_lbls, ts, values) in counted:
            if counted_key in index:
                _add_on_grid(members, index[counted_key], ts, values, start, step)
        keys, matrix = generic.derive(list(index), sums, step, interval, members)
        return _generic_frame(keys, grid, matrix), warnings, queries[0][1] if queries else ""

    def _within_cap(
        self, queries: list[tuple[str, str]], at: float, warnings: list[str], stop_at: float
    ) -> list[tuple[str, str]]:
        """The generic queries whose series fit :data:`correlator.generic.MAX_SERIES`.

        One instant query counts each query's series at ``at``; queries are
        kept in precedence order while they fit, the rest are named in a
        warning. When the count cannot be had, every query goes (each answer
        is still capped as it is read).
        """
        if not queries:
            return queries
        try:
            rows = _bounded(stop_at, self.instant, render_counts([q for _, q in queries]), at)
        except cf.TimeoutError:
            warnings.append("uncatalogued series: not counted in time; left out")
            return []
        except SourceError:
            return queries
        counts = {int(lbl.get(PART_LABEL, "-1")): v for lbl, v in rows}
        kept: list[tuple[str, str]] = []
        total = 0.0
        for i, (label, query) in enumerate(queries):
            n = counts.get(i, 0.0)
            if total + n > generic.MAX_SERIES:
                warnings.append(
                    f"uncatalogued series by {label}: {n:g} series would pass the cap of "
                    f"{generic.MAX_SERIES}; left out (name them in a catalog to judge them)"
                )
                continue
            # A query with no series now is still sent: its series may be in the baseline only.
            total += n
            kept.append((label, query))
        return kept

    def _run(
        self,
        jobs: list[_Job],
        start: float,
        end: float,
        step: float,
        stop_at: float,
        limit: str,
        interval: float | None = None,
        present: frozenset[str] | None = None,
    ) -> tuple[dict[tuple[str, int], tuple[pd.DataFrame, str]], list[str], int]:
        """Fetch every job, ``concurrency`` at a time, until ``stop_at`` (``limit`` names it)."""
        failed = threading.Event()
        results: dict[tuple[str, int], tuple[pd.DataFrame, str]] = {}
        warnings: list[str] = []
        answered: set[cf.Future[Any]] = set()
        fallbacks = 0

        def fetch(job: _Job) -> tuple[pd.DataFrame, str, bool] | None:
            if failed.is_set() or time.monotonic() >= stop_at:
                return None  # the call has given up: send nothing more
            try:
                return self._fetch(job.spec, start, end, step, stop_at, interval, present)
            except SourceError as err:
                if getattr(err, "cut_at", 0.0) >= stop_at:
                    # Cut by this call's own limit: abandoned, as if the wait below ended first.
                    return None
                if getattr(err, "status", None) not in (400, 422):
                    failed.set()
                raise

        pool = cf.ThreadPoolExecutor(
            max_workers=max(1, min(self.concurrency, len(jobs))),
            thread_name_prefix=f"{self.name}-query",
        )
        try:
            futures = {pool.submit(carry(fetch), job): job for job in jobs}
            pending = set(futures)
            while pending:
                timeout = max(stop_at - time.monotonic(), 0.0)
                done, pending = cf.wait(pending, timeout=timeout, return_when=cf.FIRST_COMPLETED)
                if not done:
                    break  # time is up: what is still pending is abandoned
                for fut in done:
                    job = futures[fut]
                    try:
                        got = fut.result()
                    except SourceError as err:
                        if getattr(err, "status", None) not in (400, 422):
                            raise
                        warnings.append(f"{job.label}: {err}")
                        answered.add(fut)
                        continue
                    if got is None:
                        continue  # skipped at the limit: abandoned
                    answered.add(fut)
                    frame, query, fell_back = got
                    fallbacks += fell_back
                    if not frame.empty:
                        results[(job.role, job.index)] = (frame, query)
        finally:
            # Never wait for a query in flight: its request is cut at stop_at (time_limit).
            pool.shutdown(wait=False, cancel_futures=True)
        abandoned = [job for fut, job in futures.items() if fut not in answered]
        if abandoned:
            warnings.append(
                f"{len(abandoned)} of {len(jobs)} queries abandoned, unanswered at {limit}: "
                + ", ".join(job.label for job in abandoned)
            )
        return results, warnings, fallbacks

    def _fetch(
        self,
        spec: SignalSpec,
        start: float,
        end: float,
        step: float,
        stop_at: float,
        interval: float | None = None,
        present: frozenset[str] | None = None,
    ) -> tuple[pd.DataFrame, str, bool]:
        """One spec as a frame, with the query that produced it and whether it fell back."""
        query = render_promql(spec, step, interval, self.rate_window, present)
        remaining = stop_at - time.monotonic()
        series = self.query_range(query, start, end, step, timeout=remaining)
        frame = _to_frame(spec, series)
        if frame is not None:
            return frame, query, False
        # A service spans partitions and its values cannot be combined here.
        query = render_chain(spec, step, interval, self.rate_window, present)
        remaining = stop_at - time.monotonic()
        series = self.query_range(query, start, end, step, timeout=max(remaining, 1.0))
        frame = _to_frame(spec, series)
        return (frame if frame is not None else empty_frame(SIGNAL_COLUMNS)), query, True


def _bounded(stop_at: float, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in a thread of its own, waited for until ``stop_at`` at most.

    Raises :class:`concurrent.futures.TimeoutError` when time runs out; the
    thread then ends with the time limit in force (see :func:`correlator.http.time_limit`),
    unwaited.
    """
    pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="prometheus-probe")
    try:
        return pool.submit(carry(fn), *args).result(timeout=max(stop_at - time.monotonic(), 0.0))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _parse_duration(text: str) -> float | None:
    """A Prometheus duration (``15s``, ``1m30s``, ``500ms``) in seconds (``None``: not one)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, number, i = 0.0, "", 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit():
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if not number or unit not in units:
            return None
        total += int(number) * units[unit]
        number, i = "", i + len(unit)
    return total if total > 0 and not number else None


def _add_on_grid(
    matrix: npt.NDArray[np.float64],
    row: int,
    ts: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    start: float,
    step: float,
) -> None:
    """Add a series' values to ``matrix[row]`` on the query grid (NaN counts as 0 once a
    value lands there)."""
    at = np.rint((ts - start) / step).astype(np.int64)
    ok = (at >= 0) & (at < matrix.shape[1]) & ~np.isnan(values)
    at, v = at[ok], values[ok]
    matrix[row, at] = np.where(np.isnan(matrix[row, at]), 0.0, matrix[row, at]) + v


def _generic_frame(
    keys: list[tuple[str, str]], grid: npt.NDArray[np.float64], matrix: npt.NDArray[np.float64]
) -> pd.DataFrame | None:
    """Generic rows (``series``, service, detail = metric name) as a ``SIGNAL_COLUMNS`` frame."""
    g, t = np.nonzero(~np.isnan(matrix))
    if not len(g):
        return None
    services = np.array([k[0] for k in keys], dtype=object)
    details = np.array([k[1] for k in keys], dtype=object)
    data: dict[str, Any] = {c: pd.Series([None] * len(g), dtype="object") for c in _DIM_COLUMNS}
    data["role"] = pd.Series(np.full(len(g), GENERIC, dtype=object), dtype="object")
    data["service"] = pd.Series(services[g], dtype="object")
    data["detail"] = pd.Series(details[g], dtype="object")
    data["ts"] = grid[t]
    data["value"] = matrix[g, t]
    return pd.DataFrame(data, columns=list(SIGNAL_COLUMNS))


def _combine(
    parts: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]], how: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Series of one service from several partitions as one, as PromQL would aggregate them."""
    ts = np.unique(np.concatenate([p[0] for p in parts]))
    acc = np.full(len(ts), np.nan)
    seen = np.zeros(len(ts), dtype=bool)
    for t, v in parts:
        idx = np.searchsorted(ts, t)
        if how == "sum":  # NaN propagates, as in PromQL's sum
            acc[idx] = np.where(seen[idx], acc[idx] + v, v)
        elif how == "max":  # NaN only when every value is NaN, as in PromQL
            acc[idx] = np.where(seen[idx], np.fmax(acc[idx], v), v)
        else:
            acc[idx] = np.where(seen[idx], np.fmin(acc[idx], v), v)
        seen[idx] = True
    return ts, acc


def _to_frame(spec: SignalSpec, series: Sequence[Series]) -> pd.DataFrame | None:
    """The series as a ``SIGNAL_COLUMNS`` frame; ``None`` when one service spans partitions
    and its values cannot be combined (histogram quantiles, averages)."""
    dims = [(dim, spec.dims.get(dim)) for dim in _DIM_COLUMNS]
    groups: dict[tuple[str, tuple[str | None, ...]], list[tuple[Any, Any]]] = {}
    for labels, ts, values in series:
        service = service_of(labels, spec)
        if not service:
            continue
        key = (service, tuple((labels.get(src) or None) if src else None for _, src in dims))
        groups.setdefault(key, []).append((ts, values))
    how = "sum" if spec.kind == "counter" else spec.agg
    if any(len(parts) > 1 for parts in groups.values()) and (
        spec.kind == "histogram" or how not in ("sum", "max", "min")
    ):
        return None
    keys: list[tuple[str, tuple[str | None, ...]]] = []
    counts: list[int] = []
    ts_parts, value_parts = [], []
    for key, parts in groups.items():
        ts, values = parts[0] if len(parts) == 1 else _combine(parts, how)
        keep = ~np.isnan(values)
        n = int(keep.sum())
        if not n:
            continue
        keys.append(key)
        counts.append(n)
        ts_parts.append(ts[keep])
        value_parts.append(values[keep])
    if not keys:
        empty: pd.DataFrame = empty_frame(SIGNAL_COLUMNS)
        return empty
    # One value per group, repeated for its points (C loops, not Python lists).
    repeat = np.asarray(counts)

    def column(values: list[Any]) -> pd.Series:
        per_group = np.empty(len(values), dtype=object)
        per_group[:] = values
        return pd.Series(np.repeat(per_group, repeat), dtype="object")

    data: dict[str, Any] = {
        "role": column([spec.role] * len(keys)),
        "service": column([k[0] for k in keys]),
    }
    for i, (dim, _) in enumerate(dims):
        data[dim] = column([k[1][i] for k in keys])
    data["ts"] = np.concatenate(ts_parts)
    data["value"] = np.concatenate(value_parts)
    frame: pd.DataFrame = pd.DataFrame(data, columns=list(SIGNAL_COLUMNS))
    return frame
