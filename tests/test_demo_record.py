"""Recording a demo incident: metrics read back from a real Prometheus, a real Alertmanager
alert, OTLP files from the real OpenTelemetry SDK, written as a bundle the reader and
``investigate`` take."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.exposition import MetricsHandler

from correlator import lab
from correlator.bundle import parse_time, read_bundle
from correlator.cli import main as cli_main
from correlator.demo.record import read_metrics, write_bundle
from otlp_file_export import Service

pytest_plugins = ["servers"]
pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager]

SHIPPED = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios" / "quotes-bad-deploy"


def _series(bundle: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    # An empty label is no label (Prometheus drops it).
    metrics = read_bundle(bundle).metrics
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if v))): s for s in metrics.series
    }


def test_metrics_round_trip_through_prometheus(
    tmp_path: Path, prometheus_server: Any, alertmanager_server: lab.Server
) -> None:
    """A shipped bundle backfilled into Prometheus and recorded back: the same samples."""
    server = prometheus_server(SHIPPED)
    original = read_bundle(SHIPPED)
    start, end = original.window
    alerts = _post_and_get(alertmanager_server.url, original.alerts[0].labels, start + 2000)
    out = write_bundle(
        {"prometheus_url": server.url},
        start=start,
        end=end,
        alerts=alerts,
        truth={"service": "quotes", "cause": "deployment", "start": start + 2000},
        out=tmp_path / "again",
        name="again",
        description="round trip",
    )
    assert (out / "metrics.om.gz").is_file() and not (out / "metrics.om").exists()
    want, got = _series(SHIPPED), _series(out)
    flat = {k for k, s in want.items() if not s.values.any() and not k[0].endswith("_bucket")}
    assert set(got) == set(want) - flat, "every series but those zero throughout"
    for key, series in got.items():
        np.testing.assert_allclose(series.ts, want[key].ts, rtol=0, atol=1e-3, err_msg=str(key))
        np.testing.assert_array_equal(series.values, want[key].values, err_msg=str(key))
    types = read_bundle(out).metrics.types
    assert types["traces_span_metrics_calls"] == "counter"
    hist = [f for f, t in original.metrics.types.items() if t == "histogram"]
    assert hist and all(types[f] == "histogram" for f in hist)
    doc = json.loads((out / "scenario.json").read_text())
    assert doc["alerts"] == alerts and doc["truth"]["start"].startswith("2026-03-04T09:")


# --------------------------------------------------------------------------- a live recording


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _exporter(registry: CollectorRegistry) -> Iterator[int]:
    """A prometheus_client /metrics endpoint on 127.0.0.1."""
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(registry))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _post_and_get(am: str, labels: dict[str, str], starts: float) -> list[dict[str, Any]]:
    """Post one alert to Alertmanager and return it as GET /api/v2/alerts gives it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(starts))
    ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    post = [{"labels": labels, "startsAt": stamp, "endsAt": ends, "annotations": {"x": "y"}}]
    httpx.post(am + "/api/v2/alerts", json=post, timeout=10).raise_for_status()
    for _ in range(50):
        found = [
            a for a in httpx.get(am + "/api/v2/alerts", timeout=10).json() if a["labels"] == labels
        ]
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("Alertmanager did not keep the alert")


def test_a_live_recording(tmp_path: Path, alertmanager_server: lab.Server) -> None:
    registry = CollectorRegistry()
    requests = Counter("shop_requests", "Requests served", ["code"], registry=registry)
    depth = Gauge("shop_queue_depth", "Jobs waiting", registry=registry)
    latency = Histogram(
        "shop_request_duration_seconds", "Request time", buckets=(0.1, 0.5, 1), registry=registry
    )
    Summary("shop_payload_bytes", "Payload size", registry=registry).observe(100)
    Gauge("shop_flat", "Zero throughout", registry=registry)
    otlp = tmp_path / "otlp"
    cart = Service(otlp, "cart", "0")
    with _exporter(registry) as port, contextlib.ExitStack() as stack:
        config = (
            "global:\n  scrape_interval: 1s\nscrape_configs:\n"
            f"  - job_name: cart\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
            "  - job_name: prometheus\n    static_configs: "
            f"[{{targets: ['127.0.0.1:{(prom_port := _free_port())}']}}]\n"
        )
        prom = stack.enter_context(lab.prometheus(config=config, port=prom_port))
        start = time.time()
        for i in range(40):
            code = "500" if i >= 20 else "200"
            requests.labels(code).inc(3)
            depth.set(i % 7)
            latency.observe(0.05 if i < 20 else 0.7)
            cart.request(time.time(), error="boom" if i >= 20 else None, peer="orders-db")
            time.sleep(0.2)
        end = time.time()
        cart.request(end + 30)  # after the window: clipped away
        cart.close()
        time.sleep(2.5)  # the last scrape
        alerts = _post_and_get(
            alertmanager_server.url, {"alertname": "CartErrors", "service": "cart"}, start + 4
        )
        state = {"prometheus_url": prom.url, "otlp_dir": str(otlp)}
        t0 = time.perf_counter()
        out = write_bundle(
            state,
            start=start,
            end=end,
            alerts=alerts,
            truth={
                "service": "cart",
                "cause": "code_fault",
                "start": start + 4,
                "kind": "exception",
            },
            out=tmp_path / "fixtures" / "cart-exception",
            name="cart-exception",
            description="a live recording",
        )
        took = time.perf_counter() - t0
        samples, _ = read_metrics(prom.url, start, end)
    assert took < 10
    assert sorted(p.name for p in out.iterdir()) == [
        "logs.otlp.jsonl.gz", "metrics.om.gz", "scenario.json", "traces.otlp.jsonl.gz",
    ]  # fmt: skip
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no staging left"
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask, "not private like a temporary folder"
    bundle = read_bundle(out)
    metrics = bundle.metrics
    # Families typed from what Prometheus learned from the target, help kept.
    assert metrics.types["shop_requests"] == "counter"
    assert metrics.types["shop_request_duration_seconds"] == "histogram"
    assert metrics.types["shop_payload_bytes"] == "summary"
    assert metrics.types["shop_queue_depth"] == "gauge"
    assert metrics.types["up"] == "gauge", "Prometheus' own scrape series"
    assert metrics.help["shop_requests"] == "Requests served"
    names = set(metrics.names)
    assert {"shop_requests_total", "shop_request_duration_seconds_bucket", "up"} <= names
    assert "shop_flat" not in names, "a gauge zero throughout is left out"
    assert not [n for n in names if n.startswith("prometheus_")], "the monitoring's own job"
    assert not [n for n in names if n.endswith("_created")]
    errors = [
        s for s in metrics.series if s.name == "shop_requests_total" and s.get("code") == "500"
    ]
    (err,) = errors
    assert err.values[-1] >= 3 and np.all(np.diff(err.values) >= 0)
    assert (np.diff(err.ts) > 0.5).all() and err.ts[0] >= start and err.ts[-1] <= end
    # Every sample Prometheus holds in the window is in the bundle (none of the flat ones).
    kept = [s for s in samples if s.name != "shop_flat"]
    assert metrics.sample_count == sum(len(s.points) for s in kept)
    # The same file backfills a real Prometheus.
    lab.backfill_tsdb(out / "metrics.om.gz", tmp_path / "tsdb")
    # Spans and logs clipped to the window; the alert exactly as Alertmanager gave it.
    assert len(bundle.spans) == 80 and bundle.spans["start"].max() <= end
    assert (bundle.logs["severity"] >= 17).sum() == 20
    doc = json.loads((out / "scenario.json").read_text())
    assert doc["alerts"] == alerts
    assert doc["truth"]["cause"] == "code_fault" and doc["truth"]["kind"] == "exception"
    assert abs(parse_time(doc["window"]["start"]) - start) < 0.01
    # And it investigates.
    fingerprint = alerts[0]["fingerprint"]
    result = tmp_path / "report.json"
    code = cli_main(
        ["investigate", fingerprint, "--source", str(out), "--format", "json", "-o", str(result)]
    )
    assert code == 0
    report = json.loads(result.read_text())
    assert report["alert"]["fingerprint"] == fingerprint
    assert report["findings"], "the engine found something to rank"
    # Compact: the data files are gzip (and small here).
    assert all(p.read_bytes()[:2] == b"\x1f\x8b" for p in out.glob("*.gz"))
    assert sum(p.stat().st_size for p in out.iterdir()) < 200_000


# --------------------------------------------------------------------------- bad input


def test_recording_without_a_demo_says_how_to_start_one(tmp_path: Path) -> None:
    from correlator.demo.record import record_incident
    from correlator.errors import UserInputError

    with pytest.raises(UserInputError, match=r"no demo runs from .*correlator demo up"):
        record_incident(tmp_path, "exception", "cart", out_dir=tmp_path / "out")
    state = {"prometheus_url": "http://127.0.0.1:9", "alertmanager_url": "x", "services": {}}
    (tmp_path / "state.json").write_text(json.dumps({**state, "services": {"cart": {}}}))
    with pytest.raises(UserInputError, match=r"unknown fault kind 'meteor'; kinds: exception, "):
        record_incident(tmp_path, "meteor", "cart", out_dir=tmp_path / "out")
    with pytest.raises(UserInputError, match=r"no service 'till' in the demo; services: cart"):
        record_incident(tmp_path, "exception", "till", out_dir=tmp_path / "out")
    (tmp_path / "faults.jsonl").write_text(
        json.dumps({"id": "1", "kind": "cpu_hog", "service": "cart", "cleared_at": None}) + "\n"
    )
    with pytest.raises(UserInputError, match=r"a fault is active \(cpu_hog on cart\)"):
        record_incident(tmp_path, "exception", "cart", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_plan_file_is_checked(tmp_path: Path) -> None:
    from correlator.demo.record import all_plan, fault_kinds, load_plan
    from correlator.errors import UserInputError

    plan = tmp_path / "plan.yaml"
    plan.write_text("- {kind: exception, service: cart}\n- {kind: latency, service: frontend}\n")
    assert [p["service"] for p in load_plan(plan)] == ["cart", "frontend"]
    plan.write_text("kind: exception\n")
    with pytest.raises(UserInputError, match="give a list of"):
        load_plan(plan)
    with pytest.raises(UserInputError, match="cannot read"):
        load_plan(tmp_path / "missing.yaml")
    services = {s: {} for s in ("frontend", "cart", "catalog", "checkout", "payment")}
    steps = all_plan({"services": services})
    assert {s["kind"] for s in steps} == set(fault_kinds())
    assert all(len([s for s in steps if s["kind"] == k]) == 3 for k in fault_kinds())
    assert {s["service"] for s in steps} == set(services), "every service gets a fault"


# --------------------------------------------------------------------------- the recorded library

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"


@pytest.mark.parametrize("bundle", sorted(DEMO.glob("demo-*")), ids=lambda p: p.name)
def test_recorded_demo_bundles_are_valid(bundle: Path) -> None:
    from correlator.bundle import validate_bundle

    assert validate_bundle(bundle) == []
    read = read_bundle(bundle)
    truth = read.truth or {}
    assert {"service", "cause", "start", "kind"} <= set(truth)
    assert read.window[0] < parse_time(truth["start"]) < read.window[1]
    assert not read.spans.empty and read.metrics.sample_count > 0
    assert read.alerts[0].starts_at >= parse_time(truth["start"]), "fired after the fault"
