"""Detection: which signals of which services deviate from their baseline, and since when.

Every series (one per catalog role and service, and per caller for edge
roles) is laid on a common time grid and compared with its own robust
baseline, learned on the look-back before the window:

* **baseline**: median and MAD of the baseline period; the scale is
  ``max(1.4826 * MAD, rel_floor * |median|, role floor)`` so a flat series
  (MAD 0) still needs a change that matters in absolute terms.
* **deviation**: ``z = (x - median) / scale`` in the role's direction(s)
  (errors and latency only count upwards, ready pods only downwards...).
* **score**: the largest deviation *sustained* for ``sustain`` consecutive
  points, so a single spike is not an incident.
* **onset**: the first sustained crossing of ``threshold``, refined backwards
  to where the deviation first rose above ``low`` (CUSUM-like: the change
  began before it became obvious).

Errors are judged as a ratio (``error_ratio = error_rate / request_rate``)
as well as in absolute terms. The work is vectorised: one matrix of series
by time, numpy reductions along time, no per-series Python loop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from correlator.model import ANOMALY_COLUMNS, Window, empty_frame

__all__ = [
    "DIRECTIONS",
    "SKIP_ROLES",
    "DetectConfig",
    "aggregate",
    "detect",
    "grid_step",
]

#: Roles describing inventory rather than behaviour; patterns read them directly.
SKIP_ROLES = frozenset(
    {"version", "pod_info", "node_zone", "deploy_generation", "db_max_connections", "memory_limit"}
)

#: Which way a role must move to matter: ``+1`` up, ``-1`` down, ``0`` either.
DIRECTIONS: dict[str, int] = {
    "error_rate": 1,
    "error_ratio": 1,
    "latency": 1,
    "edge_errors": 1,
    "edge_error_ratio": 1,
    "edge_latency": 1,
    "restarts": 1,
    "oom_kills": 1,
    "cpu_throttled": 1,
    "memory": 1,
    "memory_ratio": 1,
    "db_connections": 1,
    "db_tx_duration": 1,
    "db_locks": 1,
    "pod_ready": -1,
    "node_ready": -1,
    "up": -1,
}

#: How per-pod/per-dimension rows of a role add up to one value per service.
_AGG: dict[str, str] = {
    "latency": "max",
    "edge_latency": "max",
    "db_tx_duration": "max",
    "db_max_connections": "max",
    "up": "min",
    "node_ready": "min",
}

#: The smallest change of a role that matters in absolute terms (scale floor).
_FLOORS: dict[str, float] = {
    "error_ratio": 0.01,
    "edge_error_ratio": 0.01,
    "error_rate": 0.05,
    "edge_errors": 0.05,
    "latency": 0.02,
    "edge_latency": 0.02,
    "restarts": 0.002,
    "oom_kills": 0.002,
    "request_rate": 0.1,
    "edge_rate": 0.1,
    "cpu": 0.02,
    "cpu_throttled": 0.5,
    "memory": 8e6,
    "memory_ratio": 0.02,
    "pod_ready": 0.2,
    "node_ready": 0.5,
    "up": 0.2,
    "db_connections": 2.0,
    "db_tx_duration": 0.5,
    "db_locks": 2.0,
}

#: Roles whose series are kept per caller (``peer``) instead of summed.
EDGE_ROLES = frozenset({"edge_rate", "edge_errors", "edge_latency"})


@dataclass(frozen=True)
class DetectConfig:
    """Thresholds of the detector."""

    threshold: float = 4.0
    """Sustained robust z-score a series must reach to be anomalous."""
    sustain: int = 3
    """Consecutive points the deviation must hold (a lone spike is noise)."""
    low: float = 2.0
    """Deviation the onset is refined back to (where the change began)."""
    rel_floor: float = 0.05
    """Scale floor as a fraction of the baseline median (flat series)."""
    search_before: float = 900.0
    """Seconds before the window start in which an onset may still be found."""
    min_baseline_points: int = 5
    """Baseline points a series needs to be judged at all."""


def grid_step(ts: np.ndarray) -> float:
    """The sampling step of a set of timestamps (median positive difference)."""
    u = np.unique(ts)
    if u.size < 2:
        return 60.0
    d = np.diff(u)
    d = d[d > 0]
    return float(np.median(d)) if d.size else 60.0


def aggregate(signals: pd.DataFrame) -> pd.DataFrame:
    """One value per (role, service, peer, ts), plus derived ratio roles.

    Returns columns ``role, service, peer, ts, value``. ``peer`` is ``""`` for
    non-edge roles. Derived: ``error_ratio`` (error_rate / request_rate),
    ``edge_error_ratio`` and ``memory_ratio`` (memory / memory_limit).
    """
    cols = ["role", "service", "peer", "ts", "value"]
    if signals.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    df = signals[["role", "service", "peer", "ts", "value"]].copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    df["ts"] = pd.to_numeric(df["ts"], errors="coerce").astype(float)
    df = df[df["service"].notna() & df["ts"].notna()]
    is_edge = df["role"].isin(EDGE_ROLES)
    df["peer"] = np.where(is_edge, df["peer"].fillna("").astype(str), "")
    df["service"] = df["service"].astype(str)
    parts = []
    for how in ("sum", "max", "min"):
        roles = [r for r in df["role"].unique() if _AGG.get(r, "sum") == how]
        if not roles:
            continue
        sub = df[df["role"].isin(roles)]
        g = sub.groupby(["role", "service", "peer", "ts"], sort=False)["value"]
        parts.append(getattr(g, how)().reset_index())
    agg = pd.concat(parts, ignore_index=True)
    derived = [
        _ratio(agg, "error_rate", "request_rate", "error_ratio"),
        _ratio(agg, "edge_errors", "edge_rate", "edge_error_ratio"),
        _ratio(agg, "memory", "memory_limit", "memory_ratio"),
    ]
    return pd.concat([agg, *derived], ignore_index=True)


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


def _matrix(agg: pd.DataFrame, step: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Series keys, the time grid, and the keys x grid value matrix (NaN where missing)."""
    keys = agg[["role", "service", "peer"]]
    codes, uniques = pd.factorize(pd.MultiIndex.from_frame(keys))
    t0 = float(agg["ts"].min())
    col = np.rint((agg["ts"].to_numpy(dtype=float) - t0) / step).astype(np.int64)
    grid = t0 + step * np.arange(int(col.max()) + 1)
    mat = np.full((len(uniques), grid.size), np.nan)
    mat[codes, col] = agg["value"].to_numpy(dtype=float)
    key_frame = pd.DataFrame(list(uniques), columns=["role", "service", "peer"])
    return key_frame, grid, mat


def _sustained(z: np.ndarray, k: int) -> np.ndarray:
    """Rolling minimum over ``k`` points ending at each column (NaN counts as -inf)."""
    zz = np.where(np.isnan(z), -np.inf, z)
    if k <= 1 or zz.shape[1] < k:
        return zz
    win = np.lib.stride_tricks.sliding_window_view(zz, k, axis=1)
    out = np.full_like(zz, -np.inf)
    out[:, k - 1 :] = win.min(axis=2)
    return out


def detect(
    signals: pd.DataFrame,
    window: Window,
    config: DetectConfig | None = None,
    step: float | None = None,
) -> pd.DataFrame:
    """Anomalies in ``signals`` (``SIGNAL_COLUMNS``) for ``window``.

    Returns ``ANOMALY_COLUMNS``: ``service``, ``role``, ``onset`` (unix s),
    ``score`` (sustained robust z), ``direction`` (``up``/``down``),
    ``baseline`` (median), ``peak`` (most extreme value after onset) and
    ``detail`` (the caller for edge roles, else ``""``), sorted by onset.
    """
    cfg = config or DetectConfig()
    data = (
        signals[~signals["role"].isin(SKIP_ROLES - {"memory_limit"})] if len(signals) else signals
    )
    agg = aggregate(data)
    agg = agg[~agg["role"].isin(SKIP_ROLES)]
    agg = agg[np.isfinite(agg["value"].to_numpy(dtype=float))]
    if agg.empty:
        return empty_frame(ANOMALY_COLUMNS)
    st = step or grid_step(agg["ts"].to_numpy(dtype=float))
    keys, grid, mat = _matrix(agg, st)

    base_cols = (grid >= window.baseline_start) & (grid < window.start)
    if base_cols.sum() < cfg.min_baseline_points:
        # Short data: learn the baseline on the first third of what there is.
        base_cols = grid < grid[0] + (grid[-1] - grid[0]) / 3.0
    search_cols = (grid >= window.start - cfg.search_before) & (grid <= window.end)
    base = mat[:, base_cols]
    enough = np.sum(~np.isnan(base), axis=1) >= min(cfg.min_baseline_points, base.shape[1])
    with warnings.catch_warnings():
        # All-NaN rows (series absent in the baseline) are expected; ``enough`` drops them.
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(base, axis=1)
        mad = np.nanmedian(np.abs(base - med[:, None]), axis=1)
    roles = keys["role"].to_numpy()
    floors = np.array([_FLOORS.get(r, 1e-9) for r in roles])
    scale = np.maximum.reduce(
        [1.4826 * np.nan_to_num(mad), cfg.rel_floor * np.abs(np.nan_to_num(med)), floors]
    )
    dirs = np.array([DIRECTIONS.get(r, 0) for r in roles])

    z = (mat - med[:, None]) / scale[:, None]
    out = []
    for sign in (1, -1):
        rows = (dirs == sign) | (dirs == 0)
        rows &= enough
        if not rows.any():
            continue
        zs = sign * z[rows]
        zs[:, ~search_cols] = np.nan
        sus = _sustained(zs, cfg.sustain)
        score = sus.max(axis=1)
        hit = score >= cfg.threshold
        if not hit.any():
            continue
        idx_rows = np.flatnonzero(rows)[hit]
        sus_h, zs_full = sus[hit], sign * z[idx_rows]
        # First sustained crossing: the window ends at column c, so it starts at c - k + 1.
        first_end = np.argmax(sus_h >= cfg.threshold, axis=1)
        first = np.maximum(first_end - cfg.sustain + 1, 0)
        # Refine backwards: the last column before ``first`` whose deviation was below ``low``.
        below = np.where(np.nan_to_num(zs_full, nan=-np.inf) < cfg.low, np.arange(grid.size), -1)
        last_below = np.maximum.accumulate(below, axis=1)
        onset_idx = last_below[np.arange(len(first)), first] + 1
        onset_idx = np.minimum(np.maximum(onset_idx, 0), first)
        after = np.arange(grid.size)[None, :] >= onset_idx[:, None]
        peak_z = np.where(after & ~np.isnan(zs_full), zs_full, -np.inf).max(axis=1)
        peak = med[idx_rows] + sign * peak_z * scale[idx_rows]
        frame = pd.DataFrame(
            {
                "service": keys["service"].to_numpy()[idx_rows],
                "role": roles[idx_rows],
                "onset": grid[onset_idx],
                "score": np.minimum(score[hit], 1e3),
                "direction": "up" if sign == 1 else "down",
                "baseline": med[idx_rows],
                "peak": peak,
                "detail": keys["peer"].to_numpy()[idx_rows],
            }
        )
        out.append(frame)
    if not out:
        return empty_frame(ANOMALY_COLUMNS)
    res = pd.concat(out, ignore_index=True)
    return res.sort_values(["onset", "score"], ascending=[True, False]).reset_index(drop=True)[
        list(ANOMALY_COLUMNS)
    ]
