"""The count statistics of the span and log detectors, against scipy's reference."""

from __future__ import annotations

import numpy as np
from correlator.detectors._stats import hypergeom_log_sf, rank_score
from scipy.stats import hypergeom


def test_hypergeometric_tail_matches_scipy() -> None:
    rng = np.random.default_rng(7)
    n = rng.integers(1, 2000, 3000).astype(float)
    n0 = rng.integers(1, 2000, 3000).astype(float)
    k = np.minimum(n, rng.integers(0, 150, 3000)).astype(float)
    k0 = np.minimum(n0, rng.integers(0, 150, 3000)).astype(float)
    want = hypergeom.logsf(k - 1, n + n0, k + k0, n)
    got = hypergeom_log_sf(k, n + n0, k + k0, n)
    finite = np.isfinite(want) & (want > -690)
    assert finite.sum() > 2500
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-8, atol=1e-9)
    # Edges: certain (k at the support's low end), impossible, and all-in-window.
    cases = [(0, 10, 3, 5), (3, 6, 5, 5), (6, 10, 5, 5), (120, 125, 120, 120)]
    for kk, total, hits, draws in cases:
        got1 = hypergeom_log_sf(np.array([kk]), np.array([total]), np.array([hits]), draws)
        np.testing.assert_allclose(got1, hypergeom.logsf(kk - 1, total, hits, draws), atol=1e-9)


def test_rank_score_all_window_values_above_every_baseline_value() -> None:
    # 50 of 50 window values above a quantile that 1 of 27 baseline values exceeds.
    strong, none = rank_score([50, 2], [50, 50], [1, 1], [27, 27])
    assert strong > 6.0
    assert none == 0.0


def test_one_stray_event_before_a_change_does_not_date_it() -> None:
    from correlator.detectors._stats import cusum_onset

    # Buckets of 20 calls; errors were 1 in 200 before. One stray error in bucket 3, then
    # from bucket 10 on, 8 errors a bucket.
    n = np.full((2, 20), 20.0)
    k = np.zeros((2, 20))
    k[:, 10:] = 8.0
    k[0, 3] = 1.0
    onset, end = cusum_onset(k, n, np.array([0.005, 0.005]))
    assert list(onset) == [10, 10] and list(end) == [19, 19]
    # Two errors in a row before it are a start of their own.
    k[0, 3:5] = 2.0
    onset, _ = cusum_onset(k, n, np.array([0.005, 0.005]))
    assert onset[0] == 3 and onset[1] == 10


def test_a_trickle_at_about_the_usual_rate_does_not_date_a_burst() -> None:
    from correlator.detectors._stats import cusum_onset

    # Buckets of 20 calls, errors 1 in 200 before: 0.1 a bucket expected. A trickle of one
    # error every fifth bucket (a little more than usual, nothing unlikely over its
    # length), then from bucket 30 on, 8 errors a bucket: the burst is the change.
    n = np.full((1, 40), 20.0)
    k = np.zeros((1, 40))
    k[0, 2:30:5] = 1.0
    k[0, 30:] = 8.0
    onset, end = cusum_onset(k, n, np.array([0.005]))
    assert onset[0] == 30 and end[0] == 39
    # A trickle well above the usual rate (an error in every other bucket) is where a
    # sparse change began.
    k[0, 2:30:2] = 1.0
    onset, _ = cusum_onset(k, n, np.array([0.005]))
    assert onset[0] == 2
