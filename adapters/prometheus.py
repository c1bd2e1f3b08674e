"""Metrics from anything that speaks the Prometheus HTTP API.

Prometheus, Thanos, Mimir/Cortex (set ``tenant``) and VictoriaMetrics all
answer ``/api/v1/query_range`` and ``/api/v1/query``. :class:`PrometheusAdapter`
implements :class:`~correlator.sources.MetricSource`: for every catalog
:class:`~correlator.catalog.SignalSpec` alternative it sends **one**
``query_range`` whose PromQL aggregates by service (and the spec's
dimensions), so the request count depends on the catalog, never on the number
of services.

Service attribution happens inside the query: a chain of ``label_replace``
copies the first non-empty ``service_labels`` label, failing that the pod name
without its Deployment/StatefulSet suffix (as
:func:`correlator.catalog.service_from_pod` does), into one grouping label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import pandas as pd

from correlator.catalog import Catalog, SignalSpec
from correlator.escape import label_name, promql_string
from correlator.http import HttpBackend, HttpSettings
from correlator.model import SIGNAL_COLUMNS, Window, empty_frame
from correlator.promql import range_seconds
from correlator.sources import SourceError

__all__ = ["MAX_POINTS", "PrometheusAdapter", "choose_step", "render_promql"]

#: Prometheus refuses a range query with more than 11,000 points per series.
MAX_POINTS = 11_000
#: The label the attribution chain writes (a name no exporter uses).
SERVICE_LABEL = "correlator_service"
_DEPLOYMENT_POD = "(?s)(.+)-[0-9a-z]{5,10}-[0-9a-z]{5}"
# (?s): a label value may hold a newline, and "." must match it too.
_ANY = "(?s)(.+)"
_STATEFUL_POD = "(?s)(.+)-[0-9]+"


def choose_step(window: Window, minimum: float = 15.0, max_points: int = MAX_POINTS) -> float:
    """A step (seconds) for ``[baseline_start, end]``: at least ``minimum``, under the point limit."""
    span = max(window.end - window.baseline_start, 1.0)
    return float(max(minimum, math.ceil(span / (max_points - 1))))


def _duration(seconds: float) -> str:
    """Seconds as a PromQL duration (``90s``)."""
    return f"{max(math.ceil(seconds), 1)}s"


def _selector(spec: SignalSpec) -> str:
    parts = [f"{label_name(m.label)}{m.op}{promql_string(m.value)}" for m in spec.matchers]
    name = spec.metric + ("_bucket" if spec.kind == "histogram" and spec.metric else "")
    if not name and not parts:
        raise ValueError(f"role {spec.role!r}: a spec needs a metric or a matcher")
    return name + "{" + ",".join(parts) + "}" if parts else name


def _attribute(expr: str, spec: SignalSpec) -> str:
    """Wrap ``expr`` so that SERVICE_LABEL holds the series' service."""
    src = (SERVICE_LABEL, "$1")
    # Later label_replace calls overwrite earlier ones, so the most preferred
    # source comes last: pod name, then service_labels from last to first.
    steps: list[tuple[str, str]] = [
        ("pod", _ANY),
        ("pod", _STATEFUL_POD),
        ("pod", _DEPLOYMENT_POD),
    ]
    steps += [(label_name(lbl), _ANY) for lbl in reversed(spec.service_labels)]
    for label, regex in steps:
        expr = (
            f"label_replace({expr}, {promql_string(src[0])}, {promql_string(src[1])}, "
            f"{promql_string(label)}, {promql_string(regex)})"
        )
    return expr


def render_promql(spec: SignalSpec, step: float, rate_window: float | None = None) -> str:
    """The PromQL that computes ``spec`` per service (and dimension), sampled at ``step``.

    ``rate_window`` defaults to :func:`correlator.promql.range_seconds` (the
    bundle backend's range), so both backends compute the same rates.
    Unlike :func:`correlator.promql.render`, attribution to a service happens
    in the query (``label_replace``), so one series comes back per service.
    """
    rng = _duration(rate_window if rate_window is not None else range_seconds(step))
    by = [SERVICE_LABEL, *sorted({label_name(v) for v in spec.dims.values()})]
    selector = _selector(spec)
    if spec.kind == "counter":
        inner = _attribute(f"rate({selector}[{rng}])", spec)
        expr = f"sum by ({', '.join(by)}) ({inner})"
    elif spec.kind == "histogram":
        inner = _attribute(f"rate({selector}[{rng}])", spec)
        expr = f"histogram_quantile({spec.quantile:g}, sum by ({', '.join(['le', *by])}) ({inner}))"
    else:  # gauge, info
        inner = _attribute(selector, spec)
        expr = f"{spec.agg} by ({', '.join(by)}) ({inner})"
    if spec.scale != 1.0:
        expr = f"({expr}) * {spec.scale!r}"
    return expr


class PrometheusAdapter:
    """A :class:`~correlator.sources.MetricSource` over the Prometheus HTTP API.

    ``settings`` say where and how to connect; ``client`` may be injected
    (default: built from ``settings``). ``ui_url`` is the base of the graph
    links (default: the API URL). ``min_step`` bounds the step from below.
    """

    name = "prometheus"

    def __init__(
        self,
        settings: HttpSettings | str,
        client: httpx.Client | None = None,
        *,
        ui_url: str | None = None,
        min_step: float = 15.0,
        rate_window: float | None = None,
        name: str | None = None,
        backend: HttpBackend | None = None,
    ) -> None:
        if isinstance(settings, str):
            settings = HttpSettings(name="prometheus", url=settings)
        self.settings = settings
        self.http = backend or HttpBackend(settings, client)
        self.ui_url = (ui_url or settings.public_url).rstrip("/")
        self.min_step = min_step
        self.rate_window = rate_window
        if name:
            self.name = name
        self.queries: dict[str, str] = {}
        """Role -> the query whose data was used in the last :meth:`signals` call."""
        self.links: dict[str, str] = {}
        """Role -> a graph URL for that query."""
        self.warnings: list[str] = []
        """Alternatives the backend rejected (400/422) in the last call; others still ran."""
        self._window: Window | None = None

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
        self, query: str, start: float, end: float, step: float
    ) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        """Run a range query; returns ``(labels, ts, values)`` per series."""
        data = self._api(
            "/api/v1/query_range",
            {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        if data.get("resultType") != "matrix":
            raise SourceError(
                f"{self.settings.display_name}: query_range returned {data.get('resultType')!r}, "
                "expected a matrix"
            )
        out = []
        for series in data.get("result") or ():
            values = series.get("values") or []
            ts = np.array([float(v[0]) for v in values], dtype=np.float64)
            vals = np.array([float(v[1]) for v in values], dtype=np.float64)
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

    def query_for(self, catalog: Catalog, role: str) -> str | None:
        """The query that showed ``role`` in the last call, else the first alternative's."""
        if role in self.queries:
            return self.queries[role]
        specs = catalog.specs(role)
        if not specs:
            return None
        step = choose_step(self._window, self.min_step) if self._window else 60.0
        return render_promql(specs[0], step, self.rate_window)

    def signals(self, catalog: Catalog, window: Window, step: float) -> pd.DataFrame:
        """Every catalog role over ``[window.baseline_start, window.end]``: one query per spec.

        For each role and service the first alternative with data wins.
        """
        self._window = window
        step = max(float(step), choose_step(window, self.min_step))
        # The grid starts at the baseline start itself, not at a step multiple:
        # the bundle backend samples the same instants, so both backends agree.
        start = window.baseline_start
        end = window.end
        self.queries, self.links, self.warnings = {}, {}, []
        frames: list[pd.DataFrame] = []
        for role, specs in catalog.roles.items():
            seen: set[str] = set()
            for spec in specs:
                query = render_promql(spec, step, self.rate_window)
                try:
                    series = self.query_range(query, start, end, step)
                except SourceError as err:
                    if getattr(err, "status", None) in (400, 422):
                        self.warnings.append(f"{role} ({spec.source or spec.metric}): {err}")
                        continue
                    raise
                frame = _to_frame(role, spec, series)
                if frame.empty:
                    continue
                frame = frame[~frame["service"].isin(seen)]
                if frame.empty:
                    continue
                seen.update(frame["service"].unique())
                frames.append(frame)
                self.queries.setdefault(role, query)
                self.links.setdefault(role, self.graph_url(query, start, end, step))
        if not frames:
            return empty_frame(SIGNAL_COLUMNS)
        out = pd.concat(frames, ignore_index=True)
        return out.loc[:, list(SIGNAL_COLUMNS)]


def _to_frame(
    role: str, spec: SignalSpec, series: Sequence[tuple[dict[str, str], np.ndarray, np.ndarray]]
) -> pd.DataFrame:
    cols: dict[str, list[Any]] = {c: [] for c in SIGNAL_COLUMNS}
    ts_parts, value_parts = [], []
    for labels, ts, values in series:
        service = labels.get(SERVICE_LABEL, "")
        if not service:
            continue
        keep = ~np.isnan(values)
        n = int(keep.sum())
        if not n:
            continue
        ts_parts.append(ts[keep])
        value_parts.append(values[keep])
        cols["role"].extend([role] * n)
        cols["service"].extend([service] * n)
        for dim in ("peer", "pod", "node", "zone", "version", "detail"):
            source = spec.dims.get(dim)
            value = labels.get(source) if source else None
            cols[dim].extend([value or None] * n)
    if not ts_parts:
        return empty_frame(SIGNAL_COLUMNS)
    data: dict[str, Any] = {k: pd.Series(v, dtype="object") for k, v in cols.items()}
    data["ts"] = np.concatenate(ts_parts)
    data["value"] = np.concatenate(value_parts)
    return pd.DataFrame(data, columns=list(SIGNAL_COLUMNS))
