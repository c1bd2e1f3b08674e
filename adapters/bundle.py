"""The scenario-bundle (file) backend: alerts, metrics, logs, traces and topology from disk.

``BundleBackend(path)`` reads one bundle folder or a folder of bundles; with
no path it reads the library shipped in the ``correlator.scenarios`` package.
Metric roles are computed in pandas/numpy exactly as the PromQL that
:func:`correlator.promql.render` prints would compute them on a Prometheus
holding the same samples:

* counter: ``rate()`` over ``max(4*step, 60s)`` with counter-reset handling
  and Prometheus' extrapolation to the range boundaries;
* gauge/info: the last sample within the 5-minute lookback, then ``agg``;
* histogram: ``histogram_quantile`` over the per-``le`` summed bucket rates.

Each bundle's files are parsed once and cached for the backend's lifetime.
"""

from __future__ import annotations

import copy

import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from correlator.bundle import Bundle, find_bundles, read_bundle
from correlator.catalog import Catalog, SignalSpec, service_from_pod
from correlator.errors import UserInputError
from correlator.model import SIGNAL_COLUMNS, SPAN_COLUMNS, Alert, Window, empty_frame
from correlator.openmetrics import Metrics, Series
from correlator.promql import range_seconds, render

__all__ = ["LOOKBACK", "BundleBackend", "default_library", "evaluate_spec"]

#: Prometheus' instant-vector lookback (``--query.lookback-delta``), seconds.
LOOKBACK = 300.0
_MIN_PREFIX = 6


def default_library() -> Path:
    """The bundles shipped with correlator (the ``correlator.scenarios`` package)."""
    return Path(str(importlib.resources.files("correlator.scenarios")))


# --------------------------------------------------------------------------- evaluation


def _select(metrics: Metrics, spec: SignalSpec, index: dict[str, list[Series]]) -> list[Series]:
    if spec.metric:
        name = spec.metric + ("_bucket" if spec.kind == "histogram" else "")
        candidates = index.get(name, [])
    else:
        candidates = list(metrics.series)
        if spec.kind == "histogram":
            candidates = [s for s in candidates if s.name.endswith("_bucket")]
    return [s for s in candidates if all(m.matches(s.get(m.label)) for m in spec.matchers)]


def _service_of(series: Series, spec: SignalSpec) -> str | None:
    for label in spec.service_labels:
        value = series.get(label)
        if value:
            return str(value)
    pod = series.get("pod")
    return service_from_pod(pod) if pod else None


def _rates(
    series: list[Series], grid: npt.NDArray[np.float64], rng: float
) -> npt.NDArray[np.float64]:
    """Prometheus ``rate(x[rng])`` at each grid time, one row per series (NaN: no value)."""
    out = np.full((len(series), len(grid)), np.nan)
    for i, s in enumerate(series):
        ts, v = s.ts, s.values
        if len(ts) < 2:
            continue
        drops = np.zeros(len(v))
        drops[1:] = np.where(v[1:] < v[:-1], v[:-1], 0.0)
        corr = np.cumsum(drops)
        lo = np.searchsorted(ts, grid - rng, side="left")
        hi = np.searchsorted(ts, grid, side="right") - 1
        ok = hi - lo >= 1
        if not ok.any():
            continue
        lo, hi, t = lo[ok], hi[ok], grid[ok]
        first_t, last_t, first_v = ts[lo], ts[hi], v[lo]
        result = v[hi] - first_v + (corr[hi] - corr[lo])
        sampled = last_t - first_t
        avg = sampled / (hi - lo)
        to_start = first_t - (t - rng)
        to_end = t - last_t
        # A counter cannot extrapolate below zero (Prometheus' durationToZero).
        with np.errstate(divide="ignore", invalid="ignore"):
            to_zero = np.where((result > 0) & (first_v >= 0), sampled * (first_v / result), np.inf)
        to_start = np.minimum(to_start, to_zero)
        threshold = avg * 1.1
        interval = sampled + np.where(to_start < threshold, to_start, avg / 2)
        interval = interval + np.where(to_end < threshold, to_end, avg / 2)
        out[i, ok] = result * (interval / sampled) / rng
    return out


def _instant(series: list[Series], grid: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The last sample at or before each grid time within the lookback (NaN otherwise)."""
    out = np.full((len(series), len(grid)), np.nan)
    for i, s in enumerate(series):
        hi = np.searchsorted(s.ts, grid, side="right") - 1
        ok = hi >= 0
        ok[ok] = s.ts[hi[ok]] > grid[ok] - LOOKBACK
        vals = s.values[hi[ok]]
        out[i, ok] = np.where(np.isnan(vals), np.nan, vals)  # StaleNaN-free files only
    return out


def _aggregate(
    matrix: npt.NDArray[np.float64], codes: npt.NDArray[np.int64], n: int, agg: str
) -> npt.NDArray[np.float64]:
    """Aggregate rows by group code, ignoring NaN (NaN where a group has no value)."""
    frame = pd.DataFrame(matrix)
    grouped = frame.groupby(codes)
    if agg == "sum":
        res = grouped.sum(min_count=1)
    elif agg == "max":
        res = grouped.max()
    elif agg == "min":
        res = grouped.min()
    else:
        res = grouped.mean()
    out: npt.NDArray[np.float64] = res.reindex(range(n)).to_numpy(dtype=np.float64)
    return out


def _quantile(
    q: float, les: npt.NDArray[np.float64], counts: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Prometheus ``histogram_quantile`` for one bucket set: ``counts`` is (n_le, n_t)."""
    order = np.argsort(les)
    les, counts = les[order], counts[order]
    out = np.full(counts.shape[1], np.nan)
    if len(les) < 2 or not np.isinf(les[-1]):
        return out
    counts = np.fmax.accumulate(np.nan_to_num(counts, nan=0.0), axis=0)  # ensure monotonic
    total = counts[-1]
    valid = total > 0
    rank = q * total
    b = (counts >= rank[None, :]).argmax(axis=0)
    for j in np.flatnonzero(valid):
        bj = int(b[j])
        if bj == len(les) - 1:
            out[j] = les[-2]
            continue
        start = 0.0 if bj == 0 else les[bj - 1]
        if bj == 0 and les[0] <= 0:
            out[j] = les[0]
            continue
        below = 0.0 if bj == 0 else counts[bj - 1, j]
        in_bucket = counts[bj, j] - below
        r = rank[j] - below
        out[j] = start + (les[bj] - start) * (r / in_bucket if in_bucket > 0 else 1.0)
    return out


def evaluate_spec(
    metrics: Metrics,
    spec: SignalSpec,
    window: Window,
    step: float,
    index: dict[str, list[Series]] | None = None,
) -> pd.DataFrame:
    """One spec over ``[window.baseline_start, window.end]`` as a ``SIGNAL_COLUMNS`` frame."""
    index = index if index is not None else metrics.by_name()
    chosen = _select(metrics, spec, index)
    grid = np.arange(window.baseline_start, window.end + step / 2, step, dtype=np.float64)
    rows: list[tuple[str, tuple[str | None, ...], str]] = []
    kept: list[Series] = []
    dims = list(spec.dims.items())
    for s in chosen:
        service = _service_of(s, spec)
        if not service:
            continue
        dim_values = tuple((s.get(label) or None) for _, label in dims)
        rows.append((service, dim_values, s.get("le") if spec.kind == "histogram" else ""))
        kept.append(s)
    if not kept:
        return empty_frame(SIGNAL_COLUMNS)
    rng = float(range_seconds(step))
    if spec.kind in ("counter", "histogram"):
        matrix = _rates(kept, grid, rng)
    else:
        matrix = _instant(kept, grid)
        if spec.kind == "info":
            matrix = np.where(np.isnan(matrix), np.nan, 1.0)
    keys = pd.Series([(svc, d) for svc, d, _ in rows], dtype=object)
    codes_arr, groups = pd.factorize(keys)
    codes = np.asarray(codes_arr, dtype=np.int64)
    if spec.kind == "histogram":
        values = np.full((len(groups), len(grid)), np.nan)
        for g in range(len(groups)):
            members = np.flatnonzero(codes == g)
            le_text = [rows[m][2] for m in members]
            try:
                les = np.array([float(x) for x in le_text])
            except ValueError:
                continue
            uniq, le_codes = np.unique(les, return_inverse=True)
            summed = _aggregate(matrix[members], le_codes.astype(np.int64), len(uniq), "sum")
            values[g] = _quantile(spec.quantile, uniq, summed)
    else:
        values = _aggregate(
            matrix, codes, len(groups), "sum" if spec.kind == "counter" else spec.agg
        )
    values = values * spec.scale
    g_idx, t_idx = np.nonzero(~np.isnan(values))
    if len(g_idx) == 0:
        return empty_frame(SIGNAL_COLUMNS)
    data: dict[str, Any] = {
        "role": spec.role,
        "service": [groups[g][0] for g in g_idx.tolist()],
        "ts": grid[t_idx],
        "value": values[g_idx, t_idx],
    }
    for col in ("peer", "pod", "node", "zone", "version", "detail"):
        data[col] = None
    for k, (dim, _) in enumerate(dims):
        data[dim] = [groups[g][1][k] for g in g_idx.tolist()]
    frame = pd.DataFrame(data, columns=list(SIGNAL_COLUMNS))
    for col in ("role", "service", "peer", "pod", "node", "zone", "version", "detail"):
        frame[col] = frame[col].astype(object)
    return frame


# --------------------------------------------------------------------------- backend


class BundleBackend:
    """Alerts, metrics, logs, traces and topology from scenario bundles on disk.

    Implements ``AlertSource``, ``MetricSource``, ``LogSource``, ``TraceSource``
    and ``TopologySource``. The data methods read the bundle of the alert last
    resolved with :meth:`alert` (or set with :meth:`use`); with one bundle,
    that one.
    """

    name = "bundle"

    def __init__(self, path: str | Path | None = None) -> None:
        self.root = Path(path) if path is not None else default_library()
        self._paths = find_bundles(self.root)
        self._bundles: dict[Path, Bundle] = {}
        self._current: Bundle | None = None

    def bundles(self) -> list[Bundle]:
        """Every bundle under the root (read on first use)."""
        out = []
        for p in self._paths:
            if p not in self._bundles:
                self._bundles[p] = read_bundle(p)
            out.append(self._bundles[p])
        return out

    # ---- AlertSource
    def alerts(self) -> list[Alert]:
        """Every alert of every bundle."""
        return [a for b in self.bundles() for a in b.alerts]

    def alert(self, fingerprint: str) -> Alert | None:
        """The alert with this fingerprint, or a unique prefix of at least 6 characters."""
        fp = fingerprint.strip().lower()
        every = self.alerts()
        exact = [a for a in every if a.fingerprint == fp]
        matches = exact or (
            [a for a in every if a.fingerprint.startswith(fp)] if len(fp) >= _MIN_PREFIX else []
        )
        if not matches:
            return None
        if len({(a.fingerprint, a.source) for a in matches}) > 1:
            listed = ", ".join(
                f"{a.fingerprint} ({a.name}, {Path(a.source).name})" for a in matches
            )
            raise UserInputError(
                f"alert id {fingerprint!r} is ambiguous; it matches {listed}. Give more characters."
            )
        self._current = self.bundle_for(matches[0])
        return matches[0]

    def bundle_for(self, alert: Alert) -> Bundle:
        """The bundle an alert came from."""
        for b in self.bundles():
            if alert.source and Path(alert.source) == b.path:
                return b
        for b in self.bundles():
            if any(a.fingerprint == alert.fingerprint for a in b.alerts):
                return b
        raise UserInputError(f"alert {alert.fingerprint} is not from a bundle under {self.root}")

    def use(self, alert_or_bundle: Alert | Bundle) -> None:
        """Point the data methods at this alert's bundle."""
        if isinstance(alert_or_bundle, Bundle):
            self._current = alert_or_bundle
        else:
            self._current = self.bundle_for(alert_or_bundle)

    def bound(self, alert: Alert) -> BundleBackend:
        """A backend whose data methods read this alert's bundle (shares the cache).

        Use this rather than :meth:`use` when investigations run concurrently.
        """
        clone = copy.copy(self)
        clone._current = self.bundle_for(alert)
        return clone

    def _bundle(self, window: Window | None = None) -> Bundle:
        if self._current is not None:
            return self._current
        bundles = self.bundles()
        if window is not None:
            for b in bundles:
                if b.window[0] <= window.start <= b.window[1]:
                    return b
        if not bundles:
            raise UserInputError(f"no scenario bundles under {self.root}")
        return bundles[0]

    # ---- MetricSource
    def signals(self, catalog: Catalog, window: Window, step: float) -> pd.DataFrame:
        """Every catalog role for the bundle (the first alternative with data wins per service)."""
        bundle = self._bundle(window)
        cat = bundle.merged_catalog(catalog)
        metrics = bundle.metrics
        index = bundle._cache.setdefault("by_name", metrics.by_name())
        frames = []
        for role, specs in cat.roles.items():
            covered: set[str] = set()
            for spec in specs:
                frame = evaluate_spec(metrics, spec, window, step, index)
                if frame.empty:
                    continue
                frame = frame[~frame["service"].isin(covered)]
                covered.update(frame["service"].unique().tolist())
                frames.append(frame)
            del role
        if not frames:
            return empty_frame(SIGNAL_COLUMNS)
        return pd.concat(frames, ignore_index=True)

    def query_for(self, catalog: Catalog, role: str) -> str | None:
        """The PromQL of the role's first alternative (step 60s)."""
        bundle = self._current
        cat = bundle.merged_catalog(catalog) if bundle is not None else catalog
        specs = cat.specs(role)
        return render(specs[0], 60.0) if specs else None

    # ---- LogSource
    def logs(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        min_severity: int = 13,
        limit: int = 5000,
    ) -> pd.DataFrame:
        """Records at or above ``min_severity`` in the window (most severe kept when over limit)."""
        df = self._bundle(window).logs
        mask = (df["ts"] >= window.baseline_start) & (df["ts"] <= window.end)
        mask &= df["severity"] >= min_severity
        if services is not None:
            mask &= df["service"].isin(list(services))
        out = df[mask]
        if len(out) > limit:
            out = out.sort_values(["severity", "ts"], ascending=[False, False]).head(limit)
        return out.sort_values("ts", kind="stable").reset_index(drop=True)

    # ---- TraceSource
    def spans(
        self, window: Window, services: Sequence[str] | None = None, limit: int = 200
    ) -> pd.DataFrame:
        """Spans of failing traces first, then the slowest, bounded to ``limit`` traces."""
        df = self._bundle(window).spans
        if df.empty:
            return empty_frame(SPAN_COLUMNS)
        inside = df[(df["start"] >= window.start) & (df["start"] <= window.end)]
        if services is not None:
            inside = inside[inside["service"].isin(list(services))]
        if inside.empty:
            return empty_frame(SPAN_COLUMNS)
        per = (
            df[df["trace_id"].isin(inside["trace_id"].unique())]
            .groupby("trace_id")
            .agg(failed=("status", lambda s: bool((s == 2).any())), longest=("duration", "max"))
        )
        per = per.sort_values(["failed", "longest"], ascending=[False, False])
        keep = per.index[:limit]
        out = df[df["trace_id"].isin(keep)]
        return out.sort_values(["trace_id", "start"], kind="stable").reset_index(drop=True)

    # ---- TopologySource
    def edges(self, window: Window) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """Declared edges, client->server pairs in spans, and edge-rate series pairs."""
        bundle = self._bundle(window)
        pairs: list[tuple[str, str]] = []
        kinds: dict[str, str] = {}
        topo = bundle.topology or {}
        for node in topo.get("nodes", []):
            kinds[node["id"]] = node.get("kind", "service")
        for e in topo.get("edges", []):
            pairs.append((e["source"], e["target"]))
        spans = bundle.spans
        if not spans.empty:
            by_id = spans.set_index("span_id")["service"]
            by_id = by_id[~by_id.index.duplicated()]
            child = spans[spans["parent_span_id"].notna()]
            parent_service = child["parent_span_id"].map(by_id)
            cross = child[parent_service.notna() & (parent_service != child["service"])]
            for caller, callee in zip(
                parent_service[cross.index].tolist(), cross["service"].tolist(), strict=True
            ):
                pairs.append((caller, callee))
            clients = spans[(spans["kind"] == 3) & spans["peer"].notna()]
            for svc, peer, dbs in zip(
                clients["service"].tolist(),
                clients["peer"].tolist(),
                clients["db_system"].tolist(),
                strict=True,
            ):
                pairs.append((svc, peer))
                if dbs:
                    kinds.setdefault(peer, "database")
            for svc in spans["service"].unique().tolist():
                kinds.setdefault(svc, "service")
        try:
            metrics = bundle.metrics
            index = bundle._cache.setdefault("by_name", metrics.by_name())
            for spec in bundle.catalog.specs("edge_rate"):
                frame = evaluate_spec(metrics, spec, window, 60.0, index)
                frame = frame[frame["peer"].notna()]
                for caller, callee in (
                    frame[["peer", "service"]].drop_duplicates().itertuples(index=False)
                ):
                    pairs.append((str(caller), str(callee)))
        except UserInputError:
            pass
        seen: set[tuple[str, str]] = set()
        unique: list[tuple[str, str]] = []
        for p in pairs:
            if p[0] != p[1] and p not in seen:
                seen.add(p)
                unique.append(p)
        for a, b in unique:
            kinds.setdefault(a, "service")
            kinds.setdefault(b, "service")
        return unique, kinds
