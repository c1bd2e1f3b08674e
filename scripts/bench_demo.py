"""Demo incidents: the engine and the z-score baseline on bundles recorded from the live demo.

Runs the engine over every bundle in a folder (default ``fixtures/demo``,
written by ``correlator demo record``) with :func:`bench_real.run_one` (the
engine on each bundle's first alert, as a user would, beside the rankers of
``scripts/baselines.py``), then scores:

- AC@1/AC@3: share of incidents whose true root service is among the first k
  distinct services of a ranking (engine, naive z-score, random);
- cause accuracy: the engine's top finding names the true service *and* the
  true cause (the demo's causes are all engine cause names);
- calibration of the top finding against that rule: ECE over 10 bins and a
  reliability table;
- the same per fault kind (``truth.kind``).

Writes the ``## Demo incidents (live recordings)`` section of BENCHMARKS.md
(``--no-write`` to skip); ``--verbose`` prints one row per incident.

    python scripts/bench_demo.py [FOLDER] [--jobs 1] [--verbose] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench_real import Case, _as_k, _rel, _row, ece, run_one  # noqa: E402

DEFAULT = ROOT / "fixtures" / "demo"
SECTION = "Demo incidents (live recordings)"


def _kind(path: Path) -> str:
    truth = json.loads((path / "scenario.json").read_text()).get("truth") or {}
    return str(truth.get("kind") or truth.get("cause") or "?")


def _cause_right(c: Case) -> bool:
    top = c.top
    return top is not None and (top[0], top[1]) == (c.truth_service, c.truth_cause)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def report(cases: list[Case], kinds: dict[str, str], sizes: dict[str, int], seconds: float,
           folder: Path) -> str:  # fmt: skip
    """The markdown section."""
    n = len(cases)
    engine_s = sum(c.seconds for c in cases)
    services = {c.truth_service for c in cases}
    size = np.array(list(sizes.values()), dtype=float)
    conf = np.array([c.top[2] if c.top else 0.0 for c in cases])
    right = np.array([_cause_right(c) for c in cases], dtype=float)
    e, rows = ece(conf, right)
    lines = [
        f"{n} incidents recorded from the live demo shop (`correlator demo record`, "
        f"`{_rel(folder)}`): {len(set(kinds.values()))} fault kinds on {len(services)} services, "
        "real OpenTelemetry SDK spans and logs, metrics read back from Prometheus, the real "
        f"Alertmanager alert. Bundles: median {np.median(size) / 1024:.0f} KiB, largest "
        f"{size.max() / 1024:.0f} KiB. Ran in {seconds:.0f} s wall ({engine_s:.0f} s in the "
        f"engine, {engine_s / max(n, 1):.2f} s per incident).",
        "",
        "| method | AC@1 | AC@3 |",
        "|---|---|---|",
        f"| correlator (engine) | {_as_k(cases, 'engine', 1):.3f} | "
        f"{_as_k(cases, 'engine', 3):.3f} |",
        f"| naive z-score (`scripts/baselines.py`) | {_as_k(cases, 'zscore', 1):.3f} | "
        f"{_as_k(cases, 'zscore', 3):.3f} |",
        f"| random (expected) | {_as_k(cases, 'random', 1):.3f} | "
        f"{_as_k(cases, 'random', 3):.3f} |",
        "",
        f"Top finding names the true service and cause: {right.mean():.3f}; "
        f"ECE (10 bins) against that: {e:.3f}; incidents with no finding: "
        f"{sum(1 for c in cases if not c.findings)}; engine errors: "
        f"{sum(1 for c in cases if c.error)}. Target (issue #15): AC@1 >= 0.90, "
        "ECE <= 0.08.",
        "",
        "By fault kind (engine AC@1 / z-score AC@1 / cause right):",
        "",
        "| kind | n | engine AC@1 | z-score AC@1 | cause right |",
        "|---|---|---|---|---|",
    ]
    by_kind: dict[str, list[Case]] = {}
    for c in cases:
        by_kind.setdefault(kinds[c.name], []).append(c)
    for kind in sorted(by_kind):
        cc = by_kind[kind]
        lines.append(
            f"| {kind} | {len(cc)} | {_as_k(cc, 'engine', 1):.2f} | "
            f"{_as_k(cc, 'zscore', 1):.2f} | {np.mean([_cause_right(c) for c in cc]):.2f} |"
        )
    lines += [
        "",
        "| confidence | n | mean confidence | right |",
        "|---|---|---|---|",
        *rows,
        "",
        "Per incident (truth; engine's top 3):",
        "",
        "| incident | truth | top 3 |",
        "|---|---|---|",
    ]
    for c in cases:
        top3 = "; ".join(f"{s}/{k} {p:.2f}" for s, k, p in c.findings[:3]) or c.error or "-"
        lines.append(f"| {c.name} | {c.truth_service}/{c.truth_cause} | {top3} |")
    lines += ["", "Rerun: `python scripts/bench_demo.py --verbose`."]
    return "\n".join(lines)


def main() -> int:
    """Run every bundle, print the figures, write the section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, nargs="?", default=DEFAULT)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="one row per incident")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args()
    from correlator.bundle import find_bundles
    from correlator.errors import CorrelatorError

    try:
        paths = find_bundles(args.folder) if args.folder.exists() else []
    except CorrelatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not paths:
        print(
            f"error: no bundles in {args.folder}; record some with "
            "`correlator demo up` then `correlator demo record KIND --service S`",
            file=sys.stderr,
        )
        return 2
    t0 = time.time()
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            cases = list(pool.map(run_one, paths))
    else:
        cases = [run_one(p) for p in paths]
    seconds = time.time() - t0
    kinds = {p.name: _kind(p) for p in paths}
    sizes = {p.name: _size(p) for p in paths}
    if args.verbose:
        for c in cases:
            print(_row(c), f" {sizes[c.name] / 1024:.0f} KiB")
        print()
    body = report(cases, kinds, sizes, seconds, args.folder)
    print(body)
    if not args.no_write:
        from benchlib import write_section

        write_section(SECTION, body, "scripts/bench_demo.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
