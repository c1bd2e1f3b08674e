"""Uncatalogued counters summed over a service's pods: a pod arriving or leaving is no rate.

The generic path sums each service's raw series and takes the increase of the
sum (see :mod:`correlator.generic`). A pod whose counter arrives in the sum
already large (a new target, scrapes that resume) would read as the service's
counter rising hundreds of times for a rate range; the range is left without
a point instead, in the bundle backend and, through the same selector's
``count by``, against a real Prometheus.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from correlator.adapters.bundle import BundleBackend
from correlator.adapters.prometheus import PrometheusAdapter

from correlator import generic, lab
from correlator.bundle import write_bundle
from correlator.catalog import default_catalog
from correlator.http import HttpSettings
from correlator.model import Window
from correlator.openmetrics import Family, render
from test_bundle_backend import T0, N, scenario

WINDOW = Window(start=T0 + 3600, end=T0 + 7200, baseline_start=T0)
NAME = "jobs_processed_total"
ARRIVES = 300  # the second pod's first sample (at 15 s per sample)


def _families() -> list[Family]:
    """One job per second on each pod; the second pod's counter arrives at 50 000."""
    samples = []
    for pod, first, offset in (
        ("worker-5c4b3a2f1e-aaaaa", 0, 1_000.0),
        ("worker-7d9f8b6c5d-bbbbb", ARRIVES, 50_000.0),
    ):
        for i in range(first, N):
            samples.append((NAME, {"pod": pod}, T0 + 15 * i, offset + 15.0 * (i - first)))
    return [Family(NAME.removesuffix("_total"), "counter", tuple(samples))]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    write_bundle(tmp_path / "pods", scenario(), render(_families()))
    return tmp_path / "pods"


def _rate(frame: pd.DataFrame) -> pd.Series:
    rows = frame[(frame["role"] == "series") & (frame["detail"] == NAME)]
    assert set(rows["service"]) == {"worker"}
    return rows.set_index("ts")["value"].astype(float).sort_index()


def _check(rate: pd.Series) -> None:
    arrived = T0 + 15 * ARRIVES
    before, after = rate[rate.index < arrived], rate[rate.index >= arrived + 600]
    # One pod, then two: one job per second each, and nothing in between reads higher.
    assert before.median() == pytest.approx(1.0) and after.median() == pytest.approx(2.0)
    assert rate.max() <= 2.0 + 1e-9
    # The rate range the second pod arrived in has no point, not a 50 000-job burst.
    assert rate[(rate.index >= arrived) & (rate.index < arrived + 120)].empty


def test_a_pod_arriving_with_its_counter_is_no_rise_in_the_bundle(bundle: Path) -> None:
    _check(_rate(BundleBackend(bundle).signals(default_catalog(), WINDOW, 60).frame))


@pytest.mark.prometheus
def test_a_pod_arriving_with_its_counter_is_no_rise_in_prometheus(bundle: Path) -> None:
    if not Path(lab.PROMETHEUS_BIN).exists():
        pytest.skip(f"{lab.PROMETHEUS_BIN} missing (apt-get install -y prometheus)")
    with lab.prometheus(bundle) as server, httpx.Client() as client:
        # (the sample interval given: no series here tells Prometheus' probe for it)
        adapter = PrometheusAdapter(
            HttpSettings(name="prometheus", url=server.url), client, interval=15.0
        )
        rate = _rate(adapter.signals(default_catalog(), WINDOW, 60).frame)
    _check(rate)
    # Point for point what the bundle backend reads (the first minutes of data aside,
    # where the two start their first ranges differently).
    same = _rate(BundleBackend(bundle).signals(default_catalog(), WINDOW, 60).frame)
    late = same[same.index >= T0 + 600]
    pd.testing.assert_series_equal(rate[rate.index >= T0 + 600], late, check_names=False)


def test_derive_leaves_out_a_range_whose_members_changed() -> None:
    # 1/s on one series; a second arrives at index 6 with 5000 on its counter, both 1/s.
    one = 10.0 * np.arange(12)
    two = np.where(np.arange(12) >= 6, 5000.0 + 10.0 * (np.arange(12) - 6), 0.0)
    sums = (one + two)[None, :]
    members = np.where(np.arange(12) >= 6, 2.0, 1.0)[None, :]
    keys: list[tuple[str, str, str, str, generic.Part]] = [(NAME, "worker", "", "", "counter")]
    _, without = generic.derive(keys, sums, 10.0, 10.0)  # a 40 s range: 4 points
    _, counted = generic.derive(keys, sums, 10.0, 10.0, members)
    assert np.nanmax(without) > 100  # the arrival read as a burst
    assert np.isnan(counted[0, 6:10]).all()
    assert counted[0, 4:6] == pytest.approx(1.0) and counted[0, 10:] == pytest.approx(2.0)
    # Not known (NaN) is no reason to drop a point.
    _, unknown = generic.derive(keys, sums, 10.0, 10.0, np.full_like(sums, np.nan))
    np.testing.assert_array_equal(np.isnan(unknown), np.isnan(without))
