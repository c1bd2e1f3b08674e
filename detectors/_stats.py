"""Count statistics shared by the span and log detectors (vectorised, scale-free).

Every span or log anomaly is a question about counts: *k* events of interest
(errors, spans slower than the baseline's p95, lines of a template) among *n*
opportunities in the window, against *k0* among *n0* before it. The exposure
(*n*, *n0*) is whatever the rate is relative to: spans of the operation, lines
of the service, or seconds.

:func:`count_score` answers it with the predictive distribution of the window
count given the baseline: the baseline rate has a Gamma(k0 + 1/2, n0) posterior
(Jeffreys), so the window count is negative binomial. Its tail probability is
turned into a standard-normal quantile, so the strength lands on the same
scale as a metric's robust z (4 is "clearly anomalous"). Because the baseline's
own uncertainty is in the predictive, 6 errors in 300 spans after 0 in 900 is
about 4, after 0 in 3000 about 5; 7 in 300 after 20 in 900 is nothing.

:func:`cusum_onset` dates a change on time buckets: the cumulative excess of
events of interest over what the baseline rate predicts falls (or stays flat)
until the change and rises during it (a CUSUM), so the onset is just after its
lowest point and the end where it is highest afterwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "EARLIER_SPLITS",
    "LOG_SPLITS",
    "MAX_SCORE",
    "MIN_EVENTS",
    "best_of_splits",
    "bucket_matrix",
    "bucket_width",
    "count_score",
    "cusum_onset",
    "first_event",
    "format_share",
    "hypergeom_log_sf",
    "rank_score",
]

Floats = npt.NDArray[np.float64]

#: The strongest score reported (tail probabilities below ~1e-300 are all "certain").
MAX_SCORE = 30.0
#: Fewest events of interest an anomaly may rest on.
MIN_EVENTS = 3
#: Prior count added to the baseline (Jeffreys): a rate never seen is not taken as zero.
_PRIOR = 0.5


def count_score(k: Any, n: Any, k0: Any, n0: Any, direction: str = "up") -> Floats:
    """Strength of ``k`` events in exposure ``n`` against ``k0`` in ``n0`` (arrays, >= 0).

    ``direction="up"`` scores excess, ``"down"`` a shortfall. Returns z-like
    scores (0 when the window is within what the baseline predicts, and where
    either exposure is zero).
    """
    # Imported here: scipy.special costs ~0.3 s at start-up, only worth it with counts to judge.
    from scipy.special import betainc, ndtri

    k_, n_, k0_, n0_ = (np.asarray(x, dtype=np.float64) for x in (k, n, k0, n0))
    ok = (n_ > 0) & (n0_ > 0)
    r = k0_ + _PRIOR
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(ok, n0_ / (n0_ + n_), 0.5)
    if direction == "up":
        # P(K >= k) for K ~ NegBin(r, p): the regularized incomplete beta I_{1-p}(k, r).
        tail = np.where(k_ > 0, betainc(np.maximum(k_, 1e-12), r, 1.0 - p), 1.0)
    else:
        # P(K <= k) = I_p(r, k + 1).
        tail = betainc(r, k_ + 1.0, p)
    z = -ndtri(np.clip(tail, 1e-300, 1.0))  # the normal's inverse survival function
    z = np.where(ok & np.isfinite(z), np.clip(z, 0.0, MAX_SCORE), 0.0)
    return np.asarray(z, dtype=np.float64)


def rank_score(k: Any, n: Any, k0: Any, n0: Any) -> Floats:
    """Strength of ``k`` of ``n`` window values above a baseline quantile that ``k0`` of
    ``n0`` baseline values exceed, as an exact rank test (arrays, >= 0).

    Were the window like the baseline, the ``k + k0`` values above the threshold would
    fall in the window as ``n`` draws from ``n + n0``: hypergeometric. Its upper tail
    becomes a standard-normal quantile, as in :func:`count_score`. Unlike the count
    test, which lets the baseline's rate itself be uncertain, it knows that a quantile
    of the baseline is exceeded by a fixed share of it: 50 of 50 above a p95 of 27
    values is not a rate that 27 values could hide (about 8 here, 5 by the count test).
    """
    from scipy.special import ndtri

    k_, n_, k0_, n0_ = (np.round(np.asarray(x, dtype=np.float64)) for x in (k, n, k0, n0))
    ok = (n_ > 0) & (n0_ > 0) & (k_ > 0)
    total = np.where(ok, n_ + n0_, 1.0)
    hits = np.where(ok, k_ + k0_, 0.0)
    draws = np.where(ok, n_, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        log_tail = hypergeom_log_sf(np.where(ok, k_, 0.0), total, hits, draws)
        tail = np.exp(np.clip(log_tail, -690.0, 0.0))
        z = -ndtri(np.clip(tail, 1e-300, 1.0))
    z = np.where(ok & np.isfinite(z), np.clip(z, 0.0, MAX_SCORE), 0.0)
    return np.asarray(z, dtype=np.float64)


#: Most terms of a hypergeometric tail summed per row (past the mean they fall fast).
_TAIL_TERMS = 4096


def hypergeom_log_sf(k: Any, total: Any, hits: Any, draws: Any) -> Floats:
    """``log P(X >= k)`` for ``X ~ Hypergeometric(total, hits, draws)`` (arrays of counts).

    The tail's terms summed in log space (``scipy.stats.hypergeom`` gives the same
    to rounding, at the cost of importing ``scipy.stats``: about a second at start-up
    on a small machine). At or below the mean the tail is at least about a half and
    is summed whole; above it the terms fall geometrically, and the first
    ``_TAIL_TERMS`` of them hold all of it that a float can tell.
    """
    from scipy.special import gammaln

    k_, big, hit, n = (np.asarray(x, dtype=np.float64).ravel() for x in (k, total, hits, draws))
    lo = np.maximum(k_, np.maximum(0.0, n - (big - hit)))  # the support starts here
    hi = np.minimum(hit, n)
    count = np.clip(hi - lo + 1.0, 0.0, _TAIL_TERMS).astype(np.int64)
    out = np.where(k_ <= np.maximum(0.0, n - (big - hit)), 0.0, -np.inf)  # all of it: log 1
    todo = (count > 0) & (out < 0)
    if not todo.any():
        return out.reshape(np.shape(k))
    rows = np.repeat(np.flatnonzero(todo), count[todo])
    starts = np.cumsum(count[todo]) - count[todo]
    x = lo[rows] + (np.arange(rows.size) - np.repeat(starts, count[todo])).astype(np.float64)

    def log_choose(a: Floats, b: Floats) -> Floats:
        return gammaln(a + 1.0) - gammaln(b + 1.0) - gammaln(a - b + 1.0)  # type: ignore[no-any-return]

    terms = (
        log_choose(hit[rows], x)
        + log_choose(big[rows] - hit[rows], n[rows] - x)
        - log_choose(big[rows], n[rows])
    )
    peak = np.full(k_.shape, -np.inf)
    np.maximum.at(peak, rows, terms)
    mass = np.zeros(k_.shape)
    np.add.at(mass, rows, np.exp(terms - peak[rows]))
    with np.errstate(divide="ignore"):
        out[todo] = np.minimum(peak[todo] + np.log(mass[todo]), 0.0)
    return out.reshape(np.shape(k))


#: Events of excess a change's start may carry before it counts as begun (one stray)...
_STRAY = 1.0
#: ... when the quiet stretch after it would have held this many at the change's rate.
_QUIET_EVENTS = 5.0


def cusum_onset(
    k: Floats, n: Floats, p0: Floats
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """First and last bucket of each row's change (``k``/``n``: groups x buckets).

    The cumulative excess ``sum(k - n * p0)`` falls (or stays flat) before a
    change and rises during it: the onset is the first bucket after its
    minimum that holds more than expected, the end the bucket where it peaks
    afterwards. Rows with no excess anywhere get their first and last bucket.
    """
    excess = k - n * p0[:, None]
    c = np.cumsum(excess, axis=1)
    with_zero = np.concatenate([np.zeros((c.shape[0], 1)), c], axis=1)
    cols = np.arange(c.shape[1])[None, :]

    def dated(low: npt.NDArray[np.intp]) -> tuple[Any, Any, Any]:
        """Onset bucket, end bucket and whether any excess, with the minimum at ``low``."""
        after = cols >= low[:, None]
        rising = after & (excess > 0)
        has = rising.any(axis=1)
        onset = np.where(has, np.argmax(rising, axis=1), 0)
        end = np.argmax(np.where(after, c, -np.inf), axis=1)
        return onset, np.where(has, np.maximum(end, onset), c.shape[1] - 1), has

    onset, end, has = dated(np.argmin(with_zero, axis=1))  # 0: before the first bucket
    # One stray event well before the change does not date it: where the excess last
    # stood within one event of its minimum before it peaked, the change may begin
    # instead, when the quiet stretch between the two would have held a few events at
    # the change's own rate (a sparse fault's first events are as far apart as its rest).
    top = np.argmax(with_zero, axis=1)
    idx = np.arange(with_zero.shape[1])[None, :]
    near = (with_zero <= with_zero.min(axis=1)[:, None] + _STRAY) & (idx < top[:, None])
    last = with_zero.shape[1] - 1 - np.argmax(near[:, ::-1], axis=1)
    onset2, end2, has2 = dated(np.where(near.any(axis=1), last, 0))
    rows = np.arange(c.shape[0])
    seen = np.concatenate([np.zeros((c.shape[0], 1)), np.cumsum(n, axis=1)], axis=1)
    exposure = seen[rows, end2 + 1] - seen[rows, onset2]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(
            exposure > 0, (with_zero[rows, end2 + 1] - with_zero[rows, onset2]) / exposure, 0.0
        )
    quiet = seen[rows, onset2] - seen[rows, onset + 1]  # exposure between the two
    stray = has & has2 & (onset2 > onset) & (rate * quiet >= _QUIET_EVENTS)
    onset = np.where(stray, onset2, onset)
    end = np.where(stray, end2, end)
    onset = np.where(has | has2, _likeliest_start(k, n, p0, onset, end), onset)
    return onset.astype(np.int64), end.astype(np.int64)


#: Events passed over that would be this unlikely (a standard-normal quantile) at the
#: baseline rate are a start of their own, not a trickle before the change.
_OWN_START = 2.33


def _likeliest_start(
    k: Floats, n: Floats, p0: Floats, onset: npt.NDArray[Any], end: npt.NDArray[Any]
) -> npt.NDArray[np.int64]:
    """Each row's onset moved to the likeliest start of its change when what it passes
    over is what the baseline rate would have made anyway.

    Between a first excess and the change's end, the likeliest start is the
    bucket where a step from the baseline rate to the rate of the rest best
    explains the counts (Poisson likelihood ratio, the post-change rate fitted),
    taken back over the unbroken run of buckets with excess just before it (the
    change's own first events). A trickle at about the usual rate before it does
    not date the change, however long it lasts; a stretch unlikely at the
    baseline rate is where the change began, and keeps the onset.
    """
    from scipy.special import gammainc, ndtri

    rows = np.arange(k.shape[0])
    sk = np.concatenate([np.zeros((k.shape[0], 1)), np.cumsum(k, axis=1)], axis=1)
    sn = np.concatenate([np.zeros((n.shape[0], 1)), np.cumsum(n, axis=1)], axis=1)
    tau = np.arange(k.shape[1])[None, :]
    big_k = sk[rows, end + 1][:, None] - sk[:, :-1]
    big_n = sn[rows, end + 1][:, None] - sn[:, :-1]
    expect = big_n * p0[:, None]
    ok = (tau >= onset[:, None]) & (tau <= end[:, None]) & (big_n > 0) & (big_k > expect)
    with np.errstate(divide="ignore", invalid="ignore"):
        llr = np.where(ok, big_k * np.log(big_k / expect) - (big_k - expect), -np.inf)
    best = np.where(ok.any(axis=1), np.argmax(llr, axis=1), onset)
    quiet = (k <= n * p0[:, None]) & (tau >= onset[:, None]) & (tau < best[:, None])
    last_quiet = np.where(quiet.any(axis=1), k.shape[1] - 1 - np.argmax(quiet[:, ::-1], axis=1), -1)
    start = np.maximum(last_quiet + 1, onset)
    # The events of the stretch passed over, against the baseline rate: P(X >= k).
    passed = np.maximum(sk[rows, start] - sk[rows, onset], 0.0)
    mu = np.maximum((sn[rows, start] - sn[rows, onset]) * p0, 1e-12)
    tail = np.where(passed > 0, gammainc(np.maximum(passed, 1e-12), mu), 1.0)
    likely = -ndtri(np.clip(tail, 1e-300, 1.0)) < _OWN_START
    return np.asarray(np.where(likely, start, onset), dtype=np.int64)


def bucket_width(n_events: int, span: float, floor: float = 1.0, most: int = 240) -> float:
    """A time resolution in seconds for ``n_events`` spread over ``span`` seconds.

    About five events per bucket on average (an onset is not dated by one stray
    event), never finer than ``floor`` seconds nor finer than ``span / most``
    (bounds the work), nor coarser than a tenth of ``span``.
    """
    if n_events <= 0 or span <= 0:
        return max(floor, 1.0)
    width = 5.0 * span / n_events
    return float(max(floor, span / most, min(width, span / 10.0)))


def bucket_matrix(
    codes: npt.NDArray[np.int64],
    bucket: npt.NDArray[np.int64],
    weight: Floats,
    shape: tuple[int, int],
) -> Floats:
    """Sum of ``weight`` per (group code, bucket) as a dense groups x buckets matrix."""
    out = np.zeros(shape[0] * shape[1], dtype=np.float64)
    ok = (codes >= 0) & (bucket >= 0) & (bucket < shape[1])
    np.add.at(out, codes[ok] * shape[1] + bucket[ok], weight[ok])
    return out.reshape(shape)


#: Seconds before the baseline's end at which the span and log detectors also split.
#: The baseline's end is where the alert says trouble began, minus a margin; a fault
#: that began earlier (a slow leak, a delay that took minutes to page, an SLO burn-rate
#: alert over an hour that paged half an hour in) puts its first minutes in the "before"
#: side, and a count test against it sees little.
EARLIER_SPLITS = (300.0, 900.0, 1800.0)
#: Log records are few and cheap to split again: also a minute or two back, for a fault
#: that began shortly before the alert when the baseline (short) ends at the alert.
LOG_SPLITS = (60.0, 120.0, *EARLIER_SPLITS)
#: What choosing the best of the splits costs a row's strength (the largest of a few
#: correlated tests overstates each by about this much on the standard-normal scale).
SPLIT_PENALTY = 0.5


def best_of_splits(
    rows: list[pd.DataFrame], min_score: float, keys: tuple[str, ...]
) -> pd.DataFrame:
    """Per anomaly (``keys``), its strongest reading over the splits tried.

    ``rows[0]`` is at the baseline's end; the rest, at earlier splits, lose
    :data:`SPLIT_PENALTY` and must still reach ``min_score``.
    """
    frames = [r for r in rows[:1] if not r.empty]
    for r in rows[1:]:
        if r.empty:
            continue
        r = r.assign(score=r["score"].astype(float) - SPLIT_PENALTY)
        frames.append(r[r["score"] >= min_score])
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values("score", ascending=False, kind="stable")
    present = [k for k in keys if k in out.columns]
    return out.drop_duplicates(present).sort_index().reset_index(drop=True)


def first_event(
    onset: Floats, codes: npt.NDArray[np.int64], t: Floats, hit: npt.NDArray[np.bool_]
) -> Floats:
    """Each group's onset moved from its bucket's start to its first event of interest.

    :func:`cusum_onset` dates a change to a bucket, whose start can lie a whole
    width before anything happened; onsets of spans and logs are compared with
    each other's and with metrics', so each is the time of the first event of
    interest (``hit``) of its group (``codes``, index into ``onset``; ``-1`` is
    no group) at or after the bucket's start.
    """
    out = np.array(onset, dtype=np.float64, copy=True)
    keep = hit & (codes >= 0)
    cs, ts = codes[keep], t[keep]
    keep = ts >= out[cs]
    if keep.any():
        firsts = np.full(len(out), np.inf)
        np.minimum.at(firsts, cs[keep], ts[keep])
        found = np.isfinite(firsts)
        out[found] = firsts[found]
    return out


def format_share(k: object, n: object) -> str:
    """``12 of 140`` with counts as integers.

    Takes ``object`` because the counts often come from a pandas row, whose fields
    the stubs cannot type; anything but a real number is refused.
    """
    return f"{_whole(k)} of {_whole(n)}"


def _whole(x: object) -> int:
    """A real number rounded to an integer; ``TypeError`` for anything else."""
    if isinstance(x, int | float | np.integer | np.floating):
        return round(x)
    raise TypeError(f"not a count: {x!r}")
