"""Queries per investigation against a real Prometheus at 10, 100 and 1000 services.

For each size a `deployment` scenario is generated (``correlator.generator``),
its metrics are backfilled into a real Prometheus 2.42 (``promtool tsdb
create-blocks-from openmetrics``, via ``correlator.lab``), and its alert is
investigated with metrics from the Prometheus adapter (logs, traces and
topology from the bundle, as Loki and Tempo cannot run here). Every HTTP
request to Prometheus is counted with an httpx event hook, with the bytes of
its answer. The first (cold) investigation and the median of three warm ones
are reported into the ``## Backends`` section of BENCHMARKS.md.

The claim measured: the request count depends on the catalog (one
``query_range`` per role alternative), never on the number of services.

    python scripts/bench_backends.py [--sizes 10,100,1000] [--work build/bench_backends]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import write_section

SEED = 5300
DURATION = 3600
RUNS = 2


@dataclass
class Counter:
    """Requests and response bytes seen by the httpx event hooks."""

    requests: int = 0
    bytes: int = 0
    paths: dict[str, int] = field(default_factory=dict)

    def on_request(self, request: httpx.Request) -> None:
        """Count one request (retries included)."""
        self.requests += 1
        self.paths[request.url.path] = self.paths.get(request.url.path, 0) + 1

    def on_response(self, response: httpx.Response) -> None:
        """Add the answer's size (read here; the adapter reads it again from the buffer)."""
        response.read()
        self.bytes += len(response.content)

    def reset(self) -> None:
        """Start counting afresh."""
        self.requests, self.bytes, self.paths = 0, 0, {}


def bundle_for(services: int, work: Path) -> tuple[Path, float]:
    """A generated bundle (reused when already in ``work``) and the seconds it took."""
    from correlator.generator.api import generate, write

    dest = work / f"services-{services}"
    if (dest / "scenario.json").is_file():
        return dest, 0.0
    t = time.perf_counter()
    scen = generate(SEED + services, services=services, duration=DURATION, cause="deployment")
    write(scen, dest, compress=True)
    return dest, time.perf_counter() - t


def measure(services: int, work: Path) -> dict[str, float]:
    """Generate, backfill, investigate; the figures of one size."""
    from correlator.adapters.bundle import BundleBackend
    from correlator.adapters.prometheus import PrometheusAdapter

    from correlator import lab
    from correlator.catalog import default_catalog
    from correlator.config import Settings
    from correlator.engine import investigate
    from correlator.http import HttpSettings, build_client
    from correlator.sources import Sources

    path, generated = bundle_for(services, work)
    backend = BundleBackend(path)
    alert = backend.alerts()[0]
    bound = backend.bound(alert)
    catalog = default_catalog()
    alternatives = sum(len(specs) for specs in catalog.roles.values())
    settings = Settings(source_timeout=900.0, deadline=1800.0)
    t = time.perf_counter()
    with lab.prometheus(path) as server:
        loaded = time.perf_counter() - t
        http = HttpSettings(name="prometheus", url=server.url, timeout=900.0)
        client = build_client(http)
        counter = Counter()
        client.event_hooks = {"request": [counter.on_request], "response": [counter.on_response]}
        prom = PrometheusAdapter(http, client)
        sources = Sources(
            metrics=[prom], logs=[bound], traces=[bound], topology=[bound], alerts=[bound]
        )
        runs = []
        for _ in range(RUNS + 1):
            counter.reset()
            inv = investigate(alert, sources, settings, catalog)
            if inv.gaps:
                raise SystemExit(f"{services} services: gaps {inv.gaps}")
            runs.append(
                {
                    "requests": float(counter.requests),
                    "bytes": float(counter.bytes),
                    "collect": inv.timings["collect"],
                    "total": inv.timings["total"],
                }
            )
        client.close()
    cold, warm = runs[0], runs[1:]
    signals = inv.telemetry.signals
    return {
        "services": float(services),
        "nodes": float(signals["service"].nunique()),
        "rows": float(len(signals)),
        "alternatives": float(alternatives),
        "requests": cold["requests"],
        "requests_warm_max": max(r["requests"] for r in warm),
        "mib": cold["bytes"] / 2**20,
        "collect_cold": cold["collect"],
        "total_cold": cold["total"],
        "collect": statistics.median(r["collect"] for r in warm),
        "total": statistics.median(r["total"] for r in warm),
        "generate": generated,
        "load": loaded,
    }


def main() -> int:
    """Measure every size and write the section."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--work", type=Path, default=Path("build/bench_backends"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        r = measure(n, args.work)
        rows.append(r)
        print({k: round(v, 3) for k, v in r.items()}, flush=True)
    lines = [
        "One `deployment` scenario per size (generator seed "
        f"{SEED} + services, {DURATION // 60} minutes), its metrics backfilled into a real "
        "Prometheus 2.42 on this machine; the alert investigated with metrics from the "
        "Prometheus adapter (logs, traces and topology from the bundle). Requests are every "
        "HTTP request the adapter sent to Prometheus (httpx event hook); collect and total "
        f"are the engine's stage timings in seconds, cold (first run) and the median of "
        f"{RUNS} warm runs. `source_timeout` and `deadline` are raised (900 s / 1800 s) so "
        "that every size is measured rather than cut.",
        "",
        "| services | `service` values in signals (pods, nodes too) | signal rows | requests | answers (MiB) "
        "| collect cold | total cold | collect | total | backfill + start |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['services']:.0f} | {r['nodes']:.0f} | {r['rows']:.0f} | "
            f"**{r['requests']:.0f}** | {r['mib']:.1f} | {r['collect_cold']:.2f} | "
            f"{r['total_cold']:.2f} | {r['collect']:.2f} | **{r['total']:.2f}** | "
            f"{r['load']:.0f} s |"
        )
    alternatives = rows[0]["alternatives"] if rows else 0
    lines += [
        "",
        f"The request count is the number of catalog alternatives ({alternatives:.0f}: one "
        "`query_range` per role alternative, grouped by service in PromQL), the same at "
        "every size; what grows with the system is the size of the answers and the time "
        "Prometheus and the engine spend on them. The adapter sends its queries one after "
        "another, and the histogram quantiles (`latency`, `edge_latency`) dominate the "
        "server's evaluation time; with the default `source_timeout` of 10 s, a system "
        "whose collect takes longer than that loses its metrics to a gap.",
    ]
    if not args.no_write:
        write_section("Backends", "\n".join(lines), "scripts/bench_backends.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
