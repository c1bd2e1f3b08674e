"""`correlator serve` under real work and under attack, on loopback.

Part 1, accept latency while the real engine works: the service runs with its
defaults (worker processes, 2 workers) and the real investigator
(``correlator.service.cli:engine_investigator`` over the bundled incident
library under ``fixtures/``, wrapped to log each run). ``--alerts`` posts of
one alert each, every one an alert of a bundled incident (its fingerprint,
``startsAt`` shifted by whole seconds so each post is a new occurrence), go in
with ``--concurrency`` requests in flight, from a small asyncio HTTP/1.1 client
with kept-alive connections (a Go Alertmanager's cost, not httpx's). Reported:
accept p50/p99/max, how many investigations the engine finished during the
burst, the time until all are investigated, lost (accepted but never done) and
duplicated (run to the end twice). On SQLite and on a private PostgreSQL.

Part 2, hostile input on one service: every kind of the bad-request corpus
(``tests/bad_alerts.py``) and how many were answered as expected; a flood of
half-open connections (headers never finished) with /healthz latency during
it; more connections than ``--max-connections``; and the log lines the
service wrote for all of it.

Bounded: each burst ends by itself (investigations are waited for at most
``--wait`` seconds). Writes the ``## Webhook service under real work`` section
of BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from bad_alerts import corpus  # noqa: E402
from service_support import (  # noqa: E402
    PostgresCluster,
    Server,
    dumps,
    free_port,
    payload,
    read_runs,
    server_env,
)

TOKEN = "bench-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _library_alerts() -> list[dict[str, Any]]:
    from correlator.api import build_sources
    from correlator.config import Settings

    sources = build_sources(Settings())
    for source in sources.alerts:
        alerts = list(source.alerts())
        if alerts:
            return [a.to_json() for a in alerts]
    raise SystemExit("no bundled incidents found under fixtures/")


def _bodies(n: int) -> list[bytes]:
    from correlator.model import format_time, parse_time

    library = _library_alerts()
    bodies = []
    for i in range(n):
        a = library[i % len(library)]
        shift = i // len(library)
        alert = {
            "status": "firing",
            "labels": a["labels"],
            "annotations": a.get("annotations") or {},
            "startsAt": format_time(parse_time(a["startsAt"]) + shift),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": a.get("generatorURL") or "",
            "fingerprint": a["fingerprint"],
        }
        bodies.append(dumps(payload(alert)))
    return bodies


class _Client:
    """A kept-alive HTTP/1.1 connection that posts JSON and reads the status line."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _burst(
    port: int, bodies: list[bytes], concurrency: int
) -> tuple[list[float], Counter[int]]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    latencies: list[float] = []
    codes: Counter[int] = Counter()

    async def lane() -> None:
        client = _Client(port)
        try:
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                code = await client.post(body)
                latencies.append(time.perf_counter() - t0)
                codes[code] += 1
        finally:
            client.close()

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return latencies, codes


def _worker_cpu(pid: int) -> float:
    """CPU seconds used so far by the worker processes of server ``pid``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmd:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _count_done(url: str) -> int:
    r = httpx.get(f"{url}/metrics", timeout=30)
    for line in r.text.splitlines():
        if line.startswith('correlator_investigations{status="done"}'):
            return int(float(line.split()[-1]))
    return 0


def _run(
    args: argparse.Namespace, store: str, concurrency: int, bodies: list[bytes]
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        tmpdir = Path(tmp)
        log = tmpdir / "runs.log"
        server = Server(
            [
                "--port",
                str(free_port()),
                "--store",
                store if store.startswith("postgresql://") else str(tmpdir / "store.db"),
                "--workers",
                str(args.workers),
                "--isolation",
                args.isolation,
                "--poll",
                "0.2",
                "--log-level",
                "warning",
                "--investigator",
                "service_support:logged_engine_investigator",
            ],
            server_env(CORRELATOR_SERVE_TOKEN=TOKEN, SERVICE_TEST_LOG=str(log)),
            tmpdir / "serve.log",
        ).start(wait=60)
        try:
            # Let the workers warm up and start investigating before the burst.
            warmup = _bodies_warmup(bodies)
            asyncio.run(_burst(server.port, warmup, 2))
            deadline = time.monotonic() + 60
            while _count_done(server.url) < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert server.proc is not None
            cpu0 = _worker_cpu(server.proc.pid)
            t0 = time.perf_counter()
            latencies, codes = asyncio.run(_burst(server.port, bodies, concurrency))
            burst = time.perf_counter() - t0
            engine_cores = (_worker_cpu(server.proc.pid) - cpu0) / burst
            expected = len(bodies) + len(warmup)
            deadline = time.monotonic() + args.wait
            done = 0
            while time.monotonic() < deadline:
                done = _count_done(server.url)
                if done >= expected:
                    break
                time.sleep(1)
            all_done = time.perf_counter() - t0
            records = httpx.get(
                f"{server.url}/api/v1/investigations?limit=1000&status=done",
                headers=AUTH,
                timeout=60,
            ).json()["investigations"]
            retried = sum(1 for r in records if int(r["attempts"]) > 1)
        finally:
            server.stop()
        runs = read_runs(log)
    ends = Counter((fp, starts) for kind, _, fp, starts in runs if kind == "end")
    ms = [x * 1000 for x in latencies]
    return {
        "concurrency": concurrency,
        "accepted": codes.get(200, 0),
        "p50": _pct(ms, 50),
        "p99": _pct(ms, 99),
        "max": max(ms),
        "rate": len(bodies) / burst,
        "burst": burst,
        "engine": engine_cores,
        "all_done": all_done,
        "finished": done >= expected,
        "lost": expected - done,
        "dup": sum(1 for n in ends.values() if n > 1),
        "retried": retried,
    }


def _bodies_warmup(bodies: list[bytes]) -> list[bytes]:
    """Two posts before the burst (distinct from it) so worker processes are warm."""
    import json

    out = []
    for i, b in enumerate(bodies[:2]):
        doc = json.loads(b)
        doc["alerts"][0]["labels"] = {**doc["alerts"][0]["labels"], "warmup": str(i)}
        doc["alerts"][0].pop("fingerprint")
        out.append(dumps(doc))
    return out


# ---- part 2: hostile input ------------------------------------------------------------


def _half_open(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Never-Ends: ")
        socks.append(s)
    return socks


def _hostile(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        tmpdir = Path(tmp)
        server = Server(
            [
                "--port",
                str(free_port()),
                "--store",
                str(tmpdir / "store.db"),
                "--investigator",
                "service_support:slow_investigator",
                "--header-timeout",
                "10",
                "--max-connections",
                str(args.max_connections),
            ],
            server_env(CORRELATOR_SERVE_TOKEN=TOKEN),
            tmpdir / "serve.log",
        ).start(wait=60)
        out: dict[str, Any] = {}
        try:
            cases = corpus()
            answered = 0
            with httpx.Client(timeout=60) as client:
                for _name, body, ctype, statuses, needle in cases:
                    r = client.post(
                        f"{server.url}/webhook",
                        content=body,
                        headers={**AUTH, "Content-Type": ctype},
                    )
                    msg = r.json().get("error", "") if r.content else ""
                    answered += r.status_code in statuses and needle.lower() in msg.lower()
            out["kinds"], out["answered"] = len(cases), answered
            # Half-open flood, below the connection cap: /healthz must still answer.
            n = args.flood
            socks = _half_open(server.port, n)
            health = []
            with httpx.Client(timeout=10) as client:
                for _ in range(20):
                    t0 = time.perf_counter()
                    ok = client.get(f"{server.url}/healthz").status_code == 200
                    health.append((time.perf_counter() - t0) * 1000 if ok else float("inf"))
            # Fill up to the cap, then 50 more: those are refused at once with 503.
            fill = [
                socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(args.max_connections - n)
            ]
            time.sleep(0.5)
            extra = [
                socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(50)
            ]
            refused = 0
            for s in extra:
                s.settimeout(3)
                with contextlib.suppress(TimeoutError):
                    refused += s.recv(64).startswith(b"HTTP/1.1 503")
            for s in [*socks, *fill, *extra]:
                s.close()
            out.update(
                flood=n,
                health_p50=_pct(health, 50),
                health_max=max(health),
                over_cap=len(extra),
                refused=refused,
            )
        finally:
            server.stop()
        text = server.log.read_text()
        out["log_lines"], out["log_bytes"] = len(text.splitlines()), len(text.encode())
        out["tracebacks"] = text.count("Traceback")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=1000)
    ap.add_argument("--concurrency", default="8,20")
    ap.add_argument("--stores", default="sqlite,postgresql")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--isolation", default="process", choices=["process", "thread"])
    ap.add_argument("--wait", type=float, default=1200.0)
    ap.add_argument("--flood", type=int, default=900)
    ap.add_argument("--max-connections", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bodies = _bodies(args.alerts)
    rows: list[tuple[str, dict[str, float]]] = []
    for store in args.stores.split(","):
        cluster = PostgresCluster() if store == "postgresql" else None
        try:
            for c in (int(x) for x in args.concurrency.split(",")):
                target = cluster.database(f"bench_{c}") if cluster else "sqlite"
                row = _run(args, target, c, bodies)
                print(store, row, flush=True)
                rows.append((store, row))
        finally:
            if cluster is not None:
                cluster.stop()
    hostile = _hostile(args)
    print(hostile, flush=True)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    lines = [
        f"{args.alerts} webhook posts (one alert each), every one an alert of a bundled incident",
        "(`fixtures/`, as `correlator alerts` lists them, `startsAt` shifted so each is new), while",
        f"the real engine investigates them: `correlator serve` defaults (`--isolation "
        f"{args.isolation}`, {args.workers} workers),",
        "investigator `correlator.service.cli:engine_investigator` (wrapped to log each run). The",
        "client is a small asyncio HTTP/1.1 client with kept-alive connections; client, service",
        f"and workers share the 2 cores. 1-minute load average at the end: {load:.1f}.",
        "",
        "| store | in flight | accepted | accept p50 | p99 (target < 50 ms) | max | posts/s "
        "| burst took | engine CPU during it | all investigated after | lost | investigated twice |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok = True
    for store, r in rows:
        verdict = "met" if r["p99"] < 50 else "not met"
        done_after = f"{r['all_done']:.0f} s" if r["finished"] else f"not in {args.wait:.0f} s"
        lines.append(
            f"| {store} | {r['concurrency']:.0f} | {r['accepted']:.0f}/{args.alerts} "
            f"| {r['p50']:.1f} ms | {r['p99']:.1f} ms ({verdict}) | {r['max']:.1f} ms "
            f"| {r['rate']:.0f} | {r['burst']:.2f} s | {r['engine']:.2f} cores | {done_after} "
            f"| {r['lost']:.0f} | {r['dup']:.0f} |"
        )
        ok = ok and r["lost"] == 0 and r["dup"] == 0 and r["accepted"] == args.alerts
    h = hostile
    lines += [
        "",
        "Hostile input against one service (defaults, `--max-connections "
        f"{args.max_connections}`, `--header-timeout 10`):",
        "",
        f"- bad-request kinds (tests/bad_alerts.py) tried: {h['kinds']}, answered with the "
        f"expected 4xx and a message naming the problem: {h['answered']}",
        f"- half-open connections held: {h['flood']}; /healthz during the flood: p50 "
        f"{h['health_p50']:.1f} ms, max {h['health_max']:.1f} ms (20 requests)",
        f"- connections beyond the cap: {h['over_cap']}, refused at once with 503 + Retry-After: "
        f"{h['refused']}",
        f"- log lines the service wrote for all of it: {h['log_lines']} ({h['log_bytes']} bytes, "
        f"{h['tracebacks']} tracebacks)",
        "",
        "Rerun: `python scripts/bench_service.py` (`--alerts`, `--concurrency 8,20`, "
        "`--stores sqlite,postgresql`, `--isolation thread` to compare).",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        from benchlib import write_section

        write_section("Webhook service under real work", table, "scripts/bench_service.py")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
