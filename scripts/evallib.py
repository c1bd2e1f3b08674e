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
    zscore: list[str] | None = None
    """Services as the naive z-score ranker orders them (None: not run)."""

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
    from correlator.engine import collect, make_window, query_step
    from correlator.sources import Sources

    backend = BundleBackend(path)
    bundle = backend.bundles()[0]
    alert = bundle.alerts[0]
    backend = backend.bind(alert)
    settings = Settings(source_timeout=600, deadline=1200)
    catalog = bundle.merged_catalog(default_catalog())
    window = make_window(alert, settings, sources=Sources.from_backends(backend))
    step = query_step(Sources.from_backends(backend), window, catalog, settings)
    deadline = time.monotonic() + 3600.0
    telemetry, gaps = collect(Sources.from_backends(backend), catalog, window, step, 600, deadline)
    # A sample cut by a limit is a note, not a failure; anything else means a broken bundle.
    hard = [g for g in gaps if "limit" not in g.why]
    if hard:
        raise RuntimeError(f"collect of {path} had gaps: {hard}")
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


def collected(
    seed: int, services: int, cause: str, cache: Path | None, zscore: bool = False
) -> dict[str, Any]:
    """The collected telemetry of a scenario: from ``cache`` when there, else generated.

    With ``zscore``, the naive z-score ranking of the bundle comes along (key ``zscore``;
    a cache written without it has none).
    """
    import pickle

    if cache is not None:
        p = cache_path(cache, seed, services, cause)
        if p.exists():
            with p.open("rb") as fh:
                return dict(pickle.load(fh))
    with tempfile.TemporaryDirectory(prefix="corr-eval-") as tmp:
        path = generate(seed, services, cause, Path(tmp) / f"s{seed}")
        data = _collect(path)
        if zscore:
            data["zscore"] = [s for s, _ in zscore_ranking(path)]
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        part = p.with_suffix(".part")
        with part.open("wb") as fh:
            pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
        part.replace(p)
    return data


def run_case(
    seed: int,
    services: int,
    cause: str,
    top_n: int = 20,
    cache: Path | None = None,
    zscore: bool = False,
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

    data = collected(seed, services, cause, cache, zscore)
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
        zscore=data.get("zscore"),
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


# --- the naive z-score ranker, beside the engine in every benchmark ---------------------

_ID_LABELS = ("service", "service_name", "application", "container", "container_name")


def _series_service(labels: Any) -> str | None:
    """Which service a series names (naively: the first identity label, else the pod)."""
    from correlator.catalog import service_from_pod

    for key in _ID_LABELS:
        if labels.get(key):
            return str(labels[key])
    if labels.get("pod"):
        return str(service_from_pod(labels["pod"]))
    if labels.get("job"):
        return str(labels["job"])
    return None


def _zscore_ranking(bundle_dir: Path) -> list[tuple[str, float]]:
    """Services ranked by their most moved metric series (robust z, after vs before).

    The split is 10 minutes before the first alert fired (the first third of the
    window if that leaves fewer than 3 points before it); counters become per-second
    increases first. Histogram buckets are skipped (their _count and _sum stay).
    """
    import numpy as np

    from correlator.bundle import read_bundle

    bundle = read_bundle(bundle_dir)
    start, end = bundle.window
    split = (bundle.alerts[0].starts_at or end) - 600.0
    metrics = bundle.metrics
    best: dict[str, float] = {}
    for name, labels, ts, values in zip(
        metrics.names, metrics.labels, metrics.times, metrics.values, strict=True
    ):
        if name.endswith("_bucket") or len(ts) < 6:
            continue
        svc = _series_service(labels)
        if svc is None:
            continue
        x, t = np.asarray(values, dtype=float), np.asarray(ts, dtype=float)
        if name.endswith(("_total", "_count", "_sum")):
            dt = np.diff(t)
            x, t = np.clip(np.diff(x), 0, None) / np.where(dt > 0, dt, 1.0), t[1:]
        cut = split if (t < split).sum() >= 3 else start + (end - start) / 3
        pre, post = x[t < cut], x[t >= cut]
        if len(pre) < 3 or len(post) < 1:
            continue
        med = float(np.median(pre))
        mad = 1.4826 * float(np.median(np.abs(pre - med)))
        z = abs(float(np.median(post)) - med) / (mad + 1e-9 * abs(med) + 1e-12)
        if np.isfinite(z) and z > best.get(svc, -1.0):
            best[svc] = z
    return sorted(best.items(), key=lambda kv: -kv[1])


try:  # another helper ships the project's baseline ranker in scripts/baselines.py
    from baselines import zscore_ranking  # type: ignore[import-not-found]
except ImportError:  # until it is merged: the private one above, same signature
    zscore_ranking = _zscore_ranking


# --- the wild suite ---------------------------------------------------------------------

MODALITIES = ("metrics", "spans", "logs")


@dataclass
class WildCase:
    """One wild scenario: the engine's answer, each single-modality answer, the z-score's."""

    seed: int
    services: int
    cause: str
    mode: str
    truth_service: str
    visible_in: list[str]
    conventions: dict[str, Any]
    ranked: list[tuple[str, str, float]]
    ablations: dict[str, list[tuple[str, str, float]]]
    zscore: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    def right(self, service: str, cause: str) -> bool:
        """Service and cause both right (see :func:`is_right`)."""
        return is_right(service, cause, self.truth_service, self.cause)

    def rank_in(self, services: list[str]) -> int | None:
        """1-based rank of the true service in a list of services (first mention)."""
        seen: list[str] = []
        for svc in services:
            if svc not in seen:
                seen.append(svc)
            if svc == self.truth_service:
                return len(seen)
        return None

    def service_rank(self, which: str = "") -> int | None:
        """Rank of the true service in the engine's findings (or an ablation's)."""
        ranked = self.ablations[which] if which else self.ranked
        return self.rank_in([s for s, _, _ in ranked])


def wild_plan(first_seed: int, n: int) -> Iterator[tuple[int, int, str, str]]:
    """(seed, services, cause, mode): every wild fault in turn, 10 to 50 services."""
    from correlator.generator.wild import WILD_FAULTS

    sizes = (10, 12, 20, 30, 40, 50)
    for i in range(n):
        cause, mode = WILD_FAULTS[i % len(WILD_FAULTS)]
        yield first_seed + i, sizes[(i * 7 + i // len(sizes)) % len(sizes)], cause, mode


def _only(telemetry: Any, modality: str) -> Any:
    """The telemetry with every modality but one emptied (topology edges kept)."""
    from dataclasses import replace

    from correlator.model import LOG_COLUMNS, SIGNAL_COLUMNS, SPAN_COLUMNS, empty_frame

    return replace(
        telemetry,
        signals=telemetry.signals if modality == "metrics" else empty_frame(SIGNAL_COLUMNS),
        spans=telemetry.spans if modality == "spans" else empty_frame(SPAN_COLUMNS),
        logs=telemetry.logs if modality == "logs" else empty_frame(LOG_COLUMNS),
        log_counts=telemetry.log_counts
        if modality == "logs"
        else empty_frame(("ts", "service", "severity", "count")),
    )


def run_wild_case(seed: int, services: int, cause: str, mode: str, top_n: int = 5) -> WildCase:
    """Generate one wild scenario, investigate it whole and per modality, and rank it
    with the z-score baseline."""
    from correlator.config import Settings
    from correlator.engine import analyse
    from correlator.generator.api import generate as gen
    from correlator.generator.api import write

    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="corr-wild-") as tmp:
        scen = gen(seed, services=services, cause=cause, mode=mode or None, wild=True)
        path = write(scen, Path(tmp) / f"w{seed}")
        seconds["generate"] = time.monotonic() - t0
        t1 = time.monotonic()
        data = _collect(path)
        seconds["collect"] = time.monotonic() - t1
        t1 = time.monotonic()
        z = [s for s, _ in zscore_ranking(path)]
        seconds["zscore"] = time.monotonic() - t1
    settings = Settings(top_n=top_n, source_timeout=600, deadline=1200)

    def answer(telemetry: Any) -> list[tuple[str, str, float]]:
        inv = analyse(
            data["alert"], data["window"], data["step"], telemetry, settings, data["catalog"]
        )
        return [(f.service, f.cause, f.confidence) for f in inv.findings]

    t1 = time.monotonic()
    ranked = answer(data["telemetry"])
    seconds["investigate"] = time.monotonic() - t1
    t1 = time.monotonic()
    ablations = {m: answer(_only(data["telemetry"], m)) for m in MODALITIES}
    seconds["ablations"] = time.monotonic() - t1
    truth = data["truth"]
    return WildCase(
        seed,
        services,
        str(truth.get("cause", cause)),
        str(truth.get("mode", mode)),
        str(truth.get("service", "")),
        list(truth.get("visible_in", MODALITIES)),
        scen.conventions.to_json() if scen.conventions else {},
        ranked,
        ablations,
        z,
        seconds,
    )
