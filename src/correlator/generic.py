"""Series no catalog role knows: the path that needs no catalog.

The catalog adds meaning, never visibility: every numeric series that names
a service reaches the engine, as the role :data:`correlator.roles.GENERIC`
(``series``) with its metric name in the ``detail`` column, unless a role's
alternative already used its family (:func:`taken_regex`: a family is sent
once, as its role, never also as ``series``; left out for every service, so
that a backend can leave it out server-side).

Both metric backends compute it the same way, so that they agree point by
point: per sample name, service (the first non-empty of
:data:`correlator.catalog.SERVICE_LABELS`), ``le`` and ``quantile``, the
instant values are **summed** on the step grid (for Prometheus one
``sum by (__name__, <service label>, le, quantile)`` query per service
label: the rate of each series is not needed), then :func:`derive` turns
the sums into what detection reads:

* counters (``_total``, ``_count``, or typed ``counter``): per-second rate,
  the increase of the summed counter over the ``rate()`` range
  (:func:`correlator.promql.rate_range`) divided by it; a fall (a counter
  reset, a pod leaving) gives no point rather than a negative rate, and so
  does a range over which the series summed came or went (their number, a
  ``count by`` of the same selector, changed): a pod arriving brings its
  whole counter into the sum, which is no increase of anything (a rollout or
  a replaced pod read as a counter rising 200x for the range);
* gauges: the summed value;
* histograms (``_bucket``): the p95 of the bucket increases over the range,
  under the family name; their ``_count`` comes as a rate of its own;
* summaries (``quantile`` label): the highest quantile exported, summed over
  the service's instances (its level is not a latency, its moves are);
* ``_sum``, ``_created``, ``*_info`` and ``*_build_info`` series are skipped
  (a sum without its count says little; info series carry no value).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from correlator.catalog import SERVICE_LABELS, SignalSpec, service_from_pod
from correlator.escape import regex_literal
from correlator.promql import rate_range

__all__ = [
    "MAX_SERIES",
    "Part",
    "base_family",
    "classify",
    "derive",
    "quantile_of_buckets",
    "service_of_labels",
    "taken_regex",
]

#: At most this many aggregated generic series are read from one backend.
MAX_SERIES = 20_000
#: The quantile a histogram family is summarised by.
QUANTILE = 0.95

Part = Literal["counter", "gauge", "bucket", "quantile", "skip"]
Float64s = npt.NDArray[np.float64]
_SUFFIXES = ("_bucket", "_count", "_sum")


def base_family(name: str) -> str:
    """The family a sample name belongs to: ``x_bucket``/``x_count``/``x_sum`` -> ``x``."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def classify(
    name: str, has_le: bool, has_quantile: bool, types: Mapping[str, str] | None = None
) -> Part:
    """How the generic path reads a sample name (see the module docstring)."""
    if name.endswith(("_sum", "_created", "_info")) or name == "target_info":
        return "skip"
    if name.endswith("_bucket") and has_le:
        return "bucket"
    if has_quantile:
        return "quantile"
    if name.endswith(("_total", "_count")):
        return "counter"
    kind = (types or {}).get(name)
    return "counter" if kind == "counter" else "gauge"


def service_of_labels(labels: Mapping[str, str]) -> str | None:
    """The service a series names: the first non-empty identity label (pod name stripped)."""
    for label in SERVICE_LABELS:
        value = labels.get(label)
        if value:
            return service_from_pod(value) if label == "pod" else value
    return None


def taken_regex(winners: Iterable[tuple[SignalSpec, Iterable[str]]]) -> str | None:
    """An RE2 regex matching the sample names of the families roles used (``None``: none).

    ``winners``: each alternative with the services it gave data for (those
    with none take nothing). An alternative naming its metric takes that
    family (``x``, ``x_bucket``, ``x_count``, ``x_sum``); one selecting by a
    ``__name__`` regex takes what the regex matches, with those suffixes. A
    backend leaves them out of its query (``__name__!~...``).
    """
    parts: list[str] = []
    for spec, services in winners:
        if not list(services):
            continue
        if spec.metric:
            parts.append(regex_literal(base_family(spec.metric)))
            continue
        if any(m.label != "__name__" for m in spec.matchers):
            # A regex over names that also asks for a label (quantile=~"0.9.*") takes only
            # some series of the families it matches: the rest (an average gauge whose
            # name fits the regex) are nobody's, and come as generic series.
            continue
        parts += [m.value for m in spec.matchers if m.label == "__name__" and m.op == "=~"]
        parts += [
            regex_literal(m.value) for m in spec.matchers if m.label == "__name__" and m.op == "="
        ]
    if not parts:
        return None
    alternatives = "|".join(f"(?:{p})" for p in dict.fromkeys(parts))
    return f"(?:{alternatives})(?:_bucket|_count|_sum)?"


def quantile_of_buckets(q: float, les: Float64s, counts: Float64s) -> Float64s:
    """Prometheus' ``histogram_quantile`` over one bucket set: ``counts`` is ``(len(les), T)``.

    ``les`` sorted, the last ``+Inf``; counts cumulative (made monotonic here).
    """
    out = np.full(counts.shape[1], np.nan)
    n = len(les)
    if n < 2 or not np.isinf(les[-1]):
        return out
    counts = np.fmax.accumulate(np.nan_to_num(counts, nan=0.0), axis=0)
    total = counts[-1]
    rank = q * total
    b = (counts >= rank[None, :]).argmax(axis=0)
    cols = np.arange(counts.shape[1])
    bucket = counts[b, cols]
    below = np.where(b == 0, 0.0, counts[np.maximum(b - 1, 0), cols])
    start = np.where(b == 0, 0.0, les[np.maximum(b - 1, 0)])
    in_bucket = bucket - below
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(in_bucket > 0, (rank - below) / in_bucket, 1.0)
        value = start + (les[b] - start) * frac
    value = np.where(b == 0, np.where(les[0] <= 0, les[0], value), value)
    value = np.where(b == n - 1, les[-2], value)
    return np.where(total > 0, value, np.nan)


def _increase(
    values: Float64s, lag: int, seconds: float, members: Float64s | None = None
) -> Float64s:
    """Per-second increase over ``lag`` grid points; NaN where it falls or is unknown, or
    where the number of series summed (``members``, NaN: not known) changed over it."""
    out = np.full(values.shape, np.nan)
    if values.shape[-1] > lag:
        with np.errstate(invalid="ignore"):
            d = values[..., lag:] - values[..., :-lag]
            keep = d >= 0
            if members is not None:
                now, then = members[..., lag:], members[..., :-lag]
                keep &= ~((now != then) & ~np.isnan(now) & ~np.isnan(then))
            out[..., lag:] = np.where(keep, d / seconds, np.nan)
    return out


def derive(
    keys: Sequence[tuple[str, str, str, str, Part]],
    sums: Float64s,
    step: float,
    interval: float | None,
    members: Float64s | None = None,
) -> tuple[list[tuple[str, str]], Float64s]:
    """Generic series from summed instant values.

    ``keys[i]`` = ``(sample name, service, le, quantile, part)`` of row ``i``
    of ``sums`` (one column per grid time, NaN: no value); ``members``, the
    same shape, how many series each sum had (NaN or ``None``: not known).
    Returns ``(service, detail)`` per output row and the rows' values.
    """
    lag = max(1, math.ceil(rate_range(step, interval) / step - 1e-9))
    seconds = lag * step
    out_keys: list[tuple[str, str]] = []
    rows: list[Float64s] = []
    buckets: dict[tuple[str, str], list[tuple[float, int]]] = {}
    quantiles: dict[tuple[str, str], tuple[float, int]] = {}
    for i, (name, service, le, q, part) in enumerate(keys):
        if part == "counter":
            out_keys.append((service, name))
            rows.append(_increase(sums[i], lag, seconds, None if members is None else members[i]))
        elif part == "gauge":
            out_keys.append((service, name))
            rows.append(sums[i])
        elif part == "bucket":
            try:
                bound = float(le)
            except ValueError:
                continue
            buckets.setdefault((service, base_family(name)), []).append((bound, i))
        elif part == "quantile":
            try:
                level = float(q)
            except ValueError:
                continue
            have = quantiles.get((service, name))
            if have is None or level > have[0]:
                quantiles[(service, name)] = (level, i)
    for (service, family), bounds in buckets.items():
        bounds.sort()
        les = np.array([b for b, _ in bounds])
        if len(np.unique(les)) != len(les):
            continue
        at = [i for _, i in bounds]
        counts = _increase(sums[at], lag, seconds, None if members is None else members[at])
        value = quantile_of_buckets(QUANTILE, les, counts)
        value[np.isnan(counts).any(axis=0)] = np.nan  # a bucket fell: no quantile
        out_keys.append((service, family))
        rows.append(value)
    for (service, name), (_, i) in quantiles.items():
        out_keys.append((service, name))
        rows.append(sums[i])
    width = sums.shape[1] if sums.ndim == 2 else 0
    values = np.vstack(rows) if rows else np.zeros((0, width))
    return out_keys, values
