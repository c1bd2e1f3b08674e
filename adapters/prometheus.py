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
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlencode

import httpx
import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import Field

from correlator.catalog import Catalog, SignalSpec
from correlator.escape import label_name, promql_string
from correlator.http import HttpBackend, HttpSettings
from correlator.model import SIGNAL_COLUMNS, Alert, Window, empty_frame
from correlator.promql import range_seconds
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
#: Queries in flight at once against one backend.
DEFAULT_CONCURRENCY = 4
#: The label the attribution writes (a name no exporter uses).
SERVICE_LABEL = "correlator_service"
#: A pod name without its Deployment (``-<hash>-<5 chars>``) or StatefulSet
#: (``-<ordinal>``) suffix, in one anchored RE2 regex: the lazy prefix takes
#: the first suffix that fits, and a Deployment suffix (two segments) starts
#: before a StatefulSet one (one segment), so the precedence is that of
#: :func:`correlator.catalog.service_from_pod`.
POD_REGEX = "(?s)(.+?)(?:-[0-9a-z]{5,10}-[0-9a-z]{5}|-[0-9]+)?"
_DEPLOYMENT_POD = "(?s)(.+)-[0-9a-z]{5,10}-[0-9a-z]{5}"
# (?s): a label value may hold a newline, and "." must match it too.
_ANY = "(?s)(.+)"
_STATEFUL_POD = "(?s)(.+)-[0-9]+"
Series = tuple[dict[str, str], npt.NDArray[np.float64], npt.NDArray[np.float64]]
_DIM_COLUMNS = ("peer", "pod", "node", "zone", "version", "detail")


def choose_step(window: Window, minimum: float = 15.0, max_points: int = MAX_POINTS) -> float:
    """A step (seconds) for ``[baseline_start, end]``: at least ``minimum``, under the point limit."""
    span = max(window.end - window.baseline_start, 1.0)
    return float(max(minimum, math.ceil(span / (max_points - 1))))


def _duration(seconds: float) -> str:
    """Seconds as a PromQL duration (``90s``)."""
    return f"{max(math.ceil(seconds), 1)}s"


def _selector(spec: SignalSpec, extra: Sequence[str] = ()) -> str:
    parts = [f"{label_name(m.label)}{m.op}{promql_string(m.value)}" for m in spec.matchers]
    parts += extra
    name: str = spec.metric + ("_bucket" if spec.kind == "histogram" and spec.metric else "")
    if not name and not parts:
        raise ValueError(f"role {spec.role!r}: a spec needs a metric or a matcher")
    return f"{name}{{{','.join(parts)}}}" if parts else name


def _service_labels(spec: SignalSpec) -> list[str]:
    """The spec's service labels, validated, in precedence order, each once."""
    return list(dict.fromkeys(label_name(lbl) for lbl in spec.service_labels))


def _dims(spec: SignalSpec) -> list[str]:
    return sorted({label_name(v) for v in spec.dims.values()})


def _by(*groups: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys(lbl for g in groups for lbl in g))


def service_of(labels: Mapping[str, str], spec: SignalSpec) -> str:
    """The service of a series :func:`render_promql` returned ("" when none)."""
    for lbl in (*_service_labels(spec), SERVICE_LABEL):
        value = labels.get(lbl)
        if value:
            return value
    return ""


def _rng(step: float, rate_window: float | None) -> str:
    return _duration(rate_window if rate_window is not None else range_seconds(step))


def _scaled(expr: str, spec: SignalSpec) -> str:
    return f"({expr}) * {spec.scale!r}" if spec.scale != 1.0 else expr


def _partition(spec: SignalSpec, rng: str, label: str | None, extra: Sequence[str]) -> str:
    """One partition: the series whose service ``label`` decides (``None``: the pod name)."""
    selector = _selector(spec, extra)
    dims = _dims(spec)
    le = ["le"] if spec.kind == "histogram" else []
    if spec.kind in ("counter", "histogram"):
        inner, agg = f"rate({selector}[{rng}])", "sum"
    else:
        inner, agg = selector, spec.agg
    if label is not None:
        expr = f"{agg} by ({_by(le, [label], dims)}) ({inner})"
    else:
        # Pod is a dimension: aggregate by pod (and the dimensions), then name the
        # service of each pod. Otherwise name the service of every series, then
        # aggregate once, so that sums add up in the same order as render_chain's.
        per_pod = "pod" in dims and spec.kind != "histogram"
        grouped = f"{agg} by ({_by(le, ['pod'], dims)}) ({inner})" if per_pod else inner
        expr = (
            f"label_replace({grouped}, {promql_string(SERVICE_LABEL)}, {promql_string('$1')}, "
            f"{promql_string('pod')}, {promql_string(POD_REGEX)})"
        )
        if not per_pod:
            expr = f"{agg} by ({_by(le, [SERVICE_LABEL], dims)}) ({expr})"
    if spec.kind == "histogram":
        expr = f"histogram_quantile({spec.quantile:g}, {expr})"
    return expr


def render_promql(spec: SignalSpec, step: float, rate_window: float | None = None) -> str:
    """The PromQL that computes ``spec`` per service (and dimension), sampled at ``step``.

    ``rate_window`` defaults to :func:`correlator.promql.range_seconds` (the
    bundle backend's range), so both backends compute the same rates. The
    series are partitioned by the label that names their service (see the
    module docstring); :func:`service_of` reads the service back from each
    returned series.
    """
    rng = _rng(step, rate_window)
    labels = _service_labels(spec)
    parts = [
        _partition(spec, rng, lbl, [f'{p}=""' for p in labels[:i]] + [f'{lbl}!=""'])
        for i, lbl in enumerate(labels)
    ]
    if "pod" not in labels:
        parts.append(_partition(spec, rng, None, [f'{p}=""' for p in labels] + ['pod!=""']))
    return _scaled(" or ".join(parts), spec)


def _attribute(expr: str, spec: SignalSpec) -> str:
    """Wrap ``expr`` so that SERVICE_LABEL holds the series' service."""
    # Later label_replace calls overwrite earlier ones, so the most preferred
    # source comes last: pod name, then service_labels from last to first.
    steps: list[tuple[str, str]] = [
        ("pod", _ANY),
        ("pod", _STATEFUL_POD),
        ("pod", _DEPLOYMENT_POD),
    ]
    steps += [(lbl, _ANY) for lbl in reversed(_service_labels(spec))]
    for label, regex in steps:
        expr = (
            f"label_replace({expr}, {promql_string(SERVICE_LABEL)}, {promql_string('$1')}, "
            f"{promql_string(label)}, {promql_string(regex)})"
        )
    return expr


def render_chain(spec: SignalSpec, step: float, rate_window: float | None = None) -> str:
    """``spec`` as one aggregation over every series, attributed by a ``label_replace`` chain.

    The same values as :func:`render_promql`, whatever the labels; slower,
    since the chain runs on every raw series at every step. The adapter falls
    back to it when a service spans partitions and its values cannot be
    combined client-side (histogram quantiles, averages).
    """
    rng = _rng(step, rate_window)
    by = [SERVICE_LABEL, *_dims(spec)]
    selector = _selector(spec)
    if spec.kind == "counter":
        expr = f"sum by ({_by(by)}) ({_attribute(f'rate({selector}[{rng}])', spec)})"
    elif spec.kind == "histogram":
        inner = _attribute(f"rate({selector}[{rng}])", spec)
        expr = f"histogram_quantile({spec.quantile:g}, sum by ({_by(['le'], by)}) ({inner}))"
    else:  # gauge, info
        expr = f"{spec.agg} by ({_by(by)}) ({_attribute(selector, spec)})"
    return _scaled(expr, spec)


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
    min_step: float = Field(15.0, gt=0, description="smallest query step in seconds")
    rate_window: float | None = Field(
        None, gt=0, description="rate() range in seconds (default: from the step)"
    )
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, description="queries in flight at once")
    budget: float | None = Field(
        None, gt=0, description="seconds one signals() call may take (default: 0.9 x timeout)"
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
        )
        self.settings = own
        self.name = own.name
        self.http = backend or HttpBackend(own, client)
        self.ui_url = (own.ui_url or own.public_url).rstrip("/")
        self.min_step = own.min_step
        self.rate_window = own.rate_window
        self.concurrency = own.concurrency
        self.budget = own.budget if own.budget is not None else 0.9 * own.timeout
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
            raise SourceError(
                f"{self.settings.display_name} at {self.settings.public_url}{path}: "
                f"answered without success: {detail or str(body)[:200]}"
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
        return render_promql(specs[0], step, self.rate_window)

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
        jobs = [
            _Job(role, i, spec)
            for role, specs in catalog.roles.items()
            for i, spec in enumerate(specs)
        ]
        frames, warnings, fallbacks = self._run(jobs, start, end, step, stop_at, limit)
        queries: dict[str, str] = {}
        links: dict[str, str] = {}
        kept: list[pd.DataFrame] = []
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
                kept.append(frame)
                queries.setdefault(role, query)
                links.setdefault(role, self.graph_url(query, start, end, step))
        with self._count:
            self._fallbacks += fallbacks
        for role in catalog.roles:
            if role not in queries and (first := self.query_for(catalog, role, step)):
                queries[role] = first
        out = (
            pd.concat(kept, ignore_index=True).loc[:, list(SIGNAL_COLUMNS)]
            if kept
            else empty_frame(SIGNAL_COLUMNS)
        )
        return MetricResult(
            frame=out, step=step, queries=queries, links=links, warnings=tuple(warnings)
        )

    def _run(
        self, jobs: list[_Job], start: float, end: float, step: float, stop_at: float, limit: str
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
                return self._fetch(job.spec, start, end, step, stop_at)
            except SourceError as err:
                if getattr(err, "status", None) not in (400, 422):
                    failed.set()
                raise

        pool = cf.ThreadPoolExecutor(
            max_workers=max(1, min(self.concurrency, len(jobs))),
            thread_name_prefix=f"{self.name}-query",
        )
        try:
            futures = {pool.submit(fetch, job): job for job in jobs}
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
            # Never wait for a query in flight: its thread ends with its HTTP timeout.
            pool.shutdown(wait=False, cancel_futures=True)
        abandoned = [job for fut, job in futures.items() if fut not in answered]
        if abandoned:
            warnings.append(
                f"{len(abandoned)} of {len(jobs)} queries abandoned, unanswered at {limit}: "
                + ", ".join(job.label for job in abandoned)
            )
        return results, warnings, fallbacks

    def _fetch(
        self, spec: SignalSpec, start: float, end: float, step: float, stop_at: float
    ) -> tuple[pd.DataFrame, str, bool]:
        """One spec as a frame, with the query that produced it and whether it fell back."""
        query = render_promql(spec, step, self.rate_window)
        remaining = stop_at - time.monotonic()
        series = self.query_range(query, start, end, step, timeout=remaining)
        frame = _to_frame(spec, series)
        if frame is not None:
            return frame, query, False
        # A service spans partitions and its values cannot be combined here.
        query = render_chain(spec, step, self.rate_window)
        remaining = stop_at - time.monotonic()
        series = self.query_range(query, start, end, step, timeout=max(remaining, 1.0))
        frame = _to_frame(spec, series)
        return (frame if frame is not None else empty_frame(SIGNAL_COLUMNS)), query, True


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
