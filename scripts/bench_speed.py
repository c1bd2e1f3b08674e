"""Speed and memory of one investigation at 10, 50, 100 and 1000 services.

Each size runs in a fresh process: a bundle is generated, then the engine
investigates its alert twice (the first run warms imports and the bundle's
parse cache, as a long-running service would have); the second run's stage
timings and the process's peak RSS are reported into the ``## Speed`` section
of BENCHMARKS.md. Targets: 50 services < 1 s of stages, 1000 services < 15 s
and < 2 GiB.

    python scripts/bench_speed.py [--sizes 10,50,100,1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("window", "collect", "detect", "topology", "patterns", "rank")


def one(services: int, seed: int) -> dict[str, float]:
    """Generate and investigate one bundle in this process; timings and peak RSS."""
    from evallib import generate, investigate_bundle

    with tempfile.TemporaryDirectory(prefix="corr-speed-") as tmp:
        t = time.perf_counter()
        path = generate(seed, services, "deployment", Path(tmp) / "b")
        gen = time.perf_counter() - t
        t = time.perf_counter()
        investigate_bundle(path, top_n=5)  # cold: reads and parses the bundle files
        cold = time.perf_counter() - t
        inv, _ = investigate_bundle(path, top_n=5)
    out = {k: float(inv.timings.get(k, 0.0)) for k in STAGES}
    out["stages"] = sum(out[k] for k in STAGES)
    out["cold"] = cold
    out["generate"] = gen
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["series_rows"] = float(len(inv.telemetry.signals))
    return out


def main() -> int:
    """Run every size in its own process and write the section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,50,100,1000")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, 7000 + args.one)))
        return 0
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((n, r))
        print(n, r, flush=True)
    lines = [
        "One investigation of a generated `deployment` bundle per size, in a fresh process; "
        "the engine's stage timings (seconds) of a warm run (bundle files already parsed), "
        "the cold first run (reading and parsing the bundle included), and the process's "
        "peak resident memory.",
        "",
        "| services | signal rows | " + " | ".join(STAGES) + " | stages | cold run | peak RSS |",
        "|---|---|" + "---|" * (len(STAGES) + 3),
    ]
    for n, r in rows:
        cells = " | ".join(f"{r[k]:.3f}" for k in STAGES)
        lines.append(
            f"| {n} | {r['series_rows']:.0f} | {cells} | **{r['stages']:.2f}** | {r['cold']:.2f} | "
            f"{r['peak_rss_mib']:.0f} MiB |"
        )
    lines += ["", "Targets: 50 services < 1 s (stages); 1000 services < 15 s and < 2 GiB."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        from benchlib import write_section

        write_section("Speed", body, "scripts/bench_speed.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
