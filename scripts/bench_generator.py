"""Generator speed and memory: 50, 200 and 2000 services, 2-hour windows.

Each size runs in a fresh subprocess (so peak RSS is that run's own), generating
the scenario and writing the bundle to a temporary folder. Writes the
`## Generator` section of BENCHMARKS.md.

    python scripts/bench_generator.py               # 50, 200, 2000 services
    python scripts/bench_generator.py --sizes 50 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from correlator.generator.api import generate, write
n, out, gz = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
t0 = time.perf_counter()
scen = generate(5000 + n, services=n, duration=7200, cause="db_overload", severity="high")
t1 = time.perf_counter()
path = write(scen, out / scen.name, compress=gz)
t2 = time.perf_counter()
size = sum(p.stat().st_size for p in path.iterdir())
print(json.dumps({"services": n, "generate_s": t1 - t0, "write_s": t2 - t1, "total_s": t2 - t0,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "bundle_mib": size / 2**20,
                  "traces": scen.otlp.n_traces, "spans": scen.otlp.n_spans, "gzip": gz}))
"""


def run(n: int, compress: bool) -> dict[str, float]:
    """One measured generation in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), tmp, "1" if compress else "0"],
            capture_output=True,
            text=True,
            check=True,
        )
    out: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 2000])
    parser.add_argument("--gzip", action="store_true", help="gzip the bundle files")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        row = run(n, compress=args.gzip)
        rows.append(row)
        print(json.dumps(row), flush=True)
    body = [
        "2-hour window, 15 s scrapes, cause db_overload (high), seeds 5000+N; generate = simulate +",
        "alerts + sampled traces/logs; write = format OpenMetrics and OTLP/JSON to disk (plain text",
        "unless `--gzip`). Peak RSS (`getrusage`) is the whole child process.",
        "",
        "| services | generate (s) | write (s) | total (s) | peak RSS (MiB) | bundle (MiB) | traces | spans |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        body.append(
            f"| {r['services']} | {r['generate_s']:.1f} | {r['write_s']:.1f} | {r['total_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['bundle_mib']:.1f}"
            f"{' (gz)' if r['gzip'] else ''} | {r['traces']} | {r['spans']} |"
        )
    if not args.no_write:
        from benchlib import write_section

        write_section("Generator", "\n".join(body), "scripts/bench_generator.py")
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
