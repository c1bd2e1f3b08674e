"""Speed and memory of one investigation at 10, 50, 100 and 1000 services.

Each size gets a generated `deployment` bundle (generated in a process of its
own: generation is measured by bench_generator.py, not here). Then, with an
empty parse cache of its own:

* a fresh process investigates the bundle's alert twice with the bundle
  backend: the first (cold) run reads and parses the bundle files (and
  leaves the parse in the cache); the second (warm) run is what a
  long-running service sees once the bundle is parsed; its stage timings
  are reported;
* a second fresh process investigates it once more: a cold process whose
  parse comes from the cache (``CORRELATOR_CACHE_DIR``, see
  ``correlator.bundle.cache_dir``).

Peak RSS is per process (file pages the cache maps count too). For 50
services, and for the shipped library, the CLI is timed end to end, as a user
runs it, in new processes: without the cache, the first run with an empty
cache (which fills it) and the next run; bundle files are in the OS page
cache. Wall times depend on what else runs: the load average is printed, and
the CLI's CPU seconds (user + system) with them.

Targets: 50 services < 1 s of stages, CLI < 3 s; 1000 services < 15 s and
< 2 GiB.

    python scripts/bench_speed.py [--sizes 10,50,100,1000] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
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
LIBRARY_ALERT = "c92321709d13bd50"
CACHE_ENV = "CORRELATOR_CACHE_DIR"


def _generate(services: int, dest: Path) -> None:
    """Generate the size's bundle in this process (``--gen``)."""
    from evallib import generate

    generate(7000 + services, services, "deployment", dest)


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(path: Path, runs: int) -> dict[str, float]:
    """Investigate a bundle ``runs`` times in this process with one backend."""
    from correlator.adapters.bundle import BundleBackend

    from correlator.catalog import default_catalog
    from correlator.config import Settings
    from correlator.engine import investigate
    from correlator.sources import Sources

    backend = BundleBackend(path)
    bundle = backend.bundles()[0]
    alert = bundle.alerts[0]
    backend = backend.bind(alert)
    # Generous source timeout: the cold run's parse of a big bundle must not become a gap.
    settings = Settings(top_n=5, source_timeout=1200, deadline=2400)
    catalog = bundle.merged_catalog(default_catalog())
    sources = Sources.from_backends(backend)
    out: dict[str, float] = {}
    t, c = time.perf_counter(), _cpu_self()
    inv = investigate(alert, sources, settings, catalog)  # cold: parse (or cache)
    out["cold"], out["cold_cpu"] = time.perf_counter() - t, _cpu_self() - c
    out["cold_collect"] = float(inv.timings.get("collect", 0.0))
    if runs > 1:
        del inv  # as a service holds one investigation at a time
        t = time.perf_counter()
        inv = investigate(alert, sources, settings, catalog)  # warm: files parsed
        out["warm"] = time.perf_counter() - t
    out.update({k: float(inv.timings.get(k, 0.0)) for k in STAGES})
    out["stages"] = sum(out[k] for k in STAGES)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["series_rows"] = float(len(inv.telemetry.signals))
    out["gaps"] = float(len(inv.gaps))
    return out


def _one_process(path: Path, runs: int, cache: str) -> dict[str, float]:
    env = dict(os.environ, **{CACHE_ENV: cache})
    proc = subprocess.run(
        [sys.executable, __file__, "--one", str(path), "--runs", str(runs)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def cli_run(args: list[str], cache: str) -> tuple[float, float]:
    """Wall and CPU seconds of ``correlator <args>`` in a new process, start to exit."""
    exe = shutil.which("correlator") or "correlator"
    env = dict(os.environ, **{CACHE_ENV: cache})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([exe, *args], check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def cli_series(args: list[str]) -> dict[str, tuple[float, float]]:
    """The CLI without the cache, with an empty cache, then with the filled cache."""
    with tempfile.TemporaryDirectory(prefix="corr-cache-") as cache:
        return {
            "no cache": cli_run(args, ""),
            "empty cache": cli_run(args, cache),
            "cached": cli_run(args, cache),
        }


def _metrics_mib(path: Path) -> float:
    om = path / "metrics.om"
    return (om if om.exists() else path / "metrics.om.gz").stat().st_size / 2**20


def _cli_line(what: str, runs: dict[str, tuple[float, float]]) -> str:
    cells = ", ".join(
        f"{name} **{wall:.2f} s** ({cpu:.2f} s CPU)" for name, (wall, cpu) in runs.items()
    )
    return f"- {what}: {cells}."


def main() -> int:
    """Run every size in fresh processes and write the section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,50,100,1000")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--gen", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.gen:
        _generate(int(args.gen[0]), Path(args.gen[1]))
        return 0
    if args.one:
        print(json.dumps(one(args.one, args.runs)))
        return 0
    loads = [os.getloadavg()[0]]
    rows = []
    cli: dict[str, tuple[float, float]] | None = None
    for n in [int(x) for x in args.sizes.split(",")]:
        with (
            tempfile.TemporaryDirectory(prefix="corr-speed-") as tmp,
            tempfile.TemporaryDirectory(prefix="corr-cache-") as cache,
        ):
            path = Path(tmp) / "b"
            subprocess.run([sys.executable, __file__, "--gen", str(n), str(path)], check=True)
            r = _one_process(path, 2, cache)
            cached = _one_process(path, 1, cache)
            r["cached"] = cached["cold"]
            r["cached_cpu"] = cached["cold_cpu"]
            r["cached_collect"] = cached["cold_collect"]
            r["cached_peak_rss_mib"] = cached["peak_rss_mib"]
            r["metrics_mib"] = _metrics_mib(path)
            if n == CLI_SIZE:
                doc = json.loads((path / "scenario.json").read_text(encoding="utf-8"))
                fingerprint = doc["alerts"][0]["fingerprint"]
                cli = cli_series(["investigate", fingerprint, "--source", str(path)])
        loads.append(os.getloadavg()[0])
        rows.append((n, r))
        print(n, r, flush=True)
    library = cli_series(["investigate", LIBRARY_ALERT])
    loads.append(os.getloadavg()[0])
    lines = [
        "One investigation of a generated `deployment` bundle per size. Stage timings "
        "(seconds) are those of a warm run: bundle files already parsed, as in the "
        "long-running service. *Cold, parse*: a fresh process's first run, reading and "
        "parsing the bundle files (and filling the parse cache). *Cold, cache*: a fresh "
        "process's first run when the parse cache holds the bundle (the parse is skipped). "
        "Peak RSS per process (the parsing one ran twice).",
        "",
        "| services | metrics.om | signal rows | "
        + " | ".join(STAGES)
        + " | stages | cold, parse | cold, cache | peak RSS, parse | peak RSS, cache |",
        "|---|---|---|" + "---|" * (len(STAGES) + 5),
    ]
    for n, r in rows:
        cells = " | ".join(f"{r[k]:.3f}" for k in STAGES)
        lines.append(
            f"| {n} | {r['metrics_mib']:.0f} MiB | {r['series_rows']:.0f} | {cells} | "
            f"**{r['stages']:.2f}** | {r['cold']:.2f} ({r['cold_cpu']:.1f} CPU) | "
            f"**{r['cached']:.2f}** ({r['cached_cpu']:.1f} CPU) | "
            f"{r['peak_rss_mib']:.0f} MiB | **{r['cached_peak_rss_mib']:.0f} MiB** |"
        )
    lines += [
        "",
        "CLI in a new process, start to exit (imports, parse, investigation, report):",
        "",
    ]
    if cli is not None:
        lines.append(
            _cli_line(f"{CLI_SIZE} services, `correlator investigate <id> --source <bundle>`", cli)
        )
    lines.append(_cli_line(f"shipped library, `correlator investigate {LIBRARY_ALERT}`", library))
    if len(rows) > 1:
        base_n, base = rows[0]
        growth = ", ".join(
            f"{n}: x{r['stages'] / base['stages']:.1f} stages, x{r['cached'] / base['cached']:.1f} "
            f"cold with cache, x{r['cold'] / base['cold']:.1f} cold with parse"
            for n, r in rows[1:]
            if base["stages"] > 0 and base["cold"] > 0 and base["cached"] > 0
        )
        lines += ["", f"Growth against {base_n} services: {growth}."]
    lines += [
        "",
        f"Load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f} on "
        f"{os.cpu_count()} cores; wall times stretch with it, CPU seconds much less.",
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
