"""Every shipped bundle investigates to its true service and cause at top 1.

The bundled library (``fixtures/scenarios``) is what a new user tries first;
each bundle's ``truth`` names the service and cause the generator put there.
The cause must match (``correlator.model.cause_matches``: aliases count, and
``unknown`` is right for faults outside the six original causes, where naming
the service is what matters).
"""

from __future__ import annotations

import pytest
from correlator.adapters.bundle import BundleBackend

from correlator.catalog import default_catalog
from correlator.config import Settings
from correlator.engine import investigate
from correlator.model import cause_matches
from correlator.sources import Sources

LIBRARY = BundleBackend()

#: Bundles the engine does not answer right yet, and why (strict: fixing one makes the
#: test fail until it is taken off this list).
KNOWN_MISSES: dict[str, str] = {}


def _param(bundle):  # type: ignore[no-untyped-def]
    why = KNOWN_MISSES.get(bundle.path.name)
    marks = [pytest.mark.xfail(reason=why, strict=True)] if why else []
    return pytest.param(bundle, id=bundle.path.name, marks=marks)


@pytest.mark.parametrize("bundle", [_param(b) for b in LIBRARY.bundles()])
def test_shipped_bundle_investigates_to_its_truth(bundle) -> None:  # type: ignore[no-untyped-def]
    truth = bundle.truth or {}
    assert truth.get("service") and truth.get("cause"), f"{bundle.path} has no truth"
    alert = bundle.alerts[0]
    backend = LIBRARY.bind(alert)
    inv = investigate(
        alert,
        Sources.from_backends(backend),
        Settings(source_timeout=120, deadline=300),
        bundle.merged_catalog(default_catalog()),
    )
    assert inv.findings, f"{bundle.path.name}: no finding"
    top = inv.findings[0]
    assert top.service == truth["service"] and cause_matches(top.cause, truth["cause"]), (
        f"{bundle.path.name}: top finding {top.service}/{top.cause} ({top.confidence:.2f}), "
        f"truth {truth['service']}/{truth['cause']}; next: "
        + ", ".join(f"{f.service}/{f.cause} {f.confidence:.2f}" for f in inv.findings[1:3])
    )
    assert 0.0 < top.confidence <= 1.0
