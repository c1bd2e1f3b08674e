"""The live demo shop: what it costs, and how fast each fault becomes an alert and a report.

Starts ``correlator demo up`` in a temporary state directory, lets it run a
quiet baseline (``--baseline`` seconds), and measures the whole demo's
memory (proportional set size and the plain sum of resident sizes of every
process it started and their children) and CPU (cores used on average over
the baseline). Then, one at a time, it injects each fault kind of
``--plan`` through :func:`correlator.demo.faults.inject`, waits for the first
alert that Alertmanager holds (at most ``--timeout`` seconds), then for
`correlator serve`'s investigation of it, records the time from the flag to
the alert and to the stored report and the report's top three findings,
clears the fault, and waits for the alerts to resolve and ``--gap`` seconds
after the clear before the next one (an investigation looks 5 minutes back
from its alert: a shorter gap shows it the previous fault).
``demo down`` ends it.

Writes the ``## Live demo`` section of BENCHMARKS.md (``--no-write`` to skip).
The engine's verdicts are reported as they are: whether the faulty service
is the top finding of the first alert's report.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from correlator.demo import faults
from correlator.demo.state import usage

PLAN = (
    "exception:catalog,wrong_return:payment,latency:recommendation,cpu_hog:search,"
    "memory_leak:catalog,db_lock:inventory,bad_deploy:checkout,traffic_spike:frontend,"
    "dependency_down:email"
)


def _demo(*args: str, sdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRELATOR_")}
    proc = subprocess.run(
        [sys.executable, "-m", "correlator.cli", "demo", *args, "--state-dir", str(sdir)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"demo {args[0]} failed: {proc.stdout}{proc.stderr}")


def _alerts(state: dict[str, Any]) -> list[dict[str, Any]]:
    r = httpx.get(state["alertmanager_url"] + "/api/v2/alerts", params={"active": "true"})
    return list(r.json())


def _serve(state: dict[str, Any], path: str, **params: str) -> Any:
    token = Path(state["serve_token_file"]).read_text().strip()
    r = httpx.get(state["serve_url"] + path, params=params, timeout=10,
                  headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    r.raise_for_status()
    return r.json()


def _report(state: dict[str, Any], alert: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        # The same alert may have fired for an earlier fault: this occurrence only.
        found = _serve(
            state, "/api/v1/investigations", fingerprint=alert["fingerprint"],
            since=alert["startsAt"], status="done",
        )  # fmt: skip
        if found["investigations"]:
            inv_id = found["investigations"][0]["id"]
            return dict(_serve(state, f"/api/v1/investigations/{inv_id}"))
        time.sleep(1)
    return None


def _one(
    state: dict[str, Any], sdir: Path, kind: str, service: str, timeout: float
) -> dict[str, Any]:
    rec = faults.inject(sdir, kind, service)
    t0 = float(rec["started_at"])
    row: dict[str, Any] = {"kind": kind, "service": service, "cause": rec["cause"]}
    first = None
    while time.time() - t0 < timeout:
        fired = _alerts(state)
        if fired:
            first = min(fired, key=lambda a: a["startsAt"])
            break
        time.sleep(2)
    if first is None:
        row["alert"] = None
    else:
        row["alert"] = f"{first['labels']['alertname']} ({first['labels'].get('service', '?')})"
        row["alert_s"] = time.time() - t0
        report = _report(state, first, 120)
        if report is not None:
            row["report_s"] = time.time() - t0
            found = report["investigation"]["findings"][:3]
            row["top"] = [(f["service"], f["cause"], f["confidence"]) for f in found]
    time.sleep(10)
    faults.clear(sdir)
    row["cleared"] = time.time()
    deadline = time.time() + 300
    while _alerts(state) and time.time() < deadline:
        time.sleep(5)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=float, default=150.0)
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument(
        "--gap", type=float, default=250.0, help="seconds from a clear to the next fault"
    )
    ap.add_argument("--plan", default=PLAN, help="kind:service,... (default: every kind once)")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument(
        "--rows", type=Path, default=None,
        help="append each fault's row (JSON) to this file and report every row in it, "
        "so runs of parts of the plan add up",
    )  # fmt: skip
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the demo is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    plan = [tuple(p.split(":", 1)) for p in args.plan.split(",") if p]
    with tempfile.TemporaryDirectory(prefix="correlator-bench-demo-") as tmp:
        sdir = Path(tmp) / "demo"
        t_up = time.monotonic()
        _demo("up", sdir=sdir)
        up_s = time.monotonic() - t_up
        state = json.loads((sdir / "state.json").read_text())
        try:
            time.sleep(30)  # let start-up settle before measuring
            u0, c0 = usage(state["pids"]), time.monotonic()
            time.sleep(max(0.0, args.baseline - 30))
            u1, c1 = usage(state["pids"]), time.monotonic()
            cores = (u1["cpu_seconds"] - u0["cpu_seconds"]) / (c1 - c0)
            rate = _prom_rate(state)
            rows = []
            cleared = 0.0
            for kind, service in plan:
                time.sleep(max(0.0, cleared + args.gap - time.time()))
                row = _one(state, sdir, kind, service, args.timeout)
                cleared = row.pop("cleared")
                print(json.dumps(row), flush=True)
                rows.append(row)
                if args.rows is not None:
                    with args.rows.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(row) + "\n")
            peak = usage(json.loads((sdir / "state.json").read_text())["pids"])
        finally:
            _demo("down", sdir=sdir)
    if args.rows is not None:
        rows = [json.loads(x) for x in args.rows.read_text().splitlines() if x.strip()]
    lines = [
        f"`correlator demo up`: ready in {up_s:.0f} s; {u1['processes']:.0f} processes "
        f"(11 service processes, supervisor, load generator, PostgreSQL and its backends, "
        f"Prometheus, Alertmanager, serve and its workers).",
        "",
        f"- baseline ({c1 - c0:.0f} s, {rate:.1f} frontend requests/s): "
        f"{cores:.2f} CPU cores on average; memory {u1['pss_bytes'] / 2**20:.0f} MiB PSS "
        f"({u1['rss_bytes'] / 2**20:.0f} MiB summed RSS, which counts shared pages per process)",
        f"- after all faults (leaked memory freed on clear): {peak['pss_bytes'] / 2**20:.0f} MiB PSS",
        "",
        "| fault | service | first alert | flag to alert | flag to report | report top 3 | top 1 right |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        top = "; ".join(f"{s}/{c} {p:.2f}" for s, c, p in r.get("top", []))
        right = "yes" if r.get("top") and r["top"][0][0] == r["service"] else "no"
        lines.append(
            f"| {r['kind']} | {r['service']} | {r['alert'] or 'none'} | "
            f"{r.get('alert_s', float('nan')):.0f} s | {r.get('report_s', float('nan')):.0f} s | "
            f"{top or '-'} | {right if r['alert'] else '-'} |"
        )
    lines += [
        "",
        "The reports are `correlator serve`'s, investigated the moment the alert arrives "
        "(Prometheus, and the OTLP files when the `otlp_files` adapter is installed), "
        "after a short baseline; the recorded library (`## Demo incidents`) is the accuracy figure.",
        "",
        "Rerun: `python scripts/bench_demo_live.py` (`--plan kind:service,...`, `--baseline`).",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from benchlib import write_section

        write_section("Live demo", table, "scripts/bench_demo_live.py")
    return 0


def _prom_rate(state: dict[str, Any]) -> float:
    r = httpx.get(state["prometheus_url"] + "/api/v1/query",
                  params={"query": 'service:http_requests:rate1m{service="frontend"}'})  # fmt: skip
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


if __name__ == "__main__":
    sys.exit(main())
