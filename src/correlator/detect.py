"""Detection from metrics: which series of which services deviate from their baseline, and since when.

Every series (one per role and service, per caller for edge roles, and per
metric family for series no role knows) is laid on a common time grid and
compared with its own robust baseline. Every scale comes from the data:

* **baseline**: median and MAD of the normal points before the window (or, when
  the data holds little before it, before the alert; and with a short baseline,
  every point up to the series' own onset). A short baseline is worked with and
  reported, never refused.
* **noise scale**: ``max(1.4826 * MAD, rel_floor * |median|, resolution)``. The
  resolution is what the data can tell apart: for event rates the Poisson noise
  of the counts behind them (``sqrt(rate / R)`` for a rate over ``R`` seconds) and
  the ``min_events`` a change must hold; for failed-of-all ratios the binomial
  noise of the requests behind them; for other series a share of their quantum
  (the smallest step between baseline values). No floor is in absolute units, and
  ``rel_floor`` makes materiality a relative change.
* **deviation**: ``z = (x - median) / scale`` in the role's direction(s)
  (errors and latency only count upwards, ready pods only downwards...).
* **score**: the largest deviation *sustained* over ``sustain_seconds`` (three
  taps across that span, at least two samples), so a single spike is not an incident.
* **onset**: the first sustained crossing of ``threshold`` (for large changes, of
  a share of the peak deviation, so a slowly drifting baseline does not drag it
  early), refined back by at most ``refine_seconds`` to where the deviation first
  rose above ``low`` (the change began before it became obvious).
* **end**: the last time the deviation still held; with the alert's start
  known, anomalies over well before it (unrelated blips) are dropped.
* **coarse pass**: series sampled much finer than ``coarse_seconds`` that did not
  move at their own resolution are judged again on block means of that length,
  with the baseline and the noise of those blocks: a lasting change smaller than
  one sample's noise (Poisson counts of a low rate scraped every second) shows there.

Errors are judged as a ratio (``error_ratio = error_rate / request_rate``)
as well as in absolute terms. The work is vectorised: one matrix of series
by time, numpy reductions along time, no per-series Python loop.
"""

from __future__ import annotations

import typing
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from correlator.model import ANOMALY_COLUMNS, Window, empty_frame
from correlator.roles import GENERIC, INVENTORY_ROLES, PER_PEER_ROLES, ROLES
from correlator.roles import role as role_of

__all__ = [
    "ALERT_ROLES",
    "DIRECTIONS",
    "SKIP_ROLES",
    "DetectConfig",
    "aggregate",
    "confirm_alert",
    "detect",
    "grid_step",
    "series_index",
]

#: Roles describing inventory rather than behaviour; patterns read them directly.
SKIP_ROLES = INVENTORY_ROLES

#: Which way a role must move to matter: ``+1`` up, ``-1`` down, ``0`` either.
DIRECTIONS: dict[str, int] = {name: r.direction for name, r in ROLES.items() if r.direction}

#: How per-pod/per-dimension rows of a role add up to one value per service (the worst
#: pod shows a leak; a sum jumps whenever a rollout doubles the pods).
_AGG: dict[str, str] = {name: r.agg for name, r in ROLES.items() if r.agg != "sum"}


@dataclass(frozen=True)
class DetectConfig:
    """Thresholds of the detector. Durations are seconds; nothing is counted in points."""

    threshold: float = 4.0
    """Sustained robust z-score a series must reach to be anomalous."""
    sustain_seconds: float = 30.0
    """How long the deviation must hold (first to last tap; at least two samples)."""
    low: float = 2.0
    """Deviation the onset is refined back to (where the change began)."""
    rel_floor: float = 0.05
    """Scale floor as a fraction of the baseline median: materiality is a relative change."""
    min_events: float = 3.0
    """Events (errors, restarts...) a change of an event rate must add over its rate range."""
    quantum_share: float = 0.25
    """Scale floor as a share of the series' quantum (a whole step of a flat integer gauge,
    like ready pods, is a deviation of ``1 / quantum_share``)."""
    search_before: float = 900.0
    """Seconds before the window start in which an onset may still be found."""
    min_baseline_points: int = 2
    """Baseline samples a series needs to be judged at all (few samples widen the scale:
    see ``small_sample``)."""
    small_sample: float = 2.0
    """The scale learned on ``n`` baseline samples is widened by ``1 + small_sample / n``:
    a spread seen on a handful of points says little about the noise."""
    full_baseline: float = 1800.0
    """A baseline shorter than this (seconds) is short: it is extended up to each series'
    own onset, and reported."""
    onset_share: float = 0.1
    """For large changes the onset is where the deviation first held this share of its
    peak (robust to a drifting baseline), then refined back by at most ``refine_seconds``."""
    refine_seconds: float = 30.0
    """How far back the onset may move from the first sustained crossing."""
    episode_gap: float = 300.0
    """Seconds back to normal (below ``low``) that end an episode: the onset is that of
    the episode holding the peak, not of an earlier one that resolved."""
    stale_after: float = 120.0
    """An anomaly whose deviation ended this long (at least two samples) before the alert
    started is dropped (an unrelated blip), when the alert time is known."""
    rate_range: float | None = None
    """Seconds over which counters were turned into rates (``None``: four grid steps)."""
    coarse_seconds: float = 60.0
    """Series sampled finer than a third of this are judged again on means over blocks
    this long (their noise learned from the baseline's blocks): a lasting change too
    small for any one noisy sample (a low request rate scraped every second going 4x)."""


def grid_step(ts: np.ndarray) -> float:
    """The sampling step of a set of timestamps (median positive difference)."""
    u = np.sort(pd.unique(ts))  # np.unique's answer, by hashing rather than sorting every ts
    if u.size < 2:
        return 60.0
    d = np.diff(u)
    d = d[d > 0]
    return float(np.median(d)) if d.size else 60.0


def aggregate(signals: pd.DataFrame) -> pd.DataFrame:
    """One value per (role, service, peer, ts), plus derived ratio roles.

    Returns columns ``role, service, peer, ts, value`` (the first three
    categorical). ``peer`` is ``""`` except for the roles kept per peer
    (:data:`~correlator.roles.PER_PEER_ROLES`). Derived:
    ``error_ratio`` (error_rate / request_rate), ``edge_error_ratio`` and
    ``memory_ratio`` (memory / memory_limit). Grouping runs on integer codes
    (the category codes of a compact frame, see
    :func:`correlator.model.compact_signals`), so millions of rows take a second or two.
    """
    cols = ["role", "service", "peer", "ts", "value"]
    if signals.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    value = _floats(signals["value"])
    ts = _floats(signals["ts"])
    role_codes, roles = _factorize(signals["role"])
    role_codes, roles = _name_generic(role_codes, roles, signals["detail"])
    svc_codes, svcs = _factorize(signals["service"])
    is_edge = np.isin(roles.to_numpy(dtype=object), list(PER_PEER_ROLES))[role_codes]
    peer_codes, peers = _edge_peers(signals["peer"], is_edge)
    del is_edge
    ts_codes, tss = pd.factorize(ts)
    n_p, n_s, n_t = len(peers), len(svcs), len(tss)
    key = role_codes.astype(np.int64)
    key *= n_s
    key += svc_codes
    key *= n_p
    key += peer_codes
    key *= n_t
    key += ts_codes
    del peer_codes, ts_codes
    ok = (svc_codes >= 0) & (role_codes >= 0) & ~np.isnan(ts) & ~np.isnan(value)
    del svc_codes, ts
    rc = role_codes
    if not ok.all():
        key, value, rc = key[ok], value[ok], role_codes[ok]
    del ok
    # How each role's rows add up: 0 sum, 1 max, 2 min.
    hows = ("sum", "max", "min")
    how_of_role = np.array([hows.index(_AGG.get(str(r), "sum")) for r in roles], dtype=np.int8)
    how = how_of_role[rc]
    del rc, role_codes
    parts = []
    for i, name in enumerate(hows):
        m = how == i
        if not m.any():
            continue
        whole = bool(m.all())
        g = pd.Series(value if whole else value[m], copy=False).groupby(
            key if whole else key[m], sort=False
        )
        parts.append(getattr(g, name)())
    del key, value, how
    res = pd.concat(parts) if len(parts) > 1 else parts[0]
    del parts
    rest, t_i = np.divmod(res.index.to_numpy(dtype=np.int64), n_t)
    rest, p_i = np.divmod(rest, n_p)
    r_i, s_i = np.divmod(rest, n_s)
    del rest
    peer_cats = pd.Index(peers).astype(object).fillna("").astype(str)
    peer_codes_out, peer_uni = pd.factorize(peer_cats)
    agg = pd.DataFrame(
        {
            "role": _from_codes(r_i, pd.Index(roles).astype(str)),
            "service": _from_codes(s_i, pd.Index(svcs).astype(str)),
            "peer": _from_codes(peer_codes_out[p_i], pd.Index(peer_uni).astype(str)),
            "ts": np.asarray(tss, dtype=float)[t_i],
            "value": res.to_numpy(dtype=float),
        },
        copy=False,
    )
    del res, r_i, s_i, p_i, t_i
    filled = [_zero_fill(agg, num, den) for num, den, _ in _COUNT_RATIOS]
    filled = [f for f in filled if len(f)]
    if filled:
        agg = _stack(agg, pd.concat(filled, ignore_index=True))
    derived = [
        *(_ratio(agg, num, den, name) for num, den, name in _COUNT_RATIOS),
        _ratio(agg, "memory", "memory_limit", "memory_ratio"),
    ]
    derived = [d for d in derived if len(d)]
    if not derived:
        return agg
    return _stack(agg, pd.concat(derived, ignore_index=True))


def series_index(signals: pd.DataFrame) -> dict[Any, np.ndarray]:
    """Row positions of each aggregated series: ``(role, service, peer) -> positions``.

    Made once per investigation (a second or so on the millions of rows of a big one)
    and shared by topology and the patterns, which both look series up by key.
    """
    if signals.empty:
        return {}
    index = signals.groupby(["role", "service", "peer"], sort=False, observed=True).indices
    return {key: np.asarray(rows) for key, rows in index.items()}


def _name_generic(
    role_codes: np.ndarray, roles: pd.Index, detail: pd.Series
) -> tuple[np.ndarray, pd.Index]:
    """Rows of role ``series`` (a series no role knows) become one role per metric family,
    ``series:<family>`` (the family is in ``detail``), so families are judged apart."""
    where = np.flatnonzero(roles.astype(str) == GENERIC)
    if not where.size:
        return role_codes, roles
    mask = role_codes == where[0]
    if not mask.any():
        return role_codes, roles
    names = (
        detail.to_numpy(dtype=object)[mask]
        if not isinstance(detail.dtype, pd.CategoricalDtype)
        else detail.cat.codes.to_numpy()[mask]
    )
    uniq, inv = np.unique(
        names.astype(str) if names.dtype == object else names, return_inverse=True
    )
    if isinstance(detail.dtype, pd.CategoricalDtype):
        cats = detail.cat.categories
        labels = [str(cats[u]) if u >= 0 else "" for u in uniq.tolist()]
    else:
        labels = [str(u) for u in uniq.tolist()]
    new_roles = pd.Index([*roles.astype(str), *(f"{GENERIC}:{n}" for n in labels)], dtype=object)
    codes = role_codes.astype(np.int64)
    codes[mask] = len(roles) + inv
    return codes, new_roles


def _stack(agg: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    """``agg`` then the rows of ``extra`` (same columns), categories merged."""
    out = {c: _union(agg[c], extra[c]) for c in ("role", "service", "peer")}
    return pd.DataFrame(
        {
            **out,
            "ts": np.concatenate([agg["ts"].to_numpy(), extra["ts"].to_numpy(dtype=float)]),
            "value": np.concatenate(
                [agg["value"].to_numpy(), extra["value"].to_numpy(dtype=float)]
            ),
        },
        copy=False,
    )


def _from_codes(codes: np.ndarray, categories: pd.Index) -> pd.Categorical:
    """A categorical of known-valid codes (no range check over millions of rows)."""
    small = codes.astype(np.int32) if len(categories) < np.iinfo(np.int32).max else codes
    return pd.Categorical.from_codes(small, categories=categories, validate=False)


def _union(first: pd.Series, then: pd.Series) -> pd.Categorical:
    """``first`` then ``then`` as one categorical: ``first``'s categories, then the text
    values of ``then`` that are new, sorted."""
    if isinstance(then.dtype, pd.CategoricalDtype) and then.dtype == first.dtype:
        second = then.array
    else:
        codes, uniques = pd.factorize(then.astype(str))
        order = np.argsort(np.asarray(uniques, dtype=object), kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        second = pd.Categorical.from_codes(
            rank[codes], categories=pd.Index(uniques).astype(str)[order], validate=False
        )
    return pd.api.types.union_categoricals(typing.cast(Any, [first.array, second]))


def _floats(col: pd.Series) -> np.ndarray:
    """A column as float64 (NaN where not a number), without a copy when it already is."""
    if col.dtype == np.float64:
        return col.to_numpy()
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)


def _factorize(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """``pd.factorize(col)``: codes (-1 for NA) and uniques in order of appearance.

    For a categorical column the work runs on its codes, run by run (rows of one
    series come together, so there are far fewer runs than rows).
    """
    if not isinstance(col.dtype, pd.CategoricalDtype):
        codes, uniques = pd.factorize(col)
        return codes, pd.Index(uniques)
    codes, seen = _factorize_runs(col.cat.codes.to_numpy())
    if (seen < 0).any():  # NA: the sentinel -1, not one of the uniques
        na = int(np.flatnonzero(seen < 0)[0])
        codes = np.where(codes == na, -1, codes - (codes > na)).astype(codes.dtype)
        seen = np.delete(seen, na)
    return codes, pd.CategoricalIndex(pd.Categorical.from_codes(seen, dtype=col.dtype))


def _factorize_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize`` of an integer array (int32 codes), hashing the first value of each
    run of equal values rather than every value."""
    n = len(values)
    starts = np.flatnonzero(values[1:] != values[:-1]) + 1
    if len(starts) > n // 8:
        codes, seen = pd.factorize(values)
        return codes.astype(np.int32), np.asarray(seen)
    starts = np.r_[0, starts]
    run_codes, seen = pd.factorize(values[starts])
    codes = np.repeat(run_codes.astype(np.int32), np.diff(np.r_[starts, n]))
    return codes, np.asarray(seen)


def _edge_peers(peer: pd.Series, is_edge: np.ndarray) -> tuple[np.ndarray, pd.Index]:
    """Codes and uniques (order of appearance, NA kept) of the peer of edge rows, ``""`` else."""
    if not isinstance(peer.dtype, pd.CategoricalDtype):
        codes, uniques = pd.factorize(peer.where(is_edge, ""), use_na_sentinel=False)
        return codes, pd.Index(uniques)
    # The same on the category codes, without a column of strings: n stands for NA, and
    # "" for itself (a category, or one past NA).
    cats = peer.cat.categories
    n = len(cats)
    blank = int(cats.get_indexer(pd.Index([""]))[0])
    code = peer.cat.codes.to_numpy().astype(np.int32)
    code[code < 0] = n
    code = np.where(is_edge, code, np.int32(blank if blank >= 0 else n + 1))
    codes, seen = _factorize_runs(code)
    values = [cats[v] if v < n else (np.nan if v == n else "") for v in seen.tolist()]
    return codes, pd.Index(values, dtype=object)


#: Failed-of-all counts: (failures, all requests, the derived ratio role).
_COUNT_RATIOS = (
    ("error_rate", "request_rate", "error_ratio"),
    ("edge_errors", "edge_rate", "edge_error_ratio"),
)


def _zero_fill(agg: pd.DataFrame, num: str, den: str) -> pd.DataFrame:
    """Zero ``num`` rows where ``den`` was seen and ``num`` was not, for series that have
    ``num`` at some point.

    An error counter is often born with its first error (a Prometheus series
    with ``status_code="ERROR"`` does not exist before one happened): its
    baseline was zero, not unknown, wherever the requests were counted.
    """
    cats = list(agg["role"].cat.categories)
    if num not in cats or den not in cats:
        return agg.iloc[0:0]
    codes = agg["role"].cat.codes.to_numpy()
    is_num, is_den = codes == cats.index(num), codes == cats.index(den)
    rows = np.flatnonzero(is_num | is_den)
    is_num = is_num[rows]
    # Integer keys: the series (service, peer), and the series at a time.
    n_peer = len(agg["peer"].cat.categories) + 1
    group = agg["service"].cat.codes.to_numpy(dtype=np.int64)[rows] * n_peer
    group += agg["peer"].cat.codes.to_numpy(dtype=np.int64)[rows] + 1
    ts_codes, ts_uniq = pd.factorize(agg["ts"].to_numpy(dtype=float)[rows])
    key = group * len(ts_uniq) + ts_codes
    fill = ~is_num & np.isin(group, group[is_num])
    # Hash-based: numpy's isin sorts both arrays when the keys span a wide range (here,
    # series x times), ten times slower on millions of rows.
    fill &= ~pd.Series(key, copy=False).isin(key[is_num]).to_numpy()
    out: pd.DataFrame = agg.iloc[rows[fill]][["service", "peer", "ts"]].copy()
    out.insert(0, "role", num)
    out["value"] = 0.0
    return out


def _ratio(agg: pd.DataFrame, num: str, den: str, name: str) -> pd.DataFrame:
    keys = ["service", "peer", "ts"]
    n = agg[agg["role"] == num]
    d = agg[agg["role"] == den]
    if n.empty or d.empty:
        return agg.iloc[0:0]
    m = d[[*keys, "value"]].merge(n[[*keys, "value"]], on=keys, how="left", suffixes=("_d", "_n"))
    m["value_n"] = m["value_n"].fillna(0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(m["value_d"] > 0, m["value_n"] / m["value_d"], np.nan)
    out = m[keys].copy()
    out["value"] = np.clip(ratio, 0.0, 1.0) if name != "memory_ratio" else ratio
    out["role"] = name
    return out[["role", "service", "peer", "ts", "value"]]


def _matrix(
    agg: pd.DataFrame, keep: np.ndarray, step: float
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Series keys, the time grid, and the keys x grid value matrix (NaN where missing).

    Rows are the ``keep`` rows of ``agg``; series come in (role, service, peer)
    code order. Rows of one series mostly come together, so the distinct series
    are found among the first rows of runs, not by sorting millions of keys.
    """
    names = ("role", "service", "peer")
    cats = [agg[c].cat.categories for c in names]
    codes = [agg[c].cat.codes.to_numpy()[keep] for c in names]
    combined = codes[0].astype(np.int64)
    for c, k in zip(cats[1:], codes[1:], strict=True):
        combined *= len(c) + 1
        combined += k
    starts = np.flatnonzero(np.r_[True, combined[1:] != combined[:-1]])
    uniq, first_run, inv_run = np.unique(combined[starts], return_index=True, return_inverse=True)
    del combined
    first = starts[first_run]
    inv = np.repeat(inv_run, np.diff(np.r_[starts, len(codes[0])]))
    ts = agg["ts"].to_numpy(dtype=float)[keep]
    t0 = float(ts.min())
    col = np.rint((ts - t0) / step).astype(np.int64)
    del ts
    grid = t0 + step * np.arange(int(col.max()) + 1)
    mat = np.full((len(uniq), grid.size), np.nan)
    mat[inv, col] = agg["value"].to_numpy(dtype=float)[keep]
    key_frame = pd.DataFrame(
        {
            c: np.asarray(cat, dtype=object)[k[first]]
            for c, cat, k in zip(names, cats, codes, strict=True)
        }
    )
    return key_frame, grid, mat


def _taps(step: float, cfg: DetectConfig) -> np.ndarray:
    """Column offsets back from a point at which a deviation must also hold: up to three
    taps spread over ``sustain_seconds``, at least two samples."""
    span = max(1, round(cfg.sustain_seconds / max(step, 1e-9)))
    out: np.ndarray = np.unique(np.linspace(0, span, min(3, span + 1)).round().astype(np.int64))
    return out


def _sustained(z: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Per column, the minimum of ``z`` at that column and ``taps`` columns back
    (NaN counts as -inf; columns without every tap are -inf)."""
    zz = np.where(np.isnan(z), -np.inf, z)
    out = zz.copy()
    for k in (int(t) for t in taps if t > 0):
        if k >= zz.shape[1]:
            return np.full_like(zz, -np.inf)
        out[:, k:] = np.minimum(out[:, k:], zz[:, :-k])
        out[:, :k] = -np.inf
    return out


def _episode_start(sus: np.ndarray, cfg: DetectConfig, step: float) -> np.ndarray:
    """Per row, the first column of the episode that holds the peak.

    An earlier excursion after which the series was back to normal (below
    ``low``) for ``episode_gap`` seconds is a separate event (a blip, or an earlier incident
    that resolved): it must not pull the onset back to it. Brief dips (a
    leaking pod killed and climbing again) stay within one episode.
    """
    held = sus >= cfg.low
    rows, n = np.arange(sus.shape[0]), sus.shape[1]
    cols = np.arange(n)
    gap = max(1, int(np.ceil(cfg.episode_gap / max(step, 1e-9))))
    # Columns that close a stretch of ``gap`` normal columns after trouble: episode breaks.
    last_held = np.maximum.accumulate(np.where(held, cols, -1), axis=1)
    brk = ~held & (last_held >= 0) & (cols - last_held >= gap)
    del last_held
    peak = np.argmax(sus, axis=1)
    last_brk = np.maximum.accumulate(np.where(brk, cols, -1), axis=1)[rows, peak]
    del brk
    # The episode starts at the first troubled column after the last break before the peak.
    next_held = np.minimum.accumulate(np.where(held, cols, n)[:, ::-1], axis=1)[:, ::-1]
    start = next_held[rows, np.clip(last_brk + 1, 0, n - 1)]
    out: np.ndarray = np.where(last_brk >= 0, start, 0)
    return out


#: Series judged at once (bounds the temporary matrices; every series is judged on its own).
_CHUNK = 4096

#: The request rate behind each failed-of-all ratio.
_RATIO_DENOMINATORS = {"error_ratio": "request_rate", "edge_error_ratio": "edge_rate"}
#: The request rate behind each latency quantile: how many requests it is a quantile of.
_LATENCY_COUNTS = {
    "latency": "request_rate",
    "edge_latency": "edge_rate",
    "client_latency": "client_rate",
}
#: Rates read only to size other series' noise, never judged themselves.
_COUNT_ONLY = frozenset({"client_rate"})
#: Requests per rate range under which a p95 is about the slowest request of the range:
#: one slow request then holds it up for the whole range.
_FEW_REQUESTS = 20.0


def baseline_end(grid_start: float, window: Window, alert_at: float | None) -> float:
    """Where normal data ends before any onset is known.

    The window's start when the data holds five minutes or more before it; else
    (real exports often begin a few minutes before the fault) the alert's start.
    Either way a short baseline is then extended to each series' own onset (see
    :func:`detect`).
    """
    if grid_start <= window.start - 300.0 or alert_at is None:
        return window.start
    return max(alert_at, window.start)


def detect(
    signals: pd.DataFrame,
    window: Window,
    config: DetectConfig | None = None,
    step: float | None = None,
    aggregated: pd.DataFrame | None = None,
    alert_at: float | None = None,
    base_end: float | None = None,
) -> pd.DataFrame:
    """Anomalies in ``signals`` (``SIGNAL_COLUMNS``) for ``window``.

    ``aggregated``: the frame :func:`aggregate` made of ``signals``, when
    the caller already has it. ``alert_at``: when the alert started; anomalies
    over well before it are dropped. ``base_end``: where normal data ends (by
    default :func:`baseline_end`). Returns ``ANOMALY_COLUMNS`` (modality
    ``metrics``): ``service``, ``role``, ``onset`` (unix s), ``end`` (the last
    time the deviation held), ``score`` (sustained robust z), ``direction``
    (``up``/``down``), ``baseline`` (median), ``peak`` (most extreme value after
    onset), ``peer`` (the caller for edge roles, else ``""``) and ``signal`` (the
    role, or the metric family of a ``series`` row), sorted by onset.
    """
    cfg = config or DetectConfig()
    if aggregated is None:
        data = (
            signals[~signals["role"].isin(SKIP_ROLES - {"memory_limit", *_COUNT_ONLY})]
            if len(signals)
            else signals
        )
        aggregated = aggregate(data)
    if aggregated.empty:
        return empty_frame(ANOMALY_COLUMNS)
    keep = ~aggregated["role"].isin(SKIP_ROLES).to_numpy(dtype=bool)
    keep &= np.isfinite(aggregated["value"].to_numpy(dtype=float))
    if not keep.any():
        return empty_frame(ANOMALY_COLUMNS)
    agg = aggregated
    if not isinstance(agg["role"].dtype, pd.CategoricalDtype):
        agg = agg[keep].astype({c: "category" for c in ("role", "service", "peer")})
        keep = np.ones(len(agg), dtype=bool)
    st = step or grid_step(agg["ts"].to_numpy(dtype=float)[keep])
    keys, grid, mat = _matrix(agg, keep, st)
    del keep

    cut = base_end if base_end is not None else baseline_end(float(grid[0]), window, alert_at)
    base_cols = (grid >= window.baseline_start) & (grid < cut)
    search_cols = (grid >= window.start - cfg.search_before) & (grid <= window.end)
    roles = keys["role"].to_numpy().astype(str)
    plain = np.array([r.split(":", 1)[0] for r in roles], dtype=object)
    units = np.array([_unit(str(r)) for r in roles], dtype=object)
    dirs = np.array([DIRECTIONS.get(str(r), 0) for r in plain])
    rate_range = cfg.rate_range or 4.0 * st
    requests = _request_medians(keys, mat, base_cols, _count_medians(aggregated, grid, base_cols))
    noise = _Noise(units, requests, rate_range)
    # A latency quantile of a few requests per rate range: one slow request holds it up for
    # the whole range, so its deviation must also outlast the range to be a change.
    few = (units == "seconds") & (np.nan_to_num(requests, nan=np.inf) * rate_range < _FEW_REQUESTS)
    found: dict[int, list[dict[str, np.ndarray]]] = {1: [], -1: []}
    for lo in range(0, len(mat), _CHUNK):
        hi = min(lo + _CHUNK, len(mat))
        for group, gcfg in (
            (~few[lo:hi], cfg),
            (few[lo:hi], replace(cfg, sustain_seconds=cfg.sustain_seconds + rate_range)),
        ):
            if not group.any():
                continue
            idx = lo + np.flatnonzero(group)
            sub_noise = noise.rows_at(idx)
            parts = _judge(mat[idx], grid, base_cols, search_cols, sub_noise, dirs[idx], gcfg, st)
            parts = _rebase_short(
                parts, mat[idx], grid, window, search_cols, sub_noise, dirs[idx], gcfg, st
            )
            for sign, part in parts:
                part["row"] = idx[part["row"]]
                found[sign].append(part)
    _coarse_pass(found, mat, grid, window, base_cols, search_cols, noise, dirs, cfg, st)
    out = []
    for sign in (1, -1):
        if not found[sign]:
            continue
        col = {k: np.concatenate([p[k] for p in found[sign]]) for k in found[sign][0]}
        rows = col["row"]
        out.append(
            pd.DataFrame(
                {
                    "service": keys["service"].to_numpy()[rows],
                    "role": plain[rows].astype(str),
                    "onset": col["onset"],
                    "end": col["end"],
                    "score": col["score"],
                    "direction": "up" if sign == 1 else "down",
                    "baseline": col["baseline"],
                    "peak": col["peak"],
                    "peer": keys["peer"].to_numpy()[rows],
                    "modality": "metrics",
                    "signal": [r.split(":", 1)[-1] for r in roles[rows]],
                    "evidence": "",
                }
            )
        )
    if not out:
        return empty_frame(ANOMALY_COLUMNS)
    res = pd.concat(out, ignore_index=True)
    if alert_at is not None:
        # The alert's moment is known to a sample of the data: what held up to a couple of
        # samples before it is not over yet.
        res = res[res["end"] >= alert_at - max(cfg.stale_after, 2.0 * st)]
        if res.empty:
            return empty_frame(ANOMALY_COLUMNS)
    return res.sort_values(["onset", "score"], ascending=[True, False]).reset_index(drop=True)[
        list(ANOMALY_COLUMNS)
    ]


def _coarse_pass(
    found: dict[int, list[dict[str, np.ndarray]]],
    mat: np.ndarray,
    grid: np.ndarray,
    window: Window,
    base_cols: np.ndarray,
    search_cols: np.ndarray,
    noise: _Noise,
    dirs: np.ndarray,
    cfg: DetectConfig,
    step: float,
) -> None:
    """Judge the series not found in a direction again on means over blocks of about
    ``coarse_seconds`` (see the module docstring); adds to ``found`` in place."""
    k = round(cfg.coarse_seconds / max(step, 1e-9))
    if k < 3 or grid.size < 2 * k:
        return
    n_blocks = grid.size // k
    width = n_blocks * k
    # Blocks end at the grid's end (the freshest data counts whole); a ragged head is left.
    lead = grid.size - width
    cgrid = grid[lead:].reshape(n_blocks, k)[:, 0]
    cbase: np.ndarray = np.asarray(base_cols[lead:].reshape(n_blocks, k).all(axis=1))
    csearch: np.ndarray = np.asarray(search_cols[lead:].reshape(n_blocks, k).any(axis=1))
    if cbase.sum() < cfg.min_baseline_points:
        return
    coarse_noise = replace(noise, rate_range=max(noise.rate_range, k * step))
    for sign in (1, -1):
        done = np.zeros(len(mat), dtype=bool)
        for part in found[sign]:
            done[part["row"]] = True
        todo = np.flatnonzero(~done & ((dirs == sign) | (dirs == 0)))
        for lo in range(0, len(todo), _CHUNK):
            idx = todo[lo : lo + _CHUNK]
            block = mat[idx, lead:].reshape(len(idx), n_blocks, k)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                cmat = np.nanmean(block, axis=2)
                # A series constant through its baseline has no noise to average away: the
                # fine pass judged any move of it already.
                spread = np.nanmax(cmat[:, cbase], axis=1) - np.nanmin(cmat[:, cbase], axis=1)
            noisy = np.nan_to_num(spread, nan=0.0) > 0
            if not noisy.any():
                continue
            idx, cmat = idx[noisy], cmat[noisy]
            sub = coarse_noise.rows_at(idx)
            parts = _judge(cmat, cgrid, cbase, csearch, sub, np.full(len(idx), sign), cfg, k * step)
            parts = _rebase_short(
                parts, cmat, cgrid, window, csearch, sub, np.full(len(idx), sign), cfg, k * step
            )
            for s2, part in parts:
                if s2 == sign and len(part["row"]):
                    part["row"] = idx[part["row"]]
                    part["onset"] = _fine_onset(mat, grid, part, sign, k * step)
                    found[sign].append(part)


def _fine_onset(
    mat: np.ndarray, grid: np.ndarray, part: dict[str, np.ndarray], sign: int, block: float
) -> np.ndarray:
    """Onsets found on block means, dated again on the fine samples: within a block or two
    around it, where the cumulative excess over halfway between baseline and peak is
    lowest (it falls before the change and rises after it)."""
    out = part["onset"].astype(float).copy()
    for i, r in enumerate(part["row"]):
        near = (grid >= out[i] - 2.0 * block) & (grid <= out[i] + block)
        cols = np.flatnonzero(near)
        if cols.size < 3:
            continue
        mid = 0.5 * (float(part["baseline"][i]) + float(part["peak"][i]))
        excess = np.nan_to_num(sign * (mat[r, cols] - mid), nan=0.0)
        j = int(np.argmin(np.concatenate([[0.0], np.cumsum(excess)])))
        out[i] = float(grid[cols[min(j, cols.size - 1)]])
    return out


def _rebase_short(
    parts: list[tuple[int, dict[str, np.ndarray]]],
    mat: np.ndarray,
    grid: np.ndarray,
    window: Window,
    search_cols: np.ndarray,
    noise: _Noise,
    dirs: np.ndarray,
    cfg: DetectConfig,
    step: float,
) -> list[tuple[int, dict[str, np.ndarray]]]:
    """Judge again, on every normal point up to its own onset, each anomalous series whose
    baseline was short (under ``full_baseline``): what lay between the baseline's end
    and the onset was normal too, and a few more minutes matter when there are few."""
    out = []
    for sign, part in parts:
        rows = part["row"]
        cut = part["onset"] - 0.5 * step
        mask = (grid[None, :] >= window.baseline_start) & (grid[None, :] < cut[:, None])
        base_n = np.sum(mask & ~np.isnan(mat[rows]), axis=1)
        short = part["n_base"] * step < cfg.full_baseline
        short &= base_n > part["n_base"]
        if not short.any():
            out.append((sign, part))
            continue
        again = _judge(
            mat[rows[short]],
            grid,
            mask[short],
            search_cols,
            noise.rows_at(rows[short]),
            np.full(int(short.sum()), sign),
            cfg,
            step,
        )
        kept = {k: v[~short] for k, v in part.items()}
        pieces = [kept]
        for s2, p2 in again:
            if s2 == sign:
                p2["row"] = rows[short][p2["row"]]
                pieces.append(p2)
        out.append((sign, {k: np.concatenate([p[k] for p in pieces]) for k in part}))
    return out


def _count_medians(
    agg: pd.DataFrame, grid: np.ndarray, base_cols: np.ndarray
) -> dict[tuple[str, str, str], float]:
    """Baseline medians of the rates kept out of the matrix (:data:`_COUNT_ONLY`)."""
    if not base_cols.any():
        return {}
    sub = agg[agg["role"].isin(_COUNT_ONLY)]
    if sub.empty:
        return {}
    base = grid[base_cols]
    ts = sub["ts"].to_numpy(dtype=float)
    sub = sub[(ts >= base.min()) & (ts <= base.max())]
    if sub.empty:
        return {}
    med = sub.groupby(["role", "service", "peer"], observed=True)["value"].median()
    return {(str(r), str(s), str(p)): float(v) for (r, s, p), v in med.items()}


def _request_medians(
    keys: pd.DataFrame,
    mat: np.ndarray,
    base_cols: np.ndarray,
    extra: dict[tuple[str, str, str], float] | None = None,
) -> np.ndarray:
    """Per row, the baseline median of the request rate behind it (NaN when none):
    ``request_rate`` for ``error_ratio``, ``edge_rate`` for ``edge_error_ratio``, and the
    rate each latency quantile is a quantile of (:data:`_LATENCY_COUNTS`). ``extra``:
    medians of rates that are not rows of ``mat``."""
    out = np.full(len(keys), np.nan)
    roles = keys["role"].to_numpy().astype(str)
    behind = {**_RATIO_DENOMINATORS, **_LATENCY_COUNTS}
    want = np.isin(roles, list(behind))
    if not want.any() or not base_cols.any():
        return out
    dens = np.isin(roles, list(behind.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(mat[dens][:, base_cols], axis=1)
    svc = keys["service"].to_numpy().astype(str)
    peer = keys["peer"].to_numpy().astype(str)
    lookup = dict(extra or {})
    lookup.update(
        {(r, s, p): m for r, s, p, m in zip(roles[dens], svc[dens], peer[dens], med, strict=True)}
    )
    for i in np.flatnonzero(want):
        out[i] = lookup.get((behind[roles[i]], svc[i], peer[i]), np.nan)
    return out


@dataclass(frozen=True)
class _Noise:
    """What sets the resolution floor of some rows: their units, the request rate behind
    ratios, and the range (seconds) counters were rated over."""

    units: np.ndarray
    requests: np.ndarray
    rate_range: float

    def rows(self, lo: int, hi: int) -> _Noise:
        """The same for rows ``lo:hi``."""
        return _Noise(self.units[lo:hi], self.requests[lo:hi], self.rate_range)

    def rows_at(self, idx: np.ndarray) -> _Noise:
        """The same for rows ``idx``."""
        return _Noise(self.units[idx], self.requests[idx], self.rate_range)

    def floors(
        self, base: np.ndarray, med: np.ndarray, step: float, cfg: DetectConfig
    ) -> np.ndarray:
        """The smallest scale each row's data can resolve (see the module docstring)."""
        n_base = np.sum(~np.isnan(base), axis=1)
        span = np.maximum(n_base, 1) * step  # seconds of baseline
        r = self.rate_range
        m = np.nan_to_num(np.abs(med))
        out = np.zeros(len(med))
        count = self.units == "count"
        if count.any():
            # A rate over r seconds counts events: Poisson noise at the baseline rate (at
            # least one event over the baseline), and ``min_events`` for a change to matter.
            lam = np.maximum(m, 1.0 / span)
            floor = np.maximum(np.sqrt(lam / r), cfg.min_events / (cfg.threshold * r))
            out[count] = floor[count]
        ratio = (self.units == "ratio") & np.isfinite(self.requests)
        if ratio.any():
            n = np.maximum(np.nan_to_num(self.requests) * r, 1e-9)  # requests per range
            p0 = np.maximum(m, 1.0 / np.maximum(n / r * span, 1.0))
            binom = np.sqrt(p0 * np.clip(1.0 - p0, 0.0, 1.0) / n)
            floor = np.minimum(np.maximum(binom, cfg.min_events / (cfg.threshold * n)), 0.5)
            out[ratio] = floor[ratio]
        other = ~(count | ratio)
        if other.any():
            out[other] = cfg.quantum_share * _quantum(base[other])
        secs = (self.units == "seconds") & np.isfinite(self.requests)
        if secs.any():
            # A tail quantile of n requests is known to about 1.45 / sqrt(n) of itself (a
            # p95 of an exponential tail): a quantile of a few requests wanders widely.
            n = np.maximum(np.nan_to_num(self.requests) * r, 1.0)
            out[secs] = np.maximum(out[secs], (m * 1.45 / np.sqrt(n))[secs])
        return out


def _unit(role: str) -> str:
    """The unit of a (possibly ``series:<family>``) role. A family no role knows is a
    ratio when it says so the Prometheus way (a ``_ratio`` suffix: a share in 0..1)."""
    plain, _, family = role.partition(":")
    if plain == GENERIC and family.endswith("_ratio"):
        return "ratio"
    return role_of(plain).unit


def _magnitude(med: np.ndarray, units: np.ndarray) -> np.ndarray:
    """What a relative change is relative to: the baseline's size, and for shares in 0..1
    its distance to the nearer bound (availability at 100 % dropping to 91 % is a large
    change), at least one percentage point."""
    m = np.abs(np.nan_to_num(med))
    ratio = units == "ratio"
    if ratio.any():
        near = np.maximum(np.minimum(m, np.abs(1.0 - np.nan_to_num(med))), 0.01)
        m = np.where(ratio, near, m)
    out: np.ndarray = m
    return out


def _quantum(base: np.ndarray) -> np.ndarray:
    """Per row, the smallest positive step between baseline values (0 when flat)."""
    if base.shape[1] < 2:
        return np.zeros(len(base))
    d = np.diff(np.sort(base, axis=1), axis=1)
    # Steps within floating-point error of the values are one value written two ways (a
    # rate computed from different sums): not a step the data resolves.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tol = 1e-9 * np.nan_to_num(np.nanmax(np.abs(base), axis=1))
    d = np.where(np.isnan(d) | (d <= tol[:, None]), np.inf, d)
    q = d.min(axis=1)
    out: np.ndarray = np.where(np.isfinite(q), q, 0.0)
    return out


#: The alerted service's own symptoms, confirmed at a lower bar (see :func:`confirm_alert`).
ALERT_ROLES = ("latency", "error_rate", "error_ratio")

#: The bar for them: the alert already says something is wrong with the service.
ALERT_CONFIG = DetectConfig(threshold=3.0, rel_floor=0.01, min_events=1.0)


def confirm_alert(
    anomalies: pd.DataFrame,
    aggregated: pd.DataFrame,
    window: Window,
    service: str | None,
    step: float | None = None,
    alert_at: float | None = None,
    config: DetectConfig = ALERT_CONFIG,
    base_end: float | None = None,
) -> pd.DataFrame:
    """``anomalies`` plus the alerted service's own symptoms, if none was detected.

    The alert is a detection in its own right: it says this service's errors or
    latency went wrong. When the general bar found nothing there (a small
    latency step on a fast service), its own symptom series are judged again at
    ``config``'s lower bar, so the service the alert names is not left looking healthy.
    """
    if not service or aggregated.empty:
        return anomalies
    mine = anomalies["service"].astype(str) == service
    if (mine & anomalies["role"].isin(ALERT_ROLES)).any():
        return anomalies
    # Compared as the frame holds it (categorical): no text copy of millions of rows. The
    # request rate behind the ratio and the quantile comes along: it sizes their noise (an
    # error ratio of one failed request in 90 is not a hundredfold change).
    behind = {_RATIO_DENOMINATORS.get(r) or _LATENCY_COUNTS.get(r) for r in ALERT_ROLES} - {None}
    sub = aggregated[
        (aggregated["service"] == service) & aggregated["role"].isin((*ALERT_ROLES, *behind))
    ]
    if not sub["role"].isin(ALERT_ROLES).any():
        return anomalies
    extra = detect(
        sub, window, config, step=step, aggregated=sub, alert_at=alert_at, base_end=base_end
    )
    extra = extra[extra["role"].isin(ALERT_ROLES)]
    if extra.empty:
        return anomalies
    out = pd.concat([anomalies, extra], ignore_index=True) if len(anomalies) else extra
    return out.sort_values(["onset", "score"], ascending=[True, False]).reset_index(drop=True)


def _judge(
    mat: np.ndarray,
    grid: np.ndarray,
    base_cols: np.ndarray,
    search_cols: np.ndarray,
    noise: _Noise,
    dirs: np.ndarray,
    cfg: DetectConfig,
    step: float,
) -> list[tuple[int, dict[str, np.ndarray]]]:
    """The anomalous rows of some series (each judged on its own), per direction:
    ``row`` (in ``mat``), ``onset``, ``end``, ``score``, ``baseline``, ``peak`` and
    ``n_base`` (baseline samples). ``base_cols``: the baseline columns, for all rows
    (1-D) or per row (2-D)."""
    base = mat[:, base_cols] if base_cols.ndim == 1 else np.where(base_cols, mat, np.nan)
    n_base = np.sum(~np.isnan(base), axis=1)
    enough = n_base >= cfg.min_baseline_points
    with warnings.catch_warnings():
        # All-NaN rows (series absent in the baseline) are expected; ``enough`` drops them.
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(base, axis=1)
        mad = np.nanmedian(np.abs(base - med[:, None]), axis=1)
    floors = noise.floors(base, med, step, cfg)
    del base
    scale = np.maximum.reduce(
        [1.4826 * np.nan_to_num(mad), cfg.rel_floor * _magnitude(med, noise.units), floors]
    )
    # A series flat at zero that no floor resolves (an unknown gauge that never moved):
    # any sustained move away from zero is the change.
    scale = scale * (1.0 + cfg.small_sample / np.maximum(n_base, 1))
    scale = np.where(scale > 0, scale, np.inf)
    flat = ~np.isfinite(scale)
    if flat.any():
        scale[flat] = _first_move(mat[flat], cfg)

    z = (mat - med[:, None]) / scale[:, None]
    taps = _taps(step, cfg)
    span = int(taps.max())
    out = []
    for sign in (1, -1):
        rows = (dirs == sign) | (dirs == 0)
        rows &= enough
        if not rows.any():
            continue
        zs = sign * z[rows]
        zs[:, ~search_cols] = np.nan
        sus = _sustained(zs, taps)
        del zs
        score = sus.max(axis=1)
        hit = score >= cfg.threshold
        if not hit.any():
            continue
        idx_rows = np.flatnonzero(rows)[hit]
        sus_h, zs_full = sus[hit], sign * z[idx_rows]
        del sus
        cols = np.arange(grid.size)
        # The level the onset is measured at: the threshold, or a share of the peak for big
        # changes, so slow drift of the baseline (daily traffic shape) before a large step
        # does not drag the onset minutes early.
        peak_sus = score[hit]
        level = np.maximum(cfg.threshold, cfg.onset_share * np.minimum(peak_sus, 1e3))
        crossed = sus_h >= level[:, None]
        crossed &= cols[None, :] >= _episode_start(sus_h, cfg, step)[:, None]
        first_end = np.argmax(crossed, axis=1)
        first = np.maximum(first_end - span, 0)
        # Refine backwards: while the deviation was already above ``low``, at most
        # ``refine_seconds`` (the change began a little before it became obvious).
        zf = np.nan_to_num(zs_full, nan=-np.inf)
        below = np.where(zf < cfg.low, cols, -1)
        last_below = np.maximum.accumulate(below, axis=1)
        onset_idx = last_below[np.arange(len(first)), first] + 1
        back = round(cfg.refine_seconds / max(step, 1e-9))
        onset_idx = np.clip(onset_idx, first - back, first)
        onset_idx = np.maximum(onset_idx, 0)
        # The last moment the deviation still held (an anomaly over before the alert is noise).
        held = sus_h >= cfg.threshold
        last_end = grid.size - 1 - np.argmax(held[:, ::-1], axis=1)
        after = cols[None, :] >= onset_idx[:, None]
        peak_z = np.where(after & ~np.isnan(zs_full), zs_full, -np.inf).max(axis=1)
        peak = med[idx_rows] + sign * peak_z * scale[idx_rows]
        part = {
            "row": idx_rows,
            "onset": grid[onset_idx],
            "end": grid[last_end],
            "score": np.minimum(score[hit], 1e3),
            "baseline": med[idx_rows],
            "peak": peak,
            "n_base": n_base[idx_rows],
        }
        out.append((sign, part))
    return out


def _first_move(mat: np.ndarray, cfg: DetectConfig) -> np.ndarray:
    """A scale for series flat at zero through their baseline: the size of their largest
    move over ``threshold`` (so that a move of any size scores exactly the threshold
    and the score cannot say more than that it moved), or infinity when they never did."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        top = np.nanmax(np.abs(mat), axis=1)
    top = np.nan_to_num(top, nan=0.0)
    out: np.ndarray = np.where(top > 0, top / cfg.threshold, np.inf)
    return out
