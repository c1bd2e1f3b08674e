"""Parity: every shipped bundle gives the same top finding through a real Prometheus.

For each bundle in the shipped library, its ``metrics.om`` is backfilled into a
real Prometheus 2.42 (``promtool tsdb create-blocks-from openmetrics``) and the
bundle's alerts are investigated twice:

* with the bundle backend alone (the embedded default), and
* with metrics from :class:`~correlator.adapters.prometheus.PrometheusAdapter`
  and logs, traces and topology still from the bundle (Loki and Tempo cannot
  run here).

The top finding's (service, cause) must be the same. The signal frames are
also compared point by point, so a divergence between the PromQL the adapter
sends and what the bundle backend computes in pandas
(``adapters/bundle.py: evaluate_spec``) shows up as the role and service that
differ, not only as a changed ranking.

One difference is known and tolerated: an instant (gauge/info) value whose
newest sample is exactly 5 minutes old. Prometheus 2.42 still returns it (its
lookback window is closed on the left; 3.x made it open); the bundle backend
does not. Such points may exist in Prometheus only; everything else must match.

Each bundle gets its own Prometheus, started and stopped around its test:
several shipped bundles share a day, and an investigation's one-hour
baseline would reach into another bundle's data in a shared TSDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from correlator.adapters.bundle import BundleBackend, default_library
from correlator.adapters.prometheus import PrometheusAdapter

from correlator import lab
from correlator.bundle import find_bundles
from correlator.catalog import default_catalog
from correlator.config import Settings
from correlator.engine import investigate
from correlator.model import Investigation
from correlator.sources import Sources

pytestmark = pytest.mark.prometheus

BUNDLES = find_bundles(default_library())
KEYS = ["role", "service", "peer", "pod", "node", "zone", "version", "detail", "ts"]


def test_the_library_ships_enough_bundles_to_compare() -> None:
    assert len(BUNDLES) >= 16, f"expected >= 16 shipped bundles, found {len(BUNDLES)}"


@pytest.fixture
def prometheus_for(bundle: Path) -> Iterator[lab.Server]:
    """A Prometheus holding only this test's bundle; stopped when the test ends."""
    if not Path(lab.PROMETHEUS_BIN).exists():
        pytest.skip(f"{lab.PROMETHEUS_BIN} missing (apt-get install -y prometheus)")
    with lab.prometheus(bundle) as server:
        yield server


def _top(inv: Investigation) -> tuple[str, str] | None:
    return (inv.findings[0].service, inv.findings[0].cause) if inv.findings else None


def _listing(inv: Investigation) -> str:
    return ", ".join(f"{f.service}/{f.cause} {f.confidence:.2f}" for f in inv.findings[:5])


def _instant_roles() -> set[str]:
    """Roles with a gauge or info alternative (evaluated with the lookback)."""
    return {s.role for s in default_catalog().all_specs() if s.kind in ("gauge", "info")}


def _signal_differences(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """Roles/services whose points exist on one side only or whose values differ.

    Points only in Prometheus are allowed for instant roles (the lookback
    boundary, see the module docstring).
    """
    instant = _instant_roles()
    blank = {c: "" for c in KEYS[2:-1]}
    merged = a.fillna(blank).merge(
        b.fillna(blank), on=KEYS, how="outer", suffixes=("_bundle", "_prom"), indicator=True
    )
    out: list[str] = []
    for (role, service), g in merged.groupby(["role", "service"]):
        only_bundle = int((g["_merge"] == "left_only").sum())
        only_prom = int((g["_merge"] == "right_only").sum())
        both = g[g["_merge"] == "both"]
        close = np.isclose(both["value_bundle"], both["value_prom"], rtol=1e-6, atol=1e-9)
        if role in instant:
            only_prom = 0
        if only_bundle or only_prom or not close.all():
            out.append(
                f"{role}/{service}: {only_bundle} points only in the bundle, {only_prom} only "
                f"in Prometheus, {int((~close).sum())} of {len(both)} values differ"
            )
    return out


@pytest.mark.parametrize("bundle", BUNDLES, ids=[p.name for p in BUNDLES])
def test_top_finding_is_the_same_through_prometheus(
    bundle: Path, prometheus_for: lab.Server
) -> None:
    settings = Settings()
    catalog = default_catalog()
    backend = BundleBackend(bundle)
    alerts = backend.alerts()
    assert alerts, "a shipped bundle has at least one alert"
    prom = PrometheusAdapter(prometheus_for.url)
    try:
        for alert in alerts:
            bound = backend.bind(alert)
            by_bundle = investigate(alert, Sources.from_backends(bound), settings, catalog)
            through_prom = investigate(
                alert,
                Sources(
                    metrics=[prom], logs=[bound], traces=[bound], topology=[bound], alerts=[bound]
                ),
                settings,
                catalog,
            )
            where = f"{alert.name} ({alert.fingerprint})"
            assert through_prom.gaps == [], f"{where}: {through_prom.gaps}"
            assert len(through_prom.telemetry.signals) > 0
            differences = _signal_differences(
                by_bundle.telemetry.signals, through_prom.telemetry.signals
            )
            assert not differences, f"{where}: signals differ:\n" + "\n".join(differences[:20])
            assert _top(by_bundle) is not None, f"{where}: no finding from the bundle backend"
            assert _top(through_prom) == _top(by_bundle), (
                f"{where}: bundle: {_listing(by_bundle)}; Prometheus: {_listing(through_prom)}"
            )
    finally:
        prom.close()
