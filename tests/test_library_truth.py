"""Every shipped bundle investigates to its true service and cause at top 1.

The bundled library (``fixtures/scenarios``) is what a new user tries first;
each bundle's ``truth`` names the service and cause the generator put there.
For faults outside the six built-in causes the right cause is ``unknown`` (or
the truth's own word): correlator has no pattern for them and must still name
the service.
"""

from __future__ import annotations

import pytest
from correlator.adapters.bundle import BundleBackend

from correlator.catalog import default_catalog
from correlator.config import Settings
from correlator.engine import investigate
from correlator.sources import Sources

BUILTIN = {
    "deployment",
    "db_overload",
    "az_failure",
    "memory_leak",
    "dependency_failure",
    "traffic_spike",
}

LIBRARY = BundleBackend()


@pytest.mark.parametrize("bundle", LIBRARY.bundles(), ids=lambda b: b.path.name)
def test_shipped_bundle_investigates_to_its_truth(bundle) -> None:  # type: ignore[no-untyped-def]
    truth = bundle.truth or {}
    assert truth.get("service") and truth.get("cause"), f"{bundle.path} has no truth"
    alert = bundle.alerts[0]
    backend = LIBRARY.bound(alert)
    inv = investigate(
        alert,
        Sources.from_backends(backend),
        Settings(source_timeout=120, deadline=300),
        bundle.merged_catalog(default_catalog()),
    )
    assert inv.findings, f"{bundle.path.name}: no finding"
    top = inv.findings[0]
    want = truth["cause"] if truth["cause"] in BUILTIN else "unknown"
    got = (top.service, top.cause if top.cause != truth["cause"] else want)
    assert got == (truth["service"], want), (
        f"{bundle.path.name}: top finding {top.service}/{top.cause} ({top.confidence:.2f}), "
        f"truth {truth['service']}/{truth['cause']}; next: "
        + ", ".join(f"{f.service}/{f.cause} {f.confidence:.2f}" for f in inv.findings[1:3])
    )
    assert 0.0 < top.confidence <= 1.0
