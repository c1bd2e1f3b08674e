"""Simple root-service rankers to measure the engine against, on any scenario bundle.

Each reads a bundle with the project's own parser (``correlator.bundle``) and
returns services ranked best-first as ``(service, score)``:

- :func:`zscore_ranking`: the naive guard. For every metric series that names
  a service, the robust z-score (median and MAD) of its values after the
  split against its values before; a service scores its most moved series.
- :func:`correlation_ranking`: the PetShop authors' strong baseline ("ranked
  correlation"): among the nodes whose KPI series is anomalous at the first
  anomalous point of the target (a median-deviation score above 5, trained
  on the data before the split), rank by the p-value of the Pearson
  correlation with the target over the incident's rows. The target (KPI) is
  the alert service's series that the alert's query (``generatorURL``)
  reads, else the one ``scenario.json`` names in ``source.target.series``,
  else that service's most moved series; each other node contributes its
  series of the same name and labels (else its most moved one).
- :func:`random_expectation`: what a uniform random ranking scores on average.

The split is where the engine's own window starts: the alert's ``startsAt``
minus 5 minutes. Counters (``_total``, ``_count``, ``_sum``, ``_bucket``, or
typed ``counter``) are read as per-second rates between samples.

    python scripts/baselines.py BUNDLE   # print both rankings
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from correlator.bundle import Bundle, read_bundle  # noqa: E402

__all__ = [
    "BEFORE",
    "correlation_ranking",
    "random_expectation",
    "service_of",
    "zscore_ranking",
]

#: Seconds before the alert where the engine's window (and the split) begins.
BEFORE = 300.0
#: Labels that name a service, in order of preference.
IDENTITY = ("service", "service_name", "app", "application", "container", "job")
#: The authors' anomaly threshold on the median-deviation score, and their minimum training size.
MAD_THRESHOLD = 5.0
MIN_TRAIN = 10
_COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
Floats = npt.NDArray[np.float64]


def service_of(labels: Mapping[str, str]) -> str:
    """The service a series names, ``""`` when none (a pod's is its name less two hashes)."""
    for key in IDENTITY:
        if labels.get(key):
            return labels[key]
    pod = labels.get("pod", "")
    parts = pod.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else pod


@dataclass(frozen=True)
class _Series:
    service: str
    name: str
    labels: tuple[tuple[str, str], ...]
    ts: Floats
    values: Floats


def _series(bundle: Bundle) -> list[_Series]:
    """Every series naming a service, counters turned into per-second rates."""
    metrics = bundle.metrics
    out = []
    for name, labels, ts, values in zip(
        metrics.names, metrics.labels, metrics.times, metrics.values, strict=True
    ):
        svc = service_of(labels)
        if not svc or len(ts) < 2:
            continue
        t, v = np.asarray(ts, dtype=float), np.asarray(values, dtype=float)
        family = next((name[: -len(s)] for s in _COUNTER_SUFFIXES if name.endswith(s)), name)
        if name.endswith(_COUNTER_SUFFIXES) or metrics.types.get(family) == "counter":
            dv, dt = np.diff(v), np.diff(t)
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = np.where((dv >= 0) & (dt > 0), dv / dt, np.nan)
            t, v = t[1:], rate
        rest = tuple(sorted((k, x) for k, x in labels.items() if k not in IDENTITY))
        out.append(_Series(svc, name, rest, t, v))
    return out


def _split(bundle: Bundle) -> tuple[float, float]:
    """(split, end): the engine's window start, and the end of the data."""
    alert = bundle.alerts[0]
    return alert.starts_at - BEFORE, bundle.window[1]


def _robust_z(pre: Floats, post: Floats) -> float:
    """Largest robust |z| of ``post`` against ``pre`` (inf when a constant baseline moved)."""
    pre, post = pre[~np.isnan(pre)], post[~np.isnan(post)]
    if len(pre) < 2 or not len(post):
        return 0.0
    med = float(np.median(pre))
    scale = 1.4826 * float(np.median(np.abs(pre - med))) or float(np.std(pre))
    dev = float(np.max(np.abs(post - med)))
    if scale > 0:
        return dev / scale
    return math.inf if dev > 0 else 0.0


def _zscores(bundle: Bundle) -> list[tuple[_Series, float]]:
    split, end = _split(bundle)
    out = []
    for s in _series(bundle):
        pre = s.values[s.ts < split]
        post = s.values[(s.ts >= split) & (s.ts <= end)]
        out.append((s, _robust_z(pre, post)))
    return out


def zscore_ranking(bundle_dir: Path) -> list[tuple[str, float]]:
    """Services ranked by their most moved series (robust z after the split vs before).

    A series whose baseline was constant and then moved scores infinity; services
    tied there are ordered by their most moved series with a finite score.
    """
    best: dict[str, float] = {}
    finite: dict[str, float] = {}
    for s, z in _zscores(read_bundle(bundle_dir)):
        best[s.service] = max(best.get(s.service, 0.0), z)
        if math.isfinite(z):
            finite[s.service] = max(finite.get(s.service, 0.0), z)
    order = sorted(best, key=lambda svc: (-best[svc], -finite.get(svc, 0.0), svc))
    return [(svc, best[svc]) for svc in order]


def random_expectation(bundle_dir: Path, k: int) -> float:
    """Chance that a uniformly random ranking of the bundle's services has the truth in top k."""
    n = len({s.service for s in _series(read_bundle(bundle_dir))})
    return min(k, n) / n if n else 0.0


# --------------------------------------------------------------------------- ranked correlation


def _alert_names(bundle: Bundle) -> list[str]:
    """Series names in the alert's PromQL (its ``generatorURL``), in order of appearance."""
    from urllib.parse import parse_qs, urlsplit

    url = bundle.alerts[0].generator_url
    exprs = [
        v for k, vs in parse_qs(urlsplit(url).query).items() if k.endswith(".expr") for v in vs
    ]
    words = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", " ".join(exprs))
    return list(dict.fromkeys(words))


def _kpi(bundle: Bundle, scored: list[tuple[_Series, float]]) -> _Series | None:
    """The target series: the alert service's series that the alert's query reads (else the
    one ``scenario.json`` ``source.target.series`` names), the most moved of them; with
    neither, the alert service's most moved series."""
    svc = bundle.alerts[0].labels.get("service", "")
    mine = [(s, z) for s, z in scored if s.service == svc]
    source = bundle.scenario.get("source")
    target = source.get("target", {}) if isinstance(source, dict) else {}
    declared = target.get("series") if isinstance(target, dict) else None
    pool: list[tuple[_Series, float]] = []
    for name in [*_alert_names(bundle), declared]:
        pool = [(s, z) for s, z in mine if s.name == name]
        if pool:
            break
    pool = pool or mine
    if not pool:
        return None
    return max(pool, key=lambda sz: (sz[1], sz[0].name))[0]


def _at(s: _Series, ts: Floats) -> Floats:
    """``s`` sampled at ``ts``: its nearest point within half its own interval, else NaN."""
    if len(s.ts) < 2:
        return np.full(len(ts), np.nan)
    idx = np.searchsorted(s.ts, ts).clip(1, len(s.ts) - 1)
    j = np.where(ts - s.ts[idx - 1] <= s.ts[idx] - ts, idx - 1, idx)
    out = s.values[j].astype(float)
    out[np.abs(s.ts[j] - ts) > float(np.median(np.diff(s.ts))) / 2 + 1e-9] = np.nan
    return out


def _mad_scores(train: Floats, test: Floats) -> tuple[Floats, float] | None:
    """Median-deviation scores of ``test`` and the threshold, as the authors fit them."""
    train = train[~np.isnan(train)]
    if len(train) < MIN_TRAIN:
        return None
    if float(np.std(train)) == 0.0:
        return np.abs(test - float(np.mean(train))), 0.0
    med = float(np.median(train))
    mad = float(np.median(np.abs(train - med)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(test - med) / mad, MAD_THRESHOLD


def _pearson_p(x: Floats, y: Floats) -> tuple[float, float]:
    """(r, two-sided p) of a Pearson correlation, NaN pairs dropped; NaNs when undefined."""
    from scipy.stats import t as student

    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 2 or float(np.std(x)) == 0.0 or float(np.std(y)) == 0.0:
        return math.nan, math.nan
    r = float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))
    if n == 2:
        return r, 1.0
    if abs(r) == 1.0:
        return r, 0.0
    tstat = r * math.sqrt((n - 2) / (1 - r * r))
    return r, float(2 * student.sf(abs(tstat), n - 2))


def correlation_ranking(bundle_dir: Path) -> list[tuple[str, float]]:
    """The PetShop authors' ranked correlation: anomalous nodes by p-value of their
    correlation with the target KPI (score ``-p``; empty when the target is not anomalous)."""
    bundle = read_bundle(bundle_dir)
    scored = _zscores(bundle)
    kpi = _kpi(bundle, scored)
    if kpi is None:
        return []
    split, end = _split(bundle)
    ts = kpi.ts
    abnormal = (ts >= split) & (ts <= end)
    rows = (ts >= split - (end - split)) & (ts <= end)
    target = _mad_scores(kpi.values[ts < split], kpi.values)
    if target is None:
        return []
    hot = np.flatnonzero(abnormal & (target[0] > target[1]))
    if not len(hot):
        return []
    row = int(hot[0])
    # each node's series of the KPI's kind (same name and non-identity labels), else its most moved
    per: dict[str, tuple[_Series, float]] = {}
    for s, z in scored:
        if s.service == kpi.service:
            continue
        same = s.name == kpi.name and s.labels == kpi.labels
        have = per.get(s.service)
        have_same = have is not None and have[0].name == kpi.name and have[0].labels == kpi.labels
        if have is None or (same and not have_same) or (same == have_same and z > have[1]):
            per[s.service] = (s, z)
    out: dict[str, tuple[float, float]] = {}
    for svc, (s, _) in per.items():
        vals = _at(s, ts)
        fit = _mad_scores(vals[ts < split], vals[row : row + 1])
        if fit is None or not bool(fit[0][0] > fit[1]):
            continue
        r, p = _pearson_p(vals[rows], kpi.values[rows])
        if not math.isnan(p):
            out[svc] = (p, abs(r))
    ranked = sorted(out.items(), key=lambda kv: (kv[1][0], -kv[1][1], kv[0]))
    return [(svc, -p) for svc, (p, _) in ranked]


def main() -> int:
    """Print both rankings of one bundle."""
    if len(sys.argv) != 2:
        print("usage: python scripts/baselines.py BUNDLE", file=sys.stderr)
        return 2
    path = Path(sys.argv[1])
    for name, fn in (("z-score", zscore_ranking), ("ranked correlation", correlation_ranking)):
        print(f"{name}:")
        for svc, score in fn(path)[:10]:
            print(f"  {score:12.4g}  {svc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
