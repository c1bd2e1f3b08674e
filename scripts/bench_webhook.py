"""Load benchmark of `correlator serve` on loopback: a burst of webhook posts.

Starts the service as a subprocess (SQLite store in WAL mode, synchronous=FULL,
bearer auth), posts ``--alerts`` distinct alerts one per request with
``--concurrency`` requests in flight, and reports accept latency (p50, p99,
max), the time until every alert is investigated, the service's peak memory
(VmHWM), and whether any alert was lost or investigated twice. The investigate
callable is a trivial one by default (``tests/service_support.py``), so the
figures are the service's own overhead, not the engine's.

Bounded: one burst, loopback only, stops by itself. Writes the
``## Webhook service`` section of BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from service_support import Server, dumps, free_port, payload, read_log, server_env, webhook_alert  # noqa: E402

TOKEN = "bench-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _burst(url: str, n: int, concurrency: int) -> tuple[list[float], Counter[int]]:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    bodies = [dumps(payload(webhook_alert(starts=1_772_000_000 + i, n=str(i)))) for i in range(n)]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(body: bytes) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(f"{url}/webhook", content=body, headers=AUTH)
                latencies.append(time.perf_counter() - t0)
                codes[r.status_code] += 1

        await asyncio.gather(*(one(b) for b in bodies))
    return latencies, codes


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run(args: argparse.Namespace, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        tmpdir = Path(tmp)
        log = tmpdir / "runs.log"
        server = Server(
            [
                "--port",
                str(free_port()),
                "--store",
                str(tmpdir / "store.db"),
                "--workers",
                str(args.workers),
                "--poll",
                "0.2",
                "--log-level",
                "warning",
                "--investigator",
                args.investigator,
            ],
            server_env(CORRELATOR_SERVE_TOKEN=TOKEN, SERVICE_TEST_LOG=str(log)),
            tmpdir / "serve.log",
        ).start()
        try:
            assert server.proc is not None
            t0 = time.perf_counter()
            latencies, codes = asyncio.run(_burst(server.url, args.alerts, concurrency))
            burst = time.perf_counter() - t0
            deadline = time.monotonic() + 600
            records: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                r = httpx.get(
                    f"{server.url}/api/v1/investigations?limit=1000&status=done",
                    headers=AUTH,
                    timeout=30,
                )
                records = r.json()["investigations"]
                if len(records) >= args.alerts:
                    break
                time.sleep(0.1)
            all_done = time.perf_counter() - t0
            peak = _peak_rss_mb(server.proc.pid)
        finally:
            server.stop()
        runs = read_log(log)
    ends = Counter(fp for kind, _, fp in runs if kind == "end")
    ms = [x * 1000 for x in latencies]
    return {
        "concurrency": concurrency,
        "accepted": codes.get(200, 0),
        "p50": _pct(ms, 50),
        "p99": _pct(ms, 99),
        "max": max(ms),
        "rate": args.alerts / burst,
        "all_done": all_done,
        "peak": peak,
        "lost": args.alerts - len(records),
        "dup": sum(1 for n in ends.values() if n > 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=1000)
    ap.add_argument(
        "--concurrency",
        default="8,20",
        help="requests in flight; a comma-separated list runs one burst each",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--investigator", default="service_support:slow_investigator")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    levels = [int(c) for c in str(args.concurrency).split(",")]
    rows = [_run(args, c) for c in levels]
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    lines = [
        f"A burst of {args.alerts} webhook posts (one alert each) from an httpx client on the",
        "same machine to `correlator serve` (uvicorn, SQLite WAL store, accepts committed with",
        f"synchronous=FULL and grouped, bearer auth, {args.workers} workers, investigate callable",
        f"`{args.investigator}`: the service's own cost, not the engine's). Client and",
        f"server share the 2 cores; 1-minute load average at the end: {load:.1f}.",
        "",
        "| in flight | accepted | p50 | p99 (target < 50 ms) | max | requests/s "
        "| all investigated after | peak memory | lost | investigated twice |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok = True
    for r in rows:
        verdict = "met" if r["p99"] < 50 else "not met"
        lines.append(
            f"| {r['concurrency']:.0f} | {r['accepted']:.0f}/{args.alerts} | {r['p50']:.1f} ms "
            f"| {r['p99']:.1f} ms ({verdict}) | {r['max']:.1f} ms | {r['rate']:.0f} "
            f"| {r['all_done']:.2f} s | {r['peak']:.0f} MiB | {r['lost']:.0f} | {r['dup']:.0f} |"
        )
        ok = ok and r["lost"] == 0 and r["dup"] == 0 and r["accepted"] == args.alerts
    lines += [
        "",
        "Rerun: `python scripts/bench_webhook.py` (`--alerts`, `--concurrency 8,20`, `--workers`).",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        from benchlib import write_section

        write_section("Webhook service", table, "scripts/bench_webhook.py")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
