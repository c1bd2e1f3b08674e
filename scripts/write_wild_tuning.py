"""Write the wild tuning scenarios (seeds 9500+) as bundles, for ``fit_calibration.py``.

    python scripts/write_wild_tuning.py /tmp/wild-tune          # 100 bundles, ~2.5 GB
    python scripts/fit_calibration.py --bundles /tmp/wild-tune ...

The same scenarios ``bench_accuracy.py --wild --tune`` draws (``evallib.wild_plan``),
one bundle each (``w<seed>``); never the held-out seeds.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evallib import wild_plan

TUNE_SEED = 9500


def _write(args: tuple[int, int, str, str, Path]) -> str:
    from correlator.generator.api import generate, write

    seed, services, cause, mode, out = args
    scen = generate(seed, services=services, cause=cause, mode=mode or None, wild=True)
    return str(write(scen, out / f"w{seed}"))


def main() -> int:
    """Generate and write."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [(*p, args.out) for p in wild_plan(TUNE_SEED, args.n)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for path in pool.map(_write, todo):
            print(path, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
