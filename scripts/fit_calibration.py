"""Refit the confidence calibration on generated scenarios (seeds 2000-4999).

Generates labeled scenarios (every built-in cause and the out-of-pattern
ones, 10 to 300 services), investigates each, labels every candidate finding
right or wrong, fits the logistic model and writes
``src/correlator/data/calibration.json``.

    python scripts/fit_calibration.py            # 180 scenarios, plus 48 large ones
    python scripts/fit_calibration.py --per-cause 8 --extra 4   # quicker
    python scripts/fit_calibration.py --cache /tmp/cal-cache     # collect once, refit fast
    python scripts/fit_calibration.py --bundles fixtures/petshop  # plus labeled bundles (real data)
    python scripts/fit_calibration.py --eval-bundles fixtures/demo --rows rows.json  # held out

Labeled bundles (``--bundles``, repeatable) join the fit with every investigation
as its own group, and each folder weighs as much in total as the largest
(``correlator.calibration.balanced_weights``: 65 real incidents beside 300 wild
ones are not an afterthought); ``scripts/calibration_cv.py`` measures the fit on folds of them
it did not see.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evallib import ROOT, plan, run_case

OUT = ROOT / "src" / "correlator" / "data" / "calibration.json"
FIRST_SEED, LAST_SEED = 2000, 4999
#: Large systems are rarer in the main plan; a second block of them (seeds 2500+).
BIG_SEED, BIG_SIZES = 2500, (120, 200, 300)


def _run(args: tuple[int, int, str, Path | None]) -> object:
    seed, services, cause, cache = args
    return run_case(seed, services, cause, cache=cache)


def main() -> int:
    """Generate, investigate, fit, write."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-cause", type=int, default=22)
    ap.add_argument("--extra", type=int, default=14)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--max-services", type=int, default=300)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cache", type=Path, help="keep collected telemetry here and reuse it")
    ap.add_argument(
        "--big-per-cause",
        type=int,
        default=6,
        help="plus this many large systems (120 to 300 services) per built-in cause",
    )
    ap.add_argument("--big-extra", type=int, default=4)
    ap.add_argument(
        "--bundles",
        type=Path,
        action="append",
        default=[],
        help="a folder of labeled bundles to fit on too (repeatable; e.g. fixtures/petshop)",
    )
    ap.add_argument(
        "--eval-bundles",
        type=Path,
        action="append",
        default=[],
        help="a folder of labeled bundles investigated for --rows only, never fitted on "
        "(repeatable; e.g. fixtures/demo: calibration_cv.py scores it as held out)",
    )
    ap.add_argument(
        "--rows", type=Path, help="also write every candidate row (features, label, group) here"
    )
    args = ap.parse_args()
    from correlator.calibration import balanced_weights, fit

    todo = [
        (*t, args.cache) for t in plan(FIRST_SEED, 0, args.per_cause, args.extra, args.max_services)
    ]
    big = plan(BIG_SEED, 0, args.big_per_cause, args.big_extra, sizes=BIG_SIZES)
    todo += [(*t, args.cache) for t in big]
    assert max(t[0] for t in todo) <= LAST_SEED, "calibration seeds must stay within 2000-4999"
    t0 = time.time()
    rows: list[dict[str, float]] = []
    labels: list[int] = []
    groups: list[int] = []
    keys: list[tuple[str, str]] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for case in pool.map(_run, todo):
            rows += case.features  # type: ignore[attr-defined]
            labels += case.labels  # type: ignore[attr-defined]
            keys += case.keys  # type: ignore[attr-defined]
            groups += [case.seed] * len(case.labels)  # type: ignore[attr-defined]
    from labeled import cases as labeled_cases

    named: list[object] = [f"gen-{g}" for g in groups]
    datasets = ["generated"] * len(labels)
    fitted = [True] * len(labels)
    for folder, fit_on in [(f, True) for f in args.bundles] + [
        (f, False) for f in args.eval_bundles
    ]:
        for lc in labeled_cases(folder, jobs=args.jobs):
            rows += lc.features
            labels += lc.labels
            keys += lc.keys
            named += [lc.name] * len(lc.labels)
            datasets += [f"{folder.name}:{lc.group}"] * len(lc.labels)
            fitted += [fit_on] * len(lc.labels)
    if args.rows:
        args.rows.write_text(
            json.dumps(
                [
                    {
                        "features": r,
                        "label": y,
                        "group": str(g),
                        "key": list(k),
                        "dataset": d,
                        "fitted": f,
                    }
                    for r, y, g, k, d, f in zip(
                        rows, labels, named, keys, datasets, fitted, strict=True
                    )
                ]
            ),
            encoding="utf-8",
        )
    use = [i for i, f in enumerate(fitted) if f]
    cal = fit(
        [rows[i] for i in use],
        [labels[i] for i in use],
        groups=[named[i] for i in use],
        keys=[keys[i] for i in use],
        weights=balanced_weights([datasets[i] for i in use], [named[i] for i in use]),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(cal.to_json(), indent=2) + "\n", encoding="utf-8")
    print(
        f"fitted on {len(use)} candidates from {len(todo)} scenarios and "
        f"{len({named[i] for i in use}) - len(todo)} bundles "
        f"({sum(labels[i] for i in use)} right) in {time.time() - t0:.0f}s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
