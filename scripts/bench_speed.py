"""Speed and memory of one investigation at 10, 50, 100 and 1000 services.

Each size gets a generated `deployment` bundle (generated in a process of its
own: generation is measured by bench_generator.py, not here), then a fresh
process investigates its alert twice with the bundle backend:

* the first (cold) run reads and parses the bundle files;
* the second (warm) run is what a long-running service sees once the bundle
  is parsed; its stage timings are reported.

The process's peak RSS covers both runs (parsing included). For 50 services
the CLI is also timed end to end, as a user runs it: ``correlator investigate
<id> --source <bundle>`` in a new process, from start to exit (bundle files
in the OS page cache). Targets: 50 services < 1 s of stages, CLI < 3 s;
1000 services < 15 s and < 2 GiB.

    python scripts/bench_speed.py [--sizes 10,50,100,1000] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("window", "collect", "detect", "topology", "patterns", "rank")
CLI_SIZE = 50


def _generate(services: int, dest: Path) -> None:
    """Generate the size's bundle in this process (``--gen``)."""
    from evallib import generate

    generate(7000 + services, services, "deployment", dest)


def one(path: Path) -> dict[str, float]:
    """Investigate a bundle twice in this process with one backend; timings and peak RSS."""
    from correlator.adapters.bundle import BundleBackend

    from correlator.catalog import default_catalog
    from correlator.config import Settings
    from correlator.engine import investigate
    from correlator.sources import Sources

    backend = BundleBackend(path)
    bundle = backend.bundles()[0]
    alert = bundle.alerts[0]
    backend.use(bundle)
    # Generous source timeout: the cold run's parse of a big bundle must not become a gap.
    settings = Settings(top_n=5, source_timeout=600, deadline=1200)
    catalog = bundle.merged_catalog(default_catalog())
    sources = Sources.from_backends(backend)
    t = time.perf_counter()
    investigate(alert, sources, settings, catalog)  # cold: reads and parses the bundle files
    cold = time.perf_counter() - t
    t = time.perf_counter()
    inv = investigate(alert, sources, settings, catalog)  # warm: files parsed, as in the service
    warm = time.perf_counter() - t
    out = {k: float(inv.timings.get(k, 0.0)) for k in STAGES}
    out["stages"] = sum(out[k] for k in STAGES)
    out["cold"] = cold
    out["warm"] = warm
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["series_rows"] = float(len(inv.telemetry.signals))
    return out


def cli_seconds(path: Path) -> float:
    """Wall time of ``correlator investigate <id> --source <bundle>``, start to exit."""
    doc = json.loads((path / "scenario.json").read_text(encoding="utf-8"))
    fingerprint = doc["alerts"][0]["fingerprint"]
    exe = shutil.which("correlator") or "correlator"
    t = time.perf_counter()
    subprocess.run(
        [exe, "investigate", fingerprint, "--source", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


def _metrics_mib(path: Path) -> float:
    om = path / "metrics.om"
    return (om if om.exists() else path / "metrics.om.gz").stat().st_size / 2**20


def main() -> int:
    """Run every size in fresh processes and write the section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,50,100,1000")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--gen", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.gen:
        _generate(int(args.gen[0]), Path(args.gen[1]))
        return 0
    if args.one:
        print(json.dumps(one(args.one)))
        return 0
    rows = []
    cli: float | None = None
    for n in [int(x) for x in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="corr-speed-") as tmp:
            path = Path(tmp) / "b"
            subprocess.run([sys.executable, __file__, "--gen", str(n), str(path)], check=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["metrics_mib"] = _metrics_mib(path)
            if n == CLI_SIZE:
                cli = r["cli"] = cli_seconds(path)
        rows.append((n, r))
        print(n, r, flush=True)
    lines = [
        "One investigation of a generated `deployment` bundle per size, in a fresh process: "
        "the engine's stage timings (seconds) of a warm run (bundle files already parsed, "
        "as in the long-running service), the cold first run (reading and parsing the "
        "bundle files included), and the process's peak resident memory over both runs.",
        "",
        "| services | metrics.om | signal rows | "
        + " | ".join(STAGES)
        + " | stages | cold run | peak RSS |",
        "|---|---|---|" + "---|" * (len(STAGES) + 3),
    ]
    for n, r in rows:
        cells = " | ".join(f"{r[k]:.3f}" for k in STAGES)
        lines.append(
            f"| {n} | {r['metrics_mib']:.0f} MiB | {r['series_rows']:.0f} | {cells} | "
            f"**{r['stages']:.2f}** | {r['cold']:.2f} | {r['peak_rss_mib']:.0f} MiB |"
        )
    if cli is not None:
        lines += [
            "",
            f"CLI, {CLI_SIZE} services, `correlator investigate <id> --source <bundle>` in a "
            f"new process, start to exit (imports, parse, investigation, report): "
            f"**{cli:.2f} s**.",
        ]
    if len(rows) > 1:
        base_n, base = rows[0]
        growth = ", ".join(
            f"{n}: x{r['stages'] / base['stages']:.1f} stages, x{r['cold'] / base['cold']:.1f} cold"
            for n, r in rows[1:]
            if base["stages"] > 0 and base["cold"] > 0
        )
        lines += ["", f"Growth against {base_n} services: {growth}."]
    lines += [
        "",
        "Targets: 50 services < 1 s (stages) and CLI < 3 s; 1000 services < 15 s and < 2 GiB.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        from benchlib import write_section

        write_section("Speed", body, "scripts/bench_speed.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
