"""Labeled bundles on disk (PetShop, a recorded or generated suite) as calibration cases.

``cases(folder)`` investigates every bundle of a folder that has a ``truth`` and
labels each candidate finding right or wrong with the project's scoring rule
(:func:`correlator.model.cause_matches`), as ``evallib.run_case`` does for
scenarios generated on the fly. ``fit_calibration.py --bundles`` adds them to
the fit; ``calibration_cv.py`` checks the fit on folds it did not see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("CORRELATOR_CACHE_DIR", "")


@dataclass
class LabeledCase:
    """One investigated bundle: its candidates' features, labels and answer keys."""

    name: str
    group: str
    truth_service: str
    truth_cause: str
    ranked: list[tuple[str, str, float]]
    features: list[dict[str, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)


def group_of(name: str) -> str:
    """The fold a bundle belongs to: its name without the trailing case number
    (``petshop-low-traffic-test-3`` -> ``petshop-low-traffic``)."""
    parts = name.split("-")
    while parts and (parts[-1].isdigit() or parts[-1] in ("test", "train")):
        parts.pop()
    return "-".join(parts) or name


def run_bundle(path: Path, top_n: int = 20) -> LabeledCase | None:
    """Investigate one labeled bundle; ``None`` when it has no truth."""
    from correlator.adapters.bundle import BundleBackend

    from correlator.api import investigate
    from correlator.calibration import FEATURES
    from correlator.config import Settings
    from correlator.model import cause_matches

    bundle = BundleBackend(path).bundles()[0]
    truth = bundle.truth or {}
    if not truth.get("service"):
        return None
    alert = bundle.alerts[0]
    inv = investigate(
        alert,
        source=path,
        config=Settings(top_n=top_n, source_timeout=600, deadline=1200),
    )
    case = LabeledCase(
        bundle.path.name,
        group_of(bundle.path.name),
        str(truth["service"]),
        str(truth.get("cause", "unknown")),
        [(f.service, f.cause, f.confidence) for f in inv.findings],
    )
    for f in inv.findings:
        case.features.append({k: float(f.features.get(k, 0.0)) for k in FEATURES})
        right = f.service == case.truth_service and cause_matches(f.cause, case.truth_cause)
        case.labels.append(int(right))
        case.keys.append((f.service, f.cause))
    return case


def cases(folder: Path, jobs: int = 1) -> list[LabeledCase]:
    """Every labeled bundle under ``folder`` (a bundle folder or a folder of them)."""
    from concurrent.futures import ProcessPoolExecutor

    paths = sorted(p.parent for p in folder.glob("*/scenario.json")) or [folder]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        out = list(pool.map(run_bundle, paths))
    return [c for c in out if c is not None]
