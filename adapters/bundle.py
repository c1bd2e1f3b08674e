"""The scenario-bundle (file) backend: alerts, metrics, logs, traces and topology from disk.

``BundleBackend(path)`` reads one bundle folder or a folder of bundles; with
no path it reads the library shipped in the ``correlator.scenarios`` package.
Metric roles are computed in numpy exactly as the PromQL that
:func:`correlator.promql.render` prints would compute them on a Prometheus
2.42 holding the same samples:

* counter: ``rate()`` over :func:`correlator.promql.rate_range` of the step
  and the spec's own sample interval (learned from its series' timestamps),
  with counter-reset handling and Prometheus' extrapolation to the range
  boundaries;
* gauge/info: the last sample within the 5-minute lookback (a sample exactly
  5 minutes old still counts, as in Prometheus 2.x), then ``agg``;
* histogram: ``histogram_quantile`` over the per-``le`` summed bucket rates.

Every family is read: those no role's winning alternative used for a
service come as the generic role ``series`` (see :mod:`correlator.generic`).
Each bundle's files are parsed once and cached for the backend's lifetime. Evaluation is vectorised over all series of a spec:
series scraped at the same instants share one timestamp array, so the
range/lookback boundaries are searched once per distinct scrape sequence.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from correlator import generic
from correlator.bundle import Bundle, find_bundles, read_bundle
from correlator.catalog import Catalog, SignalSpec, service_from_pod
from correlator.errors import UserInputError
from correlator.model import (
    SIGNAL_COLUMNS,
    SIGNAL_TEXT_COLUMNS,
    SPAN_COLUMNS,
    Alert,
    Window,
    compact_signals,
    empty_frame,
)
from correlator.openmetrics import Metrics, NameFilter
from correlator.promql import rate_range, render, sample_interval
from correlator.roles import GENERIC
from correlator.sources import MetricResult

__all__ = [
    "LOOKBACK",
    "BundleBackend",
    "BundleSettings",
    "count_logs",
    "default_library",
    "evaluate_spec",
    "name_filter",
    "sample_logs",
    "sample_spans",
]

#: Prometheus' instant-vector lookback (``--query.lookback-delta``), seconds.
LOOKBACK = 300.0
_MIN_PREFIX = 6
_BATCH = 4096  # series evaluated at once (bounds the temporary matrices)

Float64s = npt.NDArray[np.float64]
Int64s = npt.NDArray[np.int64]


def default_library() -> Path:
    """The bundles shipped with correlator (the ``correlator.scenarios`` package)."""
    return Path(str(importlib.resources.files("correlator.scenarios")))


def name_filter(catalog: Catalog) -> NameFilter | None:
    """The sample names the catalog's specs can select (``None``: any name)."""
    names: set[str] = set()
    patterns: list[str] = []
    for spec in catalog.all_specs():
        if spec.metric:
            names.add(spec.metric + ("_bucket" if spec.kind == "histogram" else ""))
            continue
        positive = [m for m in spec.matchers if m.label == "__name__" and m.op in ("=", "=~")]
        if not positive:
            return None
        if positive[0].op == "=":
            names.add(positive[0].value)
        else:
            patterns.append(positive[0].value)
    return NameFilter(frozenset(names), tuple(dict.fromkeys(patterns)))


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Plan:
    """What a spec selects from a bundle, independent of the window."""

    rows: tuple[int, ...]
    """Series numbers, in series order, of the selected series with a service."""
    codes: Int64s
    """Group (service and dimensions) of each row."""
    groups: tuple[tuple[str, tuple[str | None, ...]], ...]
    les: tuple[str, ...]
    """The ``le`` label of each row (histograms)."""
    blocks: tuple[tuple[Float64s, Int64s], ...]
    """Rows sharing one timestamp array: ``(times, row positions)``."""
    interval: float | None = None
    """The selected series' sample interval, seconds (``None``: too few samples)."""


def _plan(metrics: Metrics, spec: SignalSpec) -> _Plan:
    if spec.metric:
        name = spec.metric + ("_bucket" if spec.kind == "histogram" else "")
        candidates: Sequence[int] = metrics.index.get(name, ())
    else:
        # Judge the name matchers once per sample name, not once per series.
        by_name = [m for m in spec.matchers if m.label == "__name__"]
        wanted = [
            ids
            for name, ids in metrics.index.items()
            if all(m.matches(name) for m in by_name)
            and (spec.kind != "histogram" or name.endswith("_bucket"))
        ]
        candidates = sorted(i for ids in wanted for i in ids)  # series order, as before
    names, labelsets = metrics.names, metrics.labels
    dims = list(spec.dims.values())
    rows: list[int] = []
    keys: list[tuple[str, tuple[str | None, ...]]] = []
    les: list[str] = []
    for i in candidates:
        labels = labelsets[i]
        if not all(
            m.matches(names[i] if m.label == "__name__" else labels.get(m.label, ""))
            for m in spec.matchers
        ):
            continue
        service = _service(labels, spec.service_labels)
        if not service:
            continue
        rows.append(i)
        keys.append((service, tuple(labels.get(label) or None for label in dims)))
        les.append(labels.get("le", "") if spec.kind == "histogram" else "")
    index: dict[tuple[str, tuple[str | None, ...]], int] = {}
    codes = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))
    blocks = _blocks(metrics, rows)
    interval = sample_interval(ts for ts, _ in blocks)
    return _Plan(tuple(rows), codes, tuple(index), tuple(les), blocks, interval)


def _service(labels: Mapping[str, str], service_labels: Sequence[str]) -> str | None:
    """The first non-empty service label; ``pod`` (listed or, if not, last) by its pod name."""
    for label in service_labels:
        value = labels.get(label)
        if value:
            return service_from_pod(value) if label == "pod" else value
    if "pod" not in service_labels:
        pod = labels.get("pod")
        return service_from_pod(pod) if pod else None
    return None


def _grid(window: Window, step: float) -> Float64s:
    """The evaluation instants: from the baseline start, every ``step``, up to the end
    (never past it, as Prometheus' range queries; an end off the grid, the last sample
    of a recording, is not rounded up)."""
    n = int(np.floor((window.end - window.baseline_start) / step + 1e-9)) + 1
    return window.baseline_start + step * np.arange(max(n, 0), dtype=np.float64)


def _data_end(metrics: Metrics) -> float | None:
    """The time of the recording's last sample (cached with the parse)."""
    if "data_end" not in metrics.memo:
        ends = [float(t[-1]) for t in {id(t): t for t in metrics.times}.values() if len(t)]
        metrics.memo["data_end"] = max(ends) if ends else None
    out = metrics.memo["data_end"]
    return None if out is None else float(out)


def _stack(metrics: Metrics, rows: Sequence[int]) -> Float64s:
    values = metrics.values
    return np.stack([values[i] for i in rows]) if rows else np.zeros((0, 0))


def _rates(metrics: Metrics, plan: _Plan, grid: Float64s, rng: float) -> Float64s:
    """Prometheus ``rate(x[rng])`` at each grid time, one row per plan row (NaN: no value)."""
    out = np.full((len(plan.rows), len(grid)), np.nan)
    for ts, positions in plan.blocks:
        if len(ts) < 2:
            continue
        lo = np.searchsorted(ts, grid - rng, side="left")
        hi = np.searchsorted(ts, grid, side="right") - 1
        ok = hi - lo >= 1
        if not ok.any():
            continue
        cols = np.flatnonzero(ok)
        lo, hi, t = lo[ok], hi[ok], grid[ok]
        first_t, last_t = ts[lo], ts[hi]
        sampled = last_t - first_t
        avg = sampled / (hi - lo)
        to_start0 = first_t - (t - rng)
        to_end = t - last_t
        threshold = avg * 1.1
        end_part = np.where(to_end < threshold, to_end, avg / 2)
        for b in range(0, len(positions), _BATCH):
            pos = positions[b : b + _BATCH]
            v = _stack(metrics, [plan.rows[p] for p in pos.tolist()])
            first_v = v[:, lo]
            fell = v[:, 1:] < v[:, :-1]
            if fell.any():
                drops = np.zeros_like(v)
                drops[:, 1:] = np.where(fell, v[:, :-1], 0.0)
                corr = np.cumsum(drops, axis=1)
                result = v[:, hi] - first_v + (corr[:, hi] - corr[:, lo])
            else:  # no counter reset in these rows: the correction is exactly +0.0
                result = v[:, hi] - first_v + 0.0
            del fell
            # A counter cannot extrapolate below zero (Prometheus' durationToZero).
            with np.errstate(divide="ignore", invalid="ignore"):
                to_zero = np.where(
                    (result > 0) & (first_v >= 0), sampled * (first_v / result), np.inf
                )
            to_start = np.minimum(to_start0, to_zero)
            interval = sampled + np.where(to_start < threshold, to_start, avg / 2)
            interval = interval + end_part
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = result * (interval / sampled) / rng
            if _contiguous(pos) and _contiguous(cols):  # a slice, not a scatter
                out[pos[0] : pos[-1] + 1, cols[0] : cols[-1] + 1] = rate
            else:
                out[np.ix_(pos, cols)] = rate
    return out


def _contiguous(idx: Int64s) -> bool:
    """Whether sorted distinct indexes are a run ``a, a+1, ..., b`` (and not empty)."""
    return len(idx) > 0 and int(idx[-1]) - int(idx[0]) + 1 == len(idx)


def _instant(metrics: Metrics, plan: _Plan, grid: Float64s) -> Float64s:
    """The last sample at or before each grid time, at most ``LOOKBACK`` old (NaN otherwise).

    Prometheus 2.42 keeps a sample exactly ``LOOKBACK`` old (it drops only
    ``t < ref - lookback``); StaleNaN-free files only.
    """
    out = np.full((len(plan.rows), len(grid)), np.nan)
    for ts, positions in plan.blocks:
        if len(ts) == 0:
            continue
        hi = np.searchsorted(ts, grid, side="right") - 1
        ok = hi >= 0
        ok[ok] = ts[hi[ok]] >= grid[ok] - LOOKBACK
        if not ok.any():
            continue
        cols, idx = np.flatnonzero(ok), hi[ok]
        for b in range(0, len(positions), _BATCH):
            pos = positions[b : b + _BATCH]
            v = _stack(metrics, [plan.rows[p] for p in pos.tolist()])
            if _contiguous(pos) and _contiguous(cols):
                out[pos[0] : pos[-1] + 1, cols[0] : cols[-1] + 1] = v[:, idx]
            else:
                out[np.ix_(pos, cols)] = v[:, idx]
    return out


def _aggregate(matrix: Float64s, codes: Int64s, n: int, agg: str) -> Float64s:
    """Aggregate rows by group code ignoring NaN (NaN where a group has no value).

    Bit for bit what ``pandas.DataFrame.groupby(codes)`` gives: sums and means
    are Kahan-compensated in row order, ``sum`` needs one value (``min_count=1``).
    """
    out = np.full((n, matrix.shape[1]), np.nan)
    if len(codes) == 0:
        return out
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    if agg in ("max", "min"):
        heads = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        reduce = np.fmax if agg == "max" else np.fmin
        out[sorted_codes[heads]] = reduce.reduceat(matrix[order], heads, axis=0)
        return out
    rank = np.arange(len(order)) - np.searchsorted(sorted_codes, sorted_codes, side="left")
    total = np.zeros(out.shape)
    nobs = np.zeros(out.shape, dtype=np.int64)
    with np.errstate(invalid="ignore", over="ignore"):
        # A group's first row: its compensation stays zero and its sum is 0.0 + value
        # (which turns -0.0 into 0.0, as pandas' Kahan sum does).
        pick = rank == 0
        g = sorted_codes[pick]
        val = matrix[order[pick]]
        ok = ~np.isnan(val)
        total[g] = np.where(ok, val + 0.0, 0.0)
        nobs[g] = ok
        comp = np.zeros(out.shape) if rank.max() > 0 else total
        for j in range(1, int(rank.max()) + 1):
            pick = rank == j
            g = sorted_codes[pick]
            val = matrix[order[pick]]
            ok = ~np.isnan(val)
            s0, c0 = total[g], comp[g]
            y = val - c0
            t = s0 + y
            c1 = t - s0 - y
            c1[np.isnan(c1)] = 0.0  # +/-inf makes the compensation NaN
            comp[g] = np.where(ok, c1, c0)
            total[g] = np.where(ok, t, s0)
            nobs[g] += ok
        if agg != "sum":
            total /= np.maximum(nobs, 1)
        total[nobs == 0] = np.nan
        return total


def _quantiles(q: float, les: Float64s, counts: Float64s) -> Float64s:
    """Prometheus ``histogram_quantile`` for groups sharing one bucket set.

    ``les`` are sorted distinct bounds; ``counts`` is ``(groups, len(les), times)``.
    """
    out = np.full((counts.shape[0], counts.shape[2]), np.nan)
    n = len(les)
    if n < 2 or not np.isinf(les[-1]):
        return out
    counts = np.fmax.accumulate(np.nan_to_num(counts, nan=0.0), axis=1)  # ensure monotonic
    total = counts[:, -1, :]
    rank = q * total
    b = (counts >= rank[:, None, :]).argmax(axis=1)
    bucket = np.take_along_axis(counts, b[:, None, :], axis=1)[:, 0, :]
    below = np.where(
        b == 0, 0.0, np.take_along_axis(counts, np.maximum(b - 1, 0)[:, None, :], axis=1)[:, 0, :]
    )
    start = np.where(b == 0, 0.0, les[np.maximum(b - 1, 0)])
    in_bucket = bucket - below
    r = rank - below
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(in_bucket > 0, r / in_bucket, 1.0)
        value = start + (les[b] - start) * frac
    value = np.where(b == 0, np.where(les[0] <= 0, les[0], value), value)
    value = np.where(b == n - 1, les[-2], value)
    return np.where(total > 0, value, np.nan)


def _histogram(plan: _Plan, matrix: Float64s, q: float, n_groups: int) -> Float64s:
    """Per group: sum the bucket rates by ``le`` (Kahan, row order), then the quantile.

    Groups are independent, so they go a few thousand rows at a time (bounded memory).
    """
    values = np.full((n_groups, matrix.shape[1]), np.nan)
    bounds = np.empty(len(plan.les), dtype=np.float64)
    usable = np.ones(n_groups, dtype=bool)
    for i, (le, c) in enumerate(zip(plan.les, plan.codes.tolist(), strict=True)):
        try:
            bounds[i] = float(le)
        except ValueError:
            bounds[i] = np.nan
            usable[c] = False  # a group with a bucket bound that is not a number
    if not len(bounds):
        return values
    per_group = np.bincount(plan.codes, minlength=n_groups).tolist()
    first = 0
    while first < n_groups:
        last, rows = first, 0
        while last < n_groups and (last == first or rows + per_group[last] <= _BATCH):
            rows += per_group[last]
            last += 1
        chosen = (plan.codes >= first) & (plan.codes < last) & usable[plan.codes]
        picked = np.flatnonzero(chosen)
        if len(picked):
            _histogram_part(plan.codes[picked], bounds[picked], matrix[picked], q, values)
        first = last
    return values


def _histogram_part(
    codes: Int64s, les: Float64s, matrix: Float64s, q: float, out: Float64s
) -> None:
    """``_histogram`` for the rows of some groups (row order kept); writes their rows of ``out``."""
    pairs = pd.MultiIndex.from_arrays([codes, les])
    pair_codes, uniques = pd.factorize(pairs)
    summed = _aggregate(matrix, np.asarray(pair_codes, dtype=np.int64), len(uniques), "sum")
    pair_group = np.asarray(uniques.get_level_values(0), dtype=np.int64)
    pair_le = np.asarray(uniques.get_level_values(1), dtype=np.float64)
    sets: dict[tuple[float, ...], list[int]] = {}
    members: dict[int, list[int]] = {}
    for k, g in enumerate(pair_group.tolist()):
        members.setdefault(g, []).append(k)
    for g, ks in members.items():
        order = sorted(ks, key=lambda k: pair_le[k])
        members[g] = order
        sets.setdefault(tuple(pair_le[order].tolist()), []).append(g)
    for le_set, groups in sets.items():
        counts = np.stack([summed[members[g]] for g in groups])
        out[groups] = _quantiles(q, np.asarray(le_set), counts)


def _spec_key(spec: SignalSpec) -> str:
    return json.dumps(spec.to_json(), sort_keys=True)


@dataclass(frozen=True)
class _Result:
    """A spec evaluated: one row of values per group over the grid (NaN: no value)."""

    spec: SignalSpec
    groups: tuple[tuple[str, tuple[str | None, ...]], ...]
    grid: Float64s
    values: Float64s


def _evaluate(
    metrics: Metrics,
    spec: SignalSpec,
    window: Window,
    step: float,
    plans: dict[str, _Plan] | None = None,
) -> _Result | None:
    key = _spec_key(spec)
    plan = plans.get(key) if plans is not None else None
    if plan is None:
        plan = _plan(metrics, spec)
        if plans is not None:
            plans[key] = plan
    if not plan.rows:
        return None
    grid = _grid(window, step)
    rng = rate_range(step, plan.interval)
    if spec.kind in ("counter", "histogram"):
        matrix = _rates(metrics, plan, grid, rng)
    else:
        matrix = _instant(metrics, plan, grid)
        if spec.kind == "info":
            matrix = np.where(np.isnan(matrix), np.nan, 1.0)
    if spec.kind == "histogram":
        values = _histogram(plan, matrix, spec.quantile, len(plan.groups))
    else:
        values = _aggregate(
            matrix, plan.codes, len(plan.groups), "sum" if spec.kind == "counter" else spec.agg
        )
    return _Result(spec, plan.groups, grid, values * spec.scale)


def _frame(parts: list[tuple[_Result, npt.NDArray[np.bool_]]]) -> pd.DataFrame:
    """``SIGNAL_COLUMNS`` rows of the chosen groups of each result, in order.

    Rows go group by group, then by time; each column is allocated once. The
    frame is compact (see :func:`correlator.model.compact_signals`): the text
    columns are codes into one sorted vocabulary, built from the groups, never
    from millions of row strings.
    """
    chosen = []
    total = 0
    for result, keep in parts:
        present = ~np.isnan(result.values)
        present[~keep] = False
        count = int(np.count_nonzero(present))
        if count:
            chosen.append((result, present))
            total += count
    if not total:
        empty: pd.DataFrame = compact_signals(empty_frame(SIGNAL_COLUMNS))
        return empty
    words: set[str] = {""}  # as compact_signals has it: columns fill with ""
    for result, present in chosen:
        words.add(result.spec.role)
        for g in np.flatnonzero(present.any(axis=1)).tolist():
            service, dims = result.groups[g]
            words.add(service)
            words.update(d for d in dims if d is not None)
    vocab = pd.Index(sorted(words), dtype=object)
    code_of = {w: i for i, w in enumerate(vocab.tolist())}
    code_type = np.int16 if len(vocab) < np.iinfo(np.int16).max else np.int32
    cols: dict[str, Any] = {c: np.full(total, -1, dtype=code_type) for c in SIGNAL_TEXT_COLUMNS}
    ts = np.empty(total, dtype=np.float64)
    value = np.empty(total, dtype=np.float64)
    at = 0
    for result, present in chosen:
        g_idx, t_idx = np.nonzero(present)
        end = at + len(g_idx)
        groups = result.groups
        cols["role"][at:end] = code_of[result.spec.role]
        # Groups with no point kept may name words left out of the vocabulary: -1, never taken.
        services = np.array([code_of.get(g[0], -1) for g in groups], dtype=code_type)
        np.take(services, g_idx, out=cols["service"][at:end])
        for k, dim in enumerate(result.spec.dims):
            per_group = np.array(
                [-1 if g[1][k] is None else code_of.get(g[1][k], -1) for g in groups],
                dtype=code_type,
            )
            np.take(per_group, g_idx, out=cols[dim][at:end])
        np.take(result.grid, t_idx, out=ts[at:end])
        value[at:end] = result.values[g_idx, t_idx]
        at = end
    chosen.clear()
    dtype: Any = pd.CategoricalDtype(vocab)
    data: dict[str, Any] = {
        c: pd.Categorical.from_codes(v, dtype=dtype, validate=False) for c, v in cols.items()
    }
    data["ts"] = ts
    data["value"] = value
    return pd.DataFrame(data, columns=list(SIGNAL_COLUMNS), copy=False)


#: The generic role's rows: one per (service, metric name) in the ``detail`` column.
GENERIC_SPEC = SignalSpec(GENERIC, "", "gauge", dims={"detail": "__name__"}, source="generic")


@dataclass(frozen=True)
class _GenericRows:
    """Every series the generic path can read, with its key (window-independent)."""

    rows: tuple[int, ...]
    keys: tuple[tuple[str, str, str, str, generic.Part], ...]
    """``(sample name, service, le, quantile, part)`` per row."""


def _generic_rows(metrics: Metrics) -> _GenericRows:
    have = metrics.memo.get("generic_rows")
    if isinstance(have, _GenericRows):
        return have
    rows: list[int] = []
    keys: list[tuple[str, str, str, str, generic.Part]] = []
    labelsets = metrics.labels
    for name, ids in metrics.index.items():
        if generic.classify(name, False, False, metrics.types) == "skip":
            continue
        for i in ids:
            labels = labelsets[i]
            service = generic.service_of_labels(labels)
            if not service:
                continue
            le, q = labels.get("le", ""), labels.get("quantile", "")
            part = generic.classify(name, bool(le), bool(q), metrics.types)
            if part == "skip":
                continue
            rows.append(i)
            keys.append((name, service, le, q, part))
    out = _GenericRows(tuple(rows), tuple(keys))
    metrics.memo["generic_rows"] = out
    return out


def _generic(
    metrics: Metrics,
    window: Window,
    step: float,
    interval: float | None,
    winners: Iterable[tuple[SignalSpec, Iterable[str]]],
) -> tuple[_Result | None, list[str]]:
    """The generic role for every series no winning alternative used (see :mod:`generic`)."""
    every = _generic_rows(metrics)
    if not every.rows:
        return None, []
    # Leave out the sample names a role used exactly as the Prometheus adapter does
    # (a __name__!~ matcher with the same regex), so both backends send the same series.
    taken = generic.taken_regex(winners)
    if taken is None:
        pick = list(range(len(every.rows)))
    else:
        rx = re.compile(taken)
        used = {name for name in metrics.index if rx.fullmatch(name)}
        pick = [k for k, key in enumerate(every.keys) if key[0] not in used]
    if not pick:
        return None, []
    index: dict[tuple[str, str, str, str, generic.Part], int] = {}
    codes = np.fromiter(
        (index.setdefault(every.keys[k], len(index)) for k in pick), np.int64, len(pick)
    )
    warnings: list[str] = []
    if len(index) > generic.MAX_SERIES:
        warnings.append(
            f"{len(index)} uncatalogued series named a service; only the first "
            f"{generic.MAX_SERIES} were read (add the rest to a catalog.json to judge them)"
        )
        keep = codes < generic.MAX_SERIES
        pick = [k for k, ok in zip(pick, keep.tolist(), strict=True) if ok]
        codes = codes[keep]
        index = {key: c for key, c in index.items() if c < generic.MAX_SERIES}
    rows = [every.rows[k] for k in pick]
    grid = _grid(window, step)
    sums = np.full((len(index), len(grid)), np.nan)
    members = np.zeros((len(index), len(grid)))
    # Rows a few thousand at a time, so the raw matrix stays small whatever the bundle.
    order = np.argsort(codes, kind="stable")
    for b in range(0, len(order), _BATCH):
        part = np.sort(order[b : b + _BATCH])
        sub = _Plan(
            tuple(rows[p] for p in part.tolist()),
            codes[part],
            (),
            (),
            _blocks(metrics, [rows[p] for p in part.tolist()]),
        )
        matrix = _instant(metrics, sub, grid)
        partial = _aggregate(matrix, sub.codes, len(index), "sum")
        got = ~np.isnan(partial)
        sums[got] = np.where(np.isnan(sums[got]), 0.0, sums[got]) + partial[got]
        # How many series each sum had (Prometheus: the same selector's ``count by``).
        np.add.at(members, sub.codes, ~np.isnan(matrix))
    out_keys, values = generic.derive(list(index), sums, step, interval, members)
    if not out_keys:
        return None, warnings
    groups = tuple((service, (detail,)) for service, detail in out_keys)
    return _Result(GENERIC_SPEC, groups, grid, values), warnings


def _interval(metrics: Metrics) -> float | None:
    """The median sample spacing over every series (cached with the parse)."""
    if "interval" not in metrics.memo:
        metrics.memo["interval"] = sample_interval({id(t): t for t in metrics.times}.values())
    have = metrics.memo["interval"]
    return float(have) if have is not None else None


def _label_names(metrics: Metrics) -> frozenset[str]:
    """Every label name any series carries (cached with the parse)."""
    have = metrics.memo.get("label_names")
    if not isinstance(have, frozenset):
        have = frozenset(k for labels in metrics.labels for k in labels)
        metrics.memo["label_names"] = have
    return have


def _blocks(metrics: Metrics, rows: Sequence[int]) -> tuple[tuple[Float64s, Int64s], ...]:
    """Positions of ``rows`` grouped by their shared timestamp array."""
    by_times: dict[int, tuple[Float64s, list[int]]] = {}
    for pos, i in enumerate(rows):
        ts = metrics.times[i]
        by_times.setdefault(id(ts), (ts, []))[1].append(pos)
    return tuple((ts, np.asarray(p, dtype=np.int64)) for ts, p in by_times.values())


def evaluate_spec(
    metrics: Metrics,
    spec: SignalSpec,
    window: Window,
    step: float,
    plans: dict[str, _Plan] | None = None,
) -> pd.DataFrame:
    """One spec over ``[window.baseline_start, window.end]`` as a ``SIGNAL_COLUMNS`` frame.

    ``plans`` caches what the spec selects from ``metrics`` across calls.
    """
    result = _evaluate(metrics, spec, window, step, plans)
    if result is None:
        return empty_frame(SIGNAL_COLUMNS)
    return _frame([(result, np.ones(len(result.groups), dtype=bool))])


# --------------------------------------------------------------------------- backend


class BundleSettings(BaseModel):
    """Settings of a ``backends:`` entry served by the bundle adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("bundle", description="the backends: key (set from it)")
    path: str | None = Field(
        None, description="a bundle folder or a folder of bundles (default: the shipped library)"
    )

    @field_validator("path")
    @classmethod
    def _exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).exists():
            raise ValueError(
                f"{v} does not exist; give a bundle folder or a folder of bundles "
                "(or leave path out for the bundled library)"
            )
        return v


def _evenly(total: int, keep: int) -> Int64s:
    """Positions of ``keep`` of ``total`` items, evenly spaced (all when ``keep >= total``)."""
    if keep >= total:
        return np.arange(total, dtype=np.int64)
    if keep <= 0:
        return np.zeros(0, dtype=np.int64)
    picked: Int64s = np.floor(np.arange(keep) * (total / keep)).astype(np.int64)
    return picked


# --------------------------------------------------------------------------- sampling
# Shared with every adapter that holds span and log rows in memory (bundles, OTLP files).


def sample_logs(
    df: pd.DataFrame,
    window: Window,
    services: Sequence[str] | None = None,
    min_severity: int = 13,
    limit: int = 5000,
) -> pd.DataFrame:
    """Log rows at or above ``min_severity`` over the baseline and the window, oldest first.

    Over ``limit``, each period (baseline, window) keeps an evenly spaced
    share of its records (half the limit each; what one leaves unused the
    other may take), chosen without regard to content so detectors compare
    like with like; ``attrs["warnings"]`` says what was left out.
    """
    mask = (df["ts"] >= window.baseline_start) & (df["ts"] <= window.end)
    mask &= df["severity"] >= min_severity
    if services is not None:
        mask &= df["service"].isin(list(services))
    out = df[mask].sort_values("ts", kind="stable")
    before = out["ts"].to_numpy() < window.start
    n_base, n_win = int(before.sum()), int((~before).sum())
    keep_win = min(n_win, max(limit - n_base, (limit + 1) // 2))
    keep_base = min(n_base, limit - keep_win)
    picked = np.concatenate(
        [
            np.flatnonzero(before)[_evenly(n_base, keep_base)],
            np.flatnonzero(~before)[_evenly(n_win, keep_win)],
        ]
    )
    result = out.iloc[np.sort(picked)].reset_index(drop=True)
    warnings = [
        f"logs: {kept} of {total} records {where} kept (limit {limit}), evenly spaced in time"
        for kept, total, where in (
            (keep_base, n_base, "before the window"),
            (keep_win, n_win, "in the window"),
        )
        if kept < total
    ]
    if warnings:
        result.attrs["warnings"] = warnings
    return result


def count_logs(
    df: pd.DataFrame, window: Window, step: float, services: Sequence[str] | None = None
) -> pd.DataFrame:
    """Log rows of every severity per ``step``-second bucket, service and severity."""
    mask = (df["ts"] >= window.baseline_start) & (df["ts"] <= window.end)
    if services is not None:
        mask &= df["service"].isin(list(services))
    part = df[mask]
    step = max(float(step), 1.0)
    bucket = (
        window.baseline_start
        + ((part["ts"].to_numpy(dtype=np.float64) - window.baseline_start) // step) * step
    )
    counts = (
        pd.DataFrame(
            {
                "ts": bucket,
                "service": part["service"].to_numpy(),
                "severity": part["severity"].to_numpy(dtype=np.int64),
            }
        )
        .groupby(["ts", "service", "severity"], sort=True)
        .size()
        .rename("count")
        .reset_index()
    )
    counts["count"] = counts["count"].astype(np.float64)
    return counts[["ts", "service", "severity", "count"]]


def sample_spans(
    df: pd.DataFrame, window: Window, services: Sequence[str] | None = None, limit: int = 200
) -> pd.DataFrame:
    """Span rows of traces over the baseline and the window, at most ``limit`` traces per period.

    A trace belongs to the period its first span starts in. Over ``limit``,
    a period keeps evenly spaced traces (in start order), never the failing
    or slow ones first: both periods are sampled alike, so error shares
    and latency quantiles compare like with like.
    """
    if df.empty:
        return empty_frame(SPAN_COLUMNS)
    inside = df[(df["start"] >= window.baseline_start) & (df["start"] <= window.end)]
    if services is not None:
        inside = inside[inside["service"].isin(list(services))]
    if inside.empty:
        return empty_frame(SPAN_COLUMNS)
    chosen = df[df["trace_id"].isin(inside["trace_id"].unique())]
    first = chosen.groupby("trace_id", sort=False)["start"].min().sort_values(kind="stable")
    before = first.to_numpy() < window.start
    keep: list[Any] = []
    for part in (before, ~before):
        ids = first.index[part]
        keep.extend(ids[_evenly(len(ids), limit)].tolist())
    out = df[df["trace_id"].isin(keep)]
    result = out.sort_values(["trace_id", "start"], kind="stable").reset_index(drop=True)
    dropped = len(first) - len(keep)
    if dropped:
        result.attrs["warnings"] = [
            f"traces: {len(keep)} of {len(first)} traces kept (limit {limit} per period), "
            "evenly spaced in time"
        ]
    return result


class BundleBackend:
    """Alerts, metrics, logs, traces and topology from scenario bundles on disk.

    Implements ``AlertSource``, ``MetricSource``, ``LogSource``, ``TraceSource``
    and ``TopologySource``. One backend serves every bundle under its root
    and is shared across threads; :meth:`bind` gives the view one
    investigation reads (its alert's bundle). An unbound backend reads the
    bundle whose time range holds the window (with one bundle, that one).
    Resolving an alert changes nothing.
    """

    Settings = BundleSettings
    display_name = "Scenario bundles"
    name = "bundle"
    local = True
    """Reads files on this machine: the engine bounds it by the deadline, not the
    per-source timeout (a first parse of a big bundle takes a while)."""

    def __init__(self, path: str | Path | BundleSettings | None = None) -> None:
        if isinstance(path, BundleSettings):
            self.name = path.name
            path = path.path
        self.root = Path(path) if path is not None else default_library()
        self._paths = find_bundles(self.root)
        self._bundles: dict[Path, Bundle] = {}
        self._lock = threading.Lock()  # one parse per bundle, whichever thread asks first
        self._bound: Bundle | None = None

    def bundles(self) -> list[Bundle]:
        """Every bundle under the root (read on first use)."""
        with self._lock:
            for p in self._paths:
                if p not in self._bundles:
                    self._bundles[p] = read_bundle(p)
            return [self._bundles[p] for p in self._paths]

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
            short = [a.fingerprint for a in every if fp and a.fingerprint.startswith(fp)]
            if short:  # only an id under _MIN_PREFIX characters can match here
                raise UserInputError(
                    f"alert id {fingerprint!r} is too short: give at least {_MIN_PREFIX} "
                    f"characters of it (it matches {', '.join(sorted(set(short))[:3])})"
                )
            return None
        if len({(a.fingerprint, a.source) for a in matches}) > 1:
            listed = ", ".join(
                f"{a.fingerprint} ({a.name}, {Path(a.source).name})" for a in matches
            )
            raise UserInputError(
                f"alert id {fingerprint!r} is ambiguous; it matches {listed}. Give more characters."
            )
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

    def bind(self, alert: Alert) -> Self:
        """A view whose data methods read this alert's bundle (sharing the parse cache).

        ``self`` is left as it was. An alert from no bundle here (a webhook
        from a live Alertmanager) gets ``self``, which reads by window.
        """
        try:
            bundle = self.bundle_for(alert)
        except UserInputError:
            return self
        view = copy.copy(self)
        view._bound = bundle
        return view

    def close(self) -> None:
        """Nothing to release (parsed bundles stay cached for other investigations)."""

    def _bundle(self, window: Window | None = None) -> Bundle:
        if self._bound is not None:
            return self._bound
        bundles = self.bundles()
        if window is not None:
            for b in bundles:
                if b.window[0] <= window.start <= b.window[1]:
                    return b
        if not bundles:
            raise UserInputError(f"no scenario bundles under {self.root}")
        return bundles[0]

    # ---- MetricSource
    def signals(
        self, catalog: Catalog, window: Window, step: float, *, deadline: float | None = None
    ) -> MetricResult:
        """Every catalog role for the bundle (the first alternative with data wins per service),
        then every other series that names a service as the generic role (``series``).

        The result holds ``step``, ``interval`` (the data's sample interval,
        :meth:`interval`) and ``warnings``. Files are read whatever ``deadline`` says
        (the engine stops waiting).
        """
        bundle = self._bundle(window)
        cat = bundle.merged_catalog(catalog)
        metrics = bundle.metrics_for(None)
        plans = metrics.memo.setdefault("plans", {})
        parts: list[tuple[_Result, npt.NDArray[np.bool_]]] = []
        winners: list[tuple[SignalSpec, list[str]]] = []
        for specs in cat.roles.values():
            covered: set[str] = set()
            for spec in specs:
                result = _evaluate(metrics, spec, window, step, plans)
                if result is None:
                    continue
                has_value = ~np.isnan(result.values).all(axis=1)
                keep = has_value & np.array([g[0] not in covered for g in result.groups])
                won = {g[0] for g, k in zip(result.groups, keep.tolist(), strict=True) if k}
                covered.update(won)
                winners.append((spec, sorted(won)))
                parts.append((result, keep))
        interval = _interval(metrics)
        extra, warnings = _generic(metrics, window, step, interval, winners)
        if extra is not None:
            parts.append((extra, np.ones(len(extra.groups), dtype=bool)))
        frame = _frame(parts)
        # Every spec is evaluated: stop holding the parse cache's mapped file in memory.
        metrics.release_pages()
        present = _label_names(metrics)
        queries = {
            role: render(specs[0], step, interval, present=present)
            for role, specs in cat.roles.items()
            if specs
        }
        return MetricResult(
            frame=frame,
            step=float(step),
            interval=interval,
            queries=queries,
            warnings=tuple(warnings),
        )

    def interval(
        self, window: Window | None = None, catalog: Catalog | None = None
    ) -> float | None:
        """The bundle's sample interval in seconds (median spacing over its series).

        What :func:`correlator.promql.choose_step` takes to pick a step before
        :meth:`signals`; ``None`` when no series has two samples.
        """
        return _interval(self._bundle(window).metrics_for(None))

    def data_end(self, window: Window | None = None) -> float | None:
        """The time of the recording's last metric sample, ``None`` without one.

        A recording has no data after it: the engine ends its window there (see
        :class:`correlator.sources.RecordingSource`).
        """
        return _data_end(self._bundle(window).metrics_for(None))

    def query_for(self, catalog: Catalog, role: str) -> str | None:
        """The PromQL of the role's first alternative in ``catalog`` (step 60s)."""
        specs = catalog.specs(role)
        return render(specs[0], 60.0) if specs else None

    # ---- LogSource
    def logs(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        min_severity: int = 13,
        limit: int = 5000,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        """Records at or above ``min_severity`` over the baseline and the window, oldest first.

        Over ``limit``, each period keeps an evenly spaced share (:func:`sample_logs`).
        """
        return sample_logs(self._bundle(window).logs, window, services, min_severity, limit)

    def log_counts(
        self, window: Window, step: float, services: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Records of every severity per ``step``-second bucket, service and severity."""
        return count_logs(self._bundle(window).logs, window, step, services)

    # ---- TraceSource
    def spans(
        self,
        window: Window,
        services: Sequence[str] | None = None,
        limit: int = 200,
        *,
        deadline: float | None = None,
    ) -> pd.DataFrame:
        """Spans of traces over the baseline and the window, at most ``limit`` traces per period.

        Over ``limit``, a period keeps evenly spaced traces (:func:`sample_spans`).
        """
        return sample_spans(self._bundle(window).spans, window, services, limit)

    # ---- TopologySource
    def edges(
        self, window: Window, *, deadline: float | None = None
    ) -> tuple[list[tuple[str, str]], dict[str, str]]:
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
            # Each pair once, in order of first appearance (spans repeat them by the thousand).
            called = pd.DataFrame(
                {"a": parent_service[cross.index].to_numpy(), "b": cross["service"].to_numpy()}
            ).drop_duplicates()
            pairs += list(zip(called["a"].tolist(), called["b"].tolist(), strict=True))
            clients = spans[(spans["kind"] == 3) & spans["peer"].notna()]
            calls = clients[["service", "peer"]].drop_duplicates()
            pairs += list(zip(calls["service"].tolist(), calls["peer"].tolist(), strict=True))
            dbs = clients["db_system"].tolist()
            is_db = np.fromiter((bool(x) for x in dbs), dtype=bool, count=len(dbs))
            for peer in clients.loc[is_db, "peer"].drop_duplicates().tolist():
                kinds.setdefault(peer, "database")
            for svc in spans["service"].unique().tolist():
                kinds.setdefault(svc, "service")
        try:
            # Every family: the same parse as signals() (which runs meanwhile).
            metrics = bundle.metrics_for(None)
            plans = metrics.memo.setdefault("plans", {})
            for spec in bundle.catalog.specs("edge_rate"):
                result = _evaluate(metrics, spec, window, 60.0, plans)
                if result is None or "peer" not in spec.dims:
                    continue
                k = list(spec.dims).index("peer")
                has_value = np.asarray(~np.isnan(result.values).all(axis=1), dtype=bool)
                for (service, dims), ok in zip(result.groups, has_value.tolist(), strict=True):
                    if ok and dims[k] is not None:
                        pairs.append((str(dims[k]), str(service)))
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
