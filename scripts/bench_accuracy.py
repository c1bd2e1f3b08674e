"""Accuracy and calibration on generated labeled scenarios (seeds 5000+).

At least 15 scenarios per built-in cause plus out-of-pattern faults
(cpu_contention, network_delay, code_exception), 10 to 300 services. Reports
root-service accuracy (top 1, top 3), cause accuracy at top 1 on the six,
expected calibration error with a reliability table, and a per-cause table,
into the ``## Accuracy`` section of BENCHMARKS.md, with the naive z-score
ranker's top 1 and top 3 beside the engine's (``evallib.zscore_ranking``).

    python scripts/bench_accuracy.py [--per-cause 17] [--extra 10] [--jobs 2]
    python scripts/bench_accuracy.py --cache /tmp/acc-cache   # collect once, rerun fast

``--dev`` scores the tuning set (seeds 8000+) instead, without writing the
section: tune on it, and report on the held-out 5000+ seeds. ``--big-dev``
is a second tuning set of large systems only (seeds 8500+, 120 to 300
services).

``--wild`` runs the wild generated suite instead (conventions, noise and
single-modality faults drawn per seed; see ``correlator.generator.wild``) and
writes the ``## Wild generated suite`` section: root-service AC@1/AC@3, cause
top 1, ECE, the engine given only metrics, only traces or only logs (each
scored on the faults that modality can see, ``truth.visible_in``), and the
naive z-score ranker beside it. Its held-out seeds are 6000-6199 (reported,
never tuned on); ``--wild --tune`` scores the tuning block (9500+) without
writing, and ``--first-seed`` picks another tuning block (never 6000-6199).

    python scripts/bench_accuracy.py --wild [--n 100] [--jobs 2]
    python scripts/bench_accuracy.py --wild --tune          # tune here
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evallib import BUILTIN, MODALITIES, Case, WildCase, plan, run_case, run_wild_case, wild_plan

FIRST_SEED = 5000
DEV_SEED = 8000
BIG_DEV_SEED = 8500
BIG_SIZES = (120, 200, 300)
WILD_HELD_OUT = (6000, 6199)
WILD_TUNE_SEED = 9500


def _run(args: tuple[int, int, str, Path | None]) -> Case:
    seed, services, cause, cache = args
    return run_case(seed, services, cause, top_n=5, cache=cache, zscore=True)


def ece(conf: np.ndarray, right: np.ndarray, bins: int = 10) -> tuple[float, list[str]]:
    """Expected calibration error of top-1 confidences, and reliability-table rows."""
    edges = np.linspace(0, 1, bins + 1)
    total, rows = 0.0, []
    for lo, hi in itertools.pairwise(edges):
        m = (conf >= lo) & ((conf < hi) if hi < 1 else (conf <= hi))
        if not m.any():
            continue
        gap = abs(conf[m].mean() - right[m].mean())
        total += m.mean() * gap
        rows.append(
            f"| {lo:.1f}-{hi:.1f} | {m.sum()} | {conf[m].mean():.2f} | {right[m].mean():.2f} |"
        )
    return float(total), rows


def report(cases: list[Case], seconds: float, misses: int = 25) -> tuple[str, dict[str, float]]:
    """The markdown section and the headline figures."""
    top1 = np.array([c.service_rank() == 1 for c in cases])
    top3 = np.array([(c.service_rank() or 99) <= 3 for c in cases])
    six = [c for c in cases if c.cause in BUILTIN]
    cause1 = np.array([bool(c.ranked) and c.ranked[0][1] == c.cause for c in six])
    both = np.array([bool(c.ranked) and c.right(c.ranked[0][0], c.ranked[0][1]) for c in cases])
    conf = np.array([c.ranked[0][2] if c.ranked else 0.0 for c in cases])
    e, rel = ece(conf, both.astype(float))
    figs = {
        "service_top1": top1.mean(),
        "service_top3": top3.mean(),
        "cause_top1_six": cause1.mean(),
        "ece": e,
        "right_top1": both.mean(),
    }
    sizes = sorted({c.services for c in cases})
    lines = [
        f"{len(cases)} generated scenarios (seeds {min(c.seed for c in cases)}-"
        f"{max(c.seed for c in cases)}; {min(sizes)} to {max(sizes)} services), "
        f"investigated in {seconds:.0f}s wall.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| root service, top 1 | {figs['service_top1']:.3f} | >= 0.90 |",
        f"| root service, top 3 | {figs['service_top3']:.3f} | >= 0.97 |",
        f"| cause, top 1 (six built-in causes) | {figs['cause_top1_six']:.3f} | >= 0.90 |",
        f"| service and cause both right, top 1 | {figs['right_top1']:.3f} | |",
        f"| expected calibration error (top 1, 10 bins) | {figs['ece']:.3f} | <= 0.08 |",
    ]
    scored = [c for c in cases if c.zscore is not None]
    if scored:
        zr = [_rank(c.zscore or [], c.truth_service) for c in scored]
        lines += [
            f"| z-score baseline (beside it): root service, top 1 | {_at(zr, 1):.3f} | |",
            f"| z-score baseline (beside it): root service, top 3 | {_at(zr, 3):.3f} | |",
        ]
    lines += [
        "",
        "Per cause (out-of-pattern faults count as right with cause `unknown` or their own word):",
        "",
        "| cause | n | service top 1 | service top 3 | right top 1 | mean confidence |",
        "|---|---|---|---|---|---|",
    ]
    for cause in sorted({c.cause for c in cases}, key=lambda x: (x not in BUILTIN, x)):
        cc = [c for c in cases if c.cause == cause]
        idx = [i for i, c in enumerate(cases) if c.cause == cause]
        lines.append(
            f"| {cause} | {len(cc)} | {top1[idx].mean():.2f} | {top3[idx].mean():.2f} | "
            f"{both[idx].mean():.2f} | {conf[idx].mean():.2f} |"
        )
    lines += [
        "",
        "Reliability (top finding's confidence vs how often it was right):",
        "",
        "| confidence | n | mean confidence | right |",
        "|---|---|---|---|",
        *rel,
    ]
    wrong = [c for c in cases if not (c.ranked and c.right(c.ranked[0][0], c.ranked[0][1]))]
    if wrong:
        lines += ["", "Misses (seed, services, truth -> top finding):", ""]
        for c in wrong[:misses]:
            got = (
                ", ".join(f"{s}/{k} {p:.2f}" for s, k, p in c.ranked[: 3 if misses > 25 else 1])
                if c.ranked
                else "nothing"
            )
            lines.append(f"- {c.seed} ({c.services}): {c.truth_service}/{c.cause} -> {got}")
    return "\n".join(lines), figs


def main() -> int:
    """Generate, investigate, judge, write the section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-cause", type=int, default=17)
    ap.add_argument("--extra", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--max-services", type=int, default=300)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--cache", type=Path, help="keep collected telemetry here and reuse it")
    ap.add_argument("--dev", action="store_true", help="the tuning seeds (8000+); no write")
    ap.add_argument("--only", default="", help="comma-separated causes to run")
    ap.add_argument(
        "--first-seed",
        type=int,
        help="a tuning set at these seeds (9000+ are free; never 5000+); no write",
    )
    ap.add_argument(
        "--big-dev",
        action="store_true",
        help="the large-system tuning seeds (8500+, 120 to 300 services); no write",
    )
    ap.add_argument("--wild", action="store_true", help="the wild generated suite")
    ap.add_argument("--tune", action="store_true", help="with --wild: the tuning seeds (9500+)")
    ap.add_argument("--n", type=int, default=100, help="with --wild: number of scenarios")
    args = ap.parse_args()
    if args.wild:
        return wild_main(ap, args)
    first = BIG_DEV_SEED if args.big_dev else DEV_SEED if args.dev else FIRST_SEED
    if args.first_seed is not None:
        if FIRST_SEED <= args.first_seed < DEV_SEED:
            ap.error("--first-seed: 5000-7999 is the held-out block; use 9000 or above")
        first = args.first_seed
    sizes = BIG_SIZES if args.big_dev else None
    todo = [
        (*t, args.cache)
        for t in plan(first, 0, args.per_cause, args.extra, args.max_services, sizes)
        if not args.only or t[2] in args.only.split(",")
    ]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        cases = list(pool.map(_run, todo))
    dev = args.dev or args.big_dev or args.first_seed is not None
    body, _figs = report(cases, time.time() - t0, 1000 if dev else 25)
    print(body)
    if not (args.no_write or dev or args.only):
        from benchlib import write_section

        write_section("Accuracy", body, "scripts/bench_accuracy.py")
    return 0


def _wild_run(args: tuple[int, int, str, str]) -> WildCase:
    return run_wild_case(*args)


def _rank(services: list[str], truth: str) -> int | None:
    return services.index(truth) + 1 if truth in services else None


def _at(ranks: list[int | None], k: int) -> float:
    return float(np.mean([r is not None and r <= k for r in ranks])) if ranks else float("nan")


def wild_report(cases: list[WildCase], seconds: float, jobs: int, held_out: bool = True) -> str:
    """The ``## Wild generated suite`` section (``held_out`` False: the tuning seeds)."""
    eng = [c.service_rank() for c in cases]
    zs = [c.rank_in(c.zscore) for c in cases]
    cause1 = np.array([bool(c.ranked) and c.right(c.truth_service, c.ranked[0][1]) for c in cases])
    both = np.array([bool(c.ranked) and c.right(*c.ranked[0][:2]) for c in cases])
    conf = np.array([c.ranked[0][2] if c.ranked else 0.0 for c in cases])
    e, rel = ece(conf, both.astype(float))
    sizes = sorted({c.services for c in cases})
    per_case = [sum(c.seconds.values()) for c in cases]
    lines = [
        f"{len(cases)} wild scenarios ({'held-out' if held_out else 'tuning'} seeds "
        f"{min(c.seed for c in cases)}-{max(c.seed for c in cases)}, "
        f"{'never tuned on' if held_out else 'tuned on: not a measure'}; {min(sizes)} to {max(sizes)} services), "
        f"generated, investigated whole and per modality, and ranked by the z-score baseline "
        f"in {seconds / 60:.1f} min wall with {jobs} jobs (median {np.median(per_case):.1f} s "
        f"of work per scenario; 1-minute load average at the end {os.getloadavg()[0]:.1f}, the "
        "machine is shared). Each scenario draws its conventions: scrape interval, latency "
        "as histogram or summary under OpenTelemetry (old and new), gRPC or Micrometer names, "
        "the label naming the service, cAdvisor labels and families, low traffic, 5-60 min of "
        "baseline, runtime metrics and unrelated noise.",
        "",
        "| measure | engine | z-score baseline | target |",
        "|---|---|---|---|",
        f"| root service AC@1 | {_at(eng, 1):.3f} | {_at(zs, 1):.3f} | >= 0.90 |",
        f"| root service AC@3 | {_at(eng, 3):.3f} | {_at(zs, 3):.3f} | >= 0.97 |",
        f"| cause top 1 (true service's cause, `unknown` right off the six) | {cause1.mean():.3f} | | |",
        f"| service and cause both right, top 1 | {both.mean():.3f} | | |",
        f"| expected calibration error (top 1, 10 bins) | {e:.3f} | | <= 0.08 |",
        "",
        "Ablations: the engine given one modality only (the others emptied after collection; "
        "topology edges kept), scored on the faults that modality can see (`truth.visible_in`, "
        "checked by the generator against what its own series, traces and logs carry; "
        f"{sum(not c.visible_in for c in cases)} case(s) no modality can see stay in the "
        "figures above):",
        "",
        "| only | n | AC@1 | AC@3 | target AC@1 |",
        "|---|---|---|---|---|",
    ]
    for m in MODALITIES:
        seen = [c for c in cases if m in c.visible_in]
        r = [c.service_rank(m) for c in seen]
        lines.append(f"| {m} | {len(seen)} | {_at(r, 1):.3f} | {_at(r, 3):.3f} | >= 0.80 |")
    lines += [
        "",
        "Per fault:",
        "",
        "| cause | mode | visible in | n | AC@1 | AC@3 | z-score AC@1 | z-score AC@3 | right top 1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(c.cause, c.mode) for c in cases})
    for cause, mode in keys:
        idx = [i for i, c in enumerate(cases) if (c.cause, c.mode) == (cause, mode)]
        # Per modality, how many of these cases it can see (the generator checks what its
        # own traces and logs carry: a service no kept trace reached is not visible there).
        seen = {m: sum(m in cases[i].visible_in for i in idx) for m in MODALITIES}
        vis = ", ".join(f"{m} {k}" for m, k in seen.items() if k) or "none"
        lines.append(
            f"| {cause} | {mode or '-'} | {vis} | {len(idx)} | {_at([eng[i] for i in idx], 1):.2f} | "
            f"{_at([eng[i] for i in idx], 3):.2f} | {_at([zs[i] for i in idx], 1):.2f} | "
            f"{_at([zs[i] for i in idx], 3):.2f} | {both[idx].mean():.2f} |"
        )
    for key, title in (
        ("interval", "scrape interval (s)"),
        ("latency", "latency convention"),
        ("identity", "service label"),
        ("low_traffic", "low traffic"),
    ):
        lines += [
            "",
            f"By {title}:",
            "",
            f"| {title} | n | AC@1 | z-score AC@1 |",
            "|---|---|---|---|",
        ]
        for val in sorted({str(c.conventions.get(key)) for c in cases}):
            idx = [i for i, c in enumerate(cases) if str(c.conventions.get(key)) == val]
            lines.append(
                f"| {val} | {len(idx)} | {_at([eng[i] for i in idx], 1):.2f} | "
                f"{_at([zs[i] for i in idx], 1):.2f} |"
            )
    lines += [
        "",
        "Reliability (top finding's confidence vs how often it was right):",
        "",
        "| confidence | n | mean confidence | right |",
        "|---|---|---|---|",
        *rel,
        "",
        "Rerun: `python scripts/bench_accuracy.py --wild` (held-out 6000-6199; tune with "
        "`--wild --tune`, seeds 9500+).",
    ]
    return "\n".join(lines)


def wild_main(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The wild suite: held-out seeds write the section, tuning seeds only print."""
    lo, hi = WILD_HELD_OUT
    first = lo
    if args.tune:
        first = WILD_TUNE_SEED
    if args.first_seed is not None:
        if args.first_seed <= hi and args.first_seed + args.n - 1 >= lo:
            ap.error(f"--first-seed: {lo}-{hi} is the wild held-out block; use 9500 or above")
        first = args.first_seed
    held_out = first == lo
    if held_out and args.n > hi - lo + 1:
        ap.error(f"--n: the held-out block has {hi - lo + 1} seeds")
    todo = list(wild_plan(first, args.n))
    t0 = time.time()
    cases: list[WildCase] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for case in pool.map(_wild_run, todo):
            cases.append(case)
            print(
                f"[{len(cases)}/{len(todo)} {time.time() - t0:.0f}s] {case.seed} "
                f"{case.cause}/{case.mode or '-'} rank {case.service_rank()} "
                f"z-score {case.rank_in(case.zscore)} only "
                + " ".join(
                    f"{m}={case.rank_in([s for s, _, _ in case.ablations[m]])}"
                    for m in MODALITIES
                    if m in case.visible_in
                ),
                file=sys.stderr,
                flush=True,
            )
    body = wild_report(cases, time.time() - t0, args.jobs, held_out)
    print(body)
    if held_out and not args.no_write:
        from benchlib import write_section

        write_section("Wild generated suite", body, "scripts/bench_accuracy.py --wild")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
