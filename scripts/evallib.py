"""Shared by fit_calibration.py and bench_accuracy.py: generate labeled scenarios,
investigate them, and judge every finding against the truth.

A finding is *right* when it names the true service and the true cause; for
faults outside the six built-in causes, ``unknown`` (or the truth's own word)
is the right cause.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Each generated bundle is investigated once: a parse cache would only cost write time.
os.environ.setdefault("CORRELATOR_CACHE_DIR", "")
sys.path.insert(0, str(ROOT / "scripts"))

from correlator.generator.faults import BUILTIN, EXTRA  # noqa: E402


@dataclass
class Case:
    """One investigated scenario and how the engine did."""

    seed: int
    services: int
    cause: str
    truth_service: str
    ranked: list[tuple[str, str, float]]
    features: list[dict[str, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def right(self, service: str, cause: str) -> bool:
        """Whether a (service, cause) answer is right for this case."""
        return is_right(service, cause, self.truth_service, self.cause)

    def service_rank(self) -> int | None:
        """1-based rank of the first finding naming the true service (any cause)."""
        seen: list[str] = []
        for svc, _, _ in self.ranked:
            if svc not in seen:
                seen.append(svc)
            if svc == self.truth_service:
                return len(seen)
        return None


def is_right(service: str, cause: str, truth_service: str, truth_cause: str) -> bool:
    """The scoring rule (see the module docstring)."""
    from correlator.model import cause_matches

    return service == truth_service and cause_matches(cause, truth_cause)


def generate(seed: int, services: int, cause: str, dest: Path) -> Path:
    """Write one labeled bundle with the generator; returns its folder."""
    from correlator.generator.api import generate as gen
    from correlator.generator.api import write

    return write(gen(seed, services=services, cause=cause), dest)


def _collect(path: Path) -> dict[str, Any]:
    """Read a bundle's first alert and collect its telemetry as the engine would."""
    from correlator.adapters.bundle import BundleBackend

    from correlator.catalog import default_catalog
    from correlator.config import Settings
    from correlator.engine import auto_step, collect, make_window
    from correlator.sources import Sources

    backend = BundleBackend(path)
    bundle = backend.bundles()[0]
    alert = bundle.alerts[0]
    backend = backend.bind(alert)
    settings = Settings(source_timeout=600, deadline=1200)
    catalog = bundle.merged_catalog(default_catalog())
    window = make_window(alert, settings)
    step = settings.step or auto_step(window)
    deadline = time.monotonic() + 3600.0
    telemetry, gaps = collect(Sources.from_backends(backend), catalog, window, step, 600, deadline)
    if gaps:
        raise RuntimeError(f"collect of {path} had gaps: {gaps}")
    return {
        "alert": alert,
        "window": window,
        "step": step,
        "telemetry": telemetry,
        "catalog": catalog,
        "truth": dict(bundle.truth or {}),
    }


def cache_path(cache: Path, seed: int, services: int, cause: str) -> Path:
    """Where the collected telemetry of one planned scenario is kept."""
    return cache / f"{seed}-{services}-{cause}.pkl"


def collected(seed: int, services: int, cause: str, cache: Path | None) -> dict[str, Any]:
    """The collected telemetry of a scenario: from ``cache`` when there, else generated."""
    import pickle

    if cache is not None:
        p = cache_path(cache, seed, services, cause)
        if p.exists():
            with p.open("rb") as fh:
                return dict(pickle.load(fh))
    with tempfile.TemporaryDirectory(prefix="corr-eval-") as tmp:
        data = _collect(generate(seed, services, cause, Path(tmp) / f"s{seed}"))
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        part = p.with_suffix(".part")
        with part.open("wb") as fh:
            pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
        part.replace(p)
    return data


def run_case(
    seed: int, services: int, cause: str, top_n: int = 20, cache: Path | None = None
) -> Case:
    """Generate (or load from ``cache``), investigate and judge one scenario.

    With a cache, collection happens once per scenario; the stages after it
    (detect, topology, patterns, rank) run every time, so engine changes are
    measured in seconds rather than minutes.
    """
    import os

    from correlator.calibration import FEATURES, load_calibration
    from correlator.config import Settings
    from correlator.engine import analyse

    data = collected(seed, services, cause, cache)
    truth = data["truth"]
    # EVAL_CALIBRATION: score with a calibration file other than the shipped one.
    cal_file = os.environ.get("EVAL_CALIBRATION")
    inv = analyse(
        data["alert"],
        data["window"],
        data["step"],
        data["telemetry"],
        Settings(top_n=top_n, source_timeout=600, deadline=1200),
        data["catalog"],
        load_calibration(cal_file) if cal_file else None,
    )
    case = Case(
        seed,
        services,
        str(truth.get("cause", cause)),
        str(truth.get("service", "")),
        [(f.service, f.cause, f.confidence) for f in inv.findings],
        seconds=sum(v for k, v in inv.timings.items() if k != "total"),
    )
    for f in inv.findings:
        case.features.append({k: float(f.features.get(k, 0.0)) for k in FEATURES})
        case.labels.append(int(case.right(f.service, f.cause)))
        case.keys.append((f.service, f.cause))
    return case


def plan(
    first_seed: int,
    n: int,
    per_builtin: int,
    extra: int,
    max_services: int = 300,
    sizes: tuple[int, ...] | None = None,
) -> Iterator[tuple[int, int, str]]:
    """(seed, services, cause) triples: ``per_builtin`` of each built-in cause,
    ``extra`` of each out-of-pattern one, service counts spread over ``sizes``
    (default 10..``max_services``)."""
    if sizes is None:
        sizes = tuple(x for x in (10, 20, 30, 50, 80, 120, 200, 300) if x <= max_services)
    causes = [c for c in BUILTIN for _ in range(per_builtin)] + [
        c for c in EXTRA for _ in range(extra)
    ]
    for i, cause in enumerate(causes[:n] if n else causes):
        yield first_seed + i, sizes[(i * 7 + i // len(sizes)) % len(sizes)], cause
