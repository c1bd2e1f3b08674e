"""`correlator demo` end to end, as docs/demo.md tells a user: up, fault, alert, report, down.

The whole live system runs: ten instrumented services and their PostgreSQL,
the load generator, Prometheus with the demo's rules, Alertmanager and
`correlator serve`. After a quiet baseline one service starts raising in a
share of its requests; the test waits for Alertmanager to deliver the alert
to serve and for serve's investigation of it, and checks that the faulty
service is the top finding. Then `demo down` must leave none of the demo's
processes (nor their children) running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from correlator import lab
from correlator.demo import faults
from correlator.demo.state import pid_alive, pid_start, process_tree, usage

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager, pytest.mark.slow]

FAULTY = "catalog"
BASELINE_S = 120.0
ALERT_TIMEOUT_S = 180.0


def _need_binaries() -> None:
    import shutil

    missing = [b for b in (lab.PROMETHEUS_BIN, lab.ALERTMANAGER_BIN) if not Path(b).exists()]
    if not shutil.which("initdb") and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        missing.append("initdb (postgresql)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing in CI: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")


def _demo(*args: str, state_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRELATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "correlator.cli", "demo", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def _investigations(state: dict[str, Any], **params: str) -> list[dict[str, Any]]:
    token = Path(state["serve_token_file"]).read_text().strip()
    r = httpx.get(
        state["serve_url"] + "/api/v1/investigations",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    r.raise_for_status()
    return list(r.json()["investigations"])


def _investigation(state: dict[str, Any], inv_id: str) -> dict[str, Any]:
    token = Path(state["serve_token_file"]).read_text().strip()
    r = httpx.get(
        f"{state['serve_url']}/api/v1/investigations/{inv_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    r.raise_for_status()
    return dict(r.json())


def _top3(inv: dict[str, Any]) -> str:
    found = inv.get("investigation", {}).get("findings", [])[:3]
    return ", ".join(f"{f['service']}/{f['cause']} {f['confidence']:.2f}" for f in found)


def test_fault_to_alert_to_report(tmp_path: Path) -> None:
    _need_binaries()
    sdir = tmp_path / "demo"
    t0 = time.monotonic()
    started = _demo("up", state_dir=sdir)
    assert started.returncode == 0, started.stdout + started.stderr
    state = json.loads((sdir / "state.json").read_text())
    try:
        for key in ("prometheus_url", "alertmanager_url", "serve_url", "otlp_dir", "started_at"):
            assert state[key], key
        assert len(state["services"]) >= 8
        assert len(state["services"]["recommendation"]["instances"]) == 2
        assert {s["framework"] for s in state["services"].values()} >= {"flask", "starlette"}
        again = _demo("up", state_dir=sdir)
        assert again.returncode == 2 and "already runs" in again.stderr

        time.sleep(max(0.0, BASELINE_S - (time.monotonic() - t0)))
        use = usage(state["pids"])
        print(f"\nmemory after baseline: RSS {use['rss_bytes'] / 2**20:.0f} MiB, "
              f"PSS {use['pss_bytes'] / 2**20:.0f} MiB in {use['processes']:.0f} processes")  # fmt: skip
        assert use["pss_bytes"] < 2 * 2**30
        assert not _investigations(state), "an alert fired before any fault"

        record = faults.inject(sdir, "exception", FAULTY, rate=0.3)
        injected = record["started_at"]
        deadline = time.monotonic() + ALERT_TIMEOUT_S
        done: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            done = _investigations(state, service=FAULTY, status="done")
            if done:
                break
            time.sleep(2)
        assert done, f"no investigation of an alert on {FAULTY} within {ALERT_TIMEOUT_S:.0f}s"
        first = _investigation(state, done[-1]["id"])
        alert_at = first["alert"]["startsAt"]
        print(f"alert {first['alertname']} on {FAULTY}: starts {alert_at}; "
              f"report {time.time() - injected:.0f}s after the fault; top: {_top3(first)}")  # fmt: skip
        for other in _investigations(state, status="done"):
            if other["id"] != first["id"]:
                print(f"  also {other['alertname']} on {other['service']}: "
                      f"{_top3(_investigation(state, other['id']))}")  # fmt: skip
        top = first["investigation"]["findings"][0]
        assert top["service"] == FAULTY, _top3(first)
        # The truth log has the fault; clearing closes it.
        cleared = faults.clear(sdir)
        assert [c["id"] for c in cleared] == [record["id"]]
        assert cleared[0]["cleared_at"] >= injected
    finally:
        tree = process_tree(state["pids"])
        starts = {p: pid_start(p) for p in tree}
        stopped = _demo("down", state_dir=sdir)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    alive = [p for p, s in starts.items() if s is not None and pid_alive(p, s)]
    assert not alive, f"still running after demo down: {alive}"
    assert not (sdir / "state.json").exists()
    assert not Path(state["postgres_dir"]).exists()
    print(f"whole test: {time.monotonic() - t0:.0f}s")
