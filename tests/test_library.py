"""The shipped scenario library: complete, small, and loadable into a real Prometheus."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from correlator.bundle import read_bundle
from correlator.fingerprint import alert_fingerprint
from correlator.generator.faults import BUILTIN, EXTRA
from correlator.model import parse_time

LIBRARY = Path(__file__).resolve().parent.parent / "fixtures" / "scenarios"
BUNDLES = sorted(p for p in LIBRARY.iterdir() if (p / "scenario.json").is_file())


def _doc(folder: Path) -> dict[str, object]:
    out: dict[str, object] = json.loads((folder / "scenario.json").read_text(encoding="utf-8"))
    return out


def test_library_covers_every_cause_and_stays_small() -> None:
    assert len(BUNDLES) >= 16
    causes: dict[str, int] = {}
    for folder in BUNDLES:
        truth = _doc(folder)["truth"]
        assert isinstance(truth, dict)
        causes[truth["cause"]] = causes.get(truth["cause"], 0) + 1
    assert all(causes.get(c, 0) >= 2 for c in BUILTIN), causes
    assert all(causes.get(c, 0) >= 1 for c in EXTRA), causes
    total = sum(p.stat().st_size for p in LIBRARY.rglob("*") if p.is_file())
    assert total < 25 * 2**20


def test_fingerprints_are_unique_and_alertmanager_computed() -> None:
    seen: dict[str, str] = {}
    for folder in BUNDLES:
        for alert in _doc(folder)["alerts"]:  # type: ignore[attr-defined]
            assert alert["fingerprint"] == alert_fingerprint(alert["labels"])
            assert seen.setdefault(alert["fingerprint"], folder.name) == folder.name


@pytest.mark.parametrize("folder", BUNDLES, ids=[p.name for p in BUNDLES])
def test_bundle_reads_with_truth_and_description(folder: Path) -> None:
    bundle = read_bundle(folder)
    assert bundle.truth is not None
    assert len(bundle.description) > 200
    start, _ = bundle.window
    assert parse_time(bundle.truth["start"]) - start >= 30 * 60
    services = {n["id"] for n in (bundle.topology or {})["nodes"] if n["kind"] == "service"}
    assert 8 <= len(services) <= 40


# --- a real Prometheus ---------------------------------------------------------------------

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every bundle backfilled into one TSDB, served by a real Prometheus on 127.0.0.1."""
    if not (Path(PROMTOOL).exists() and Path(PROMETHEUS).exists()):
        pytest.skip("Debian's prometheus package (prometheus, promtool) is not installed")
    root = tmp_path_factory.mktemp("prom")
    tsdb = root / "data"
    tsdb.mkdir()
    for folder in BUNDLES:
        src = folder / "metrics.om.gz"
        om = root / f"{folder.name}.om"
        if src.exists():
            om.write_bytes(gzip.decompress(src.read_bytes()))
        else:
            shutil.copy(folder / "metrics.om", om)
        done = subprocess.run(
            [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert done.returncode == 0, f"promtool rejected {folder.name}: {done.stderr[-2000:]}"
        om.unlink()
    config = root / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n", encoding="utf-8")
    port = _free_port()
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tsdb}",
            "--storage.tsdb.retention.time=100y",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not become ready on {url}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


QUERIES = [
    (
        'sum by (service_name) (rate(traces_span_metrics_calls_total{{span_kind="SPAN_KIND_SERVER"}}[1m]))',
        "service_name",
    ),
    (
        "histogram_quantile(0.95, sum by (le, server) "
        "(rate(traces_service_graph_request_server_seconds_bucket[1m])))",
        "server",
    ),
    ("sum by (pod) (container_memory_working_set_bytes)", "pod"),
    ('max by (node) (kube_node_status_condition{{condition="Ready",status="true"}})', "node"),
    ("count by (service, version) (app_build_info)", "service"),
]


@pytest.mark.prometheus
@pytest.mark.parametrize("folder", BUNDLES, ids=[p.name for p in BUNDLES])
def test_bundle_backfills_into_prometheus(prometheus: str, folder: Path) -> None:
    doc = _doc(folder)
    window = doc["window"]
    assert isinstance(window, dict)
    start, end = parse_time(window["start"]), parse_time(window["end"])
    topo = json.loads((folder / "topology.json").read_text(encoding="utf-8"))
    services = {n["id"] for n in topo["nodes"] if n["kind"] == "service"}
    for template, label in QUERIES:
        query = template.format()
        resp = httpx.get(
            f"{prometheus}/api/v1/query_range",
            params={"query": query, "start": start, "end": end, "step": "60s"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        result = resp.json()["data"]["result"]
        assert result, f"{folder.name}: no data for {query}"
        # bundles live on different days, so the series in the window are this bundle's
        values = [v for r in result for v in r["values"]]
        assert min(float(t) for t, _ in values) <= start + 120
        assert max(float(t) for t, _ in values) >= end - 120
        if label == "service_name":
            assert {r["metric"][label] for r in result} == services
