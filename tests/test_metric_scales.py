"""What metric series reach the engine: scales learned from the data, catalog breadth, and
series no role knows (role ``series``), through the bundle backend and a real Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from correlator.adapters.bundle import BundleBackend
from correlator.adapters.prometheus import PrometheusAdapter

from correlator import promql
from correlator.bundle import write_bundle
from correlator.catalog import default_catalog
from correlator.fingerprint import alert_fingerprint
from correlator.http import HttpSettings
from correlator.model import Window
from correlator.openmetrics import Family, render

pytest_plugins = ["servers"]

T0 = 1_772_442_000
LABELS = {"alertname": "HighLatency", "service": "frontend"}
Sample = tuple[str, dict[str, str], float, float]


def scenario(span: float) -> dict[str, Any]:
    return {
        "format": "correlator-scenario/1",
        "name": "scales",
        "window": {"start": T0, "end": T0 + span},
        "alerts": [
            {
                "labels": LABELS,
                "startsAt": "2026-03-02T10:35:00Z",
                "fingerprint": alert_fingerprint(LABELS),
            }
        ],
    }


def times(interval: float, span: float, jitter: float = 0.0) -> list[float]:
    """Scrape instants every ``interval`` over ``span``, with a gap and optional jitter."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(int(span // interval) + 1):
        if i == 40:
            continue  # a missed scrape: the interval must not move, no rate may go missing
        out.append(T0 + i * interval + (rng.uniform(-jitter, jitter) if i else 0.0))
    return out


def families(interval: float, span: float) -> list[Family]:
    """A shop at one scrape interval: spanmetrics, a Micrometer summary, per-container
    cAdvisor series without pods, and series no catalog role knows."""
    ts = times(interval, span, jitter=0.02 * interval)
    calls: list[Sample] = []
    for svc, rate in (("frontend", 10.0), ("cart", 4.0)):
        for t in ts:
            labels = {"service_name": svc, "span_kind": "SPAN_KIND_SERVER"}
            calls.append(("calls_total", labels, t, rate * (t - T0)))
            client = {"service_name": svc, "span_kind": "SPAN_KIND_CLIENT"}
            calls.append(("calls_total", client, t, 2 * rate * (t - T0)))
    summary: list[Sample] = []
    for q, value in (("0.5", 0.010), ("0.95", 0.040), ("0.99", 0.080)):
        for t in ts:
            labels = {"application": "orders", "uri": "/o", "quantile": q}
            summary.append(("http_server_requests_seconds", labels, t, value))
    for t in ts:
        summary.append(("http_server_requests_seconds_count", {"application": "orders"}, t, t - T0))
        summary.append(("http_server_requests_seconds_sum", {"application": "orders"}, t, t - T0))
    memory: list[Sample] = [
        ("container_memory_usage_bytes", {"container": c, "id": f"/docker/{c}"}, t, v)
        for c, v in (("cart", 3e8), ("orders", 5e8))
        for t in ts
    ]
    # cAdvisor before Kubernetes 1.16: ``container_name``/``pod_name``, and the pause
    # container "POD" beside it (no service of its own).
    memory += [
        ("container_memory_working_set_bytes", {"container_name": c, "pod_name": "wishlist-7f-x"},
         t, v)
        for c, v in (("wishlist", 2e8), ("POD", 1e6))
        for t in ts
    ]  # fmt: skip
    cpu: list[Sample] = [
        ("container_cpu_usage_seconds_total", {"container": "cart"}, t, 0.25 * (t - T0)) for t in ts
    ]
    cpu += [
        ("container_cpu_usage_seconds_total", {"container_name": "wishlist"}, t, 0.5 * (t - T0))
        for t in ts
    ]
    # Known to no role: a counter, a gauge, a histogram (and info series to skip).
    queue: list[Sample] = [
        ("shop_queue_jobs_total", {"service": "cart", "instance": i}, t, 3.0 * (t - T0))
        for i in ("a", "b")
        for t in ts
    ]
    pool: list[Sample] = [("shop_pool_active", {"service": "cart"}, t, 7.0) for t in ts]
    waits: list[Sample] = []
    for le, share in (("0.1", 0.5), ("1", 0.98), ("+Inf", 1.0)):
        for t in ts:
            waits.append(
                ("shop_wait_seconds_bucket", {"app": "cart", "le": le}, t, share * (t - T0))
            )
    for t in ts:
        waits.append(("shop_wait_seconds_count", {"app": "cart"}, t, t - T0))
        waits.append(("shop_wait_seconds_sum", {"app": "cart"}, t, 0.2 * (t - T0)))
    nameless: list[Sample] = [("shop_orphans", {"zone": "z1"}, t, 1.0) for t in ts]
    return [
        Family("calls", "counter", tuple(calls)),
        Family("http_server_requests_seconds", "summary", tuple(summary)),
        Family(
            "container_memory_usage_bytes", "gauge", tuple(m for m in memory if "usage" in m[0])
        ),
        Family(
            "container_memory_working_set_bytes",
            "gauge",
            tuple(m for m in memory if "usage" not in m[0]),
        ),
        Family("container_cpu_usage_seconds", "counter", tuple(cpu)),
        Family("shop_queue_jobs", "counter", tuple(queue)),
        Family("shop_pool_active", "gauge", tuple(pool)),
        Family("shop_wait_seconds", "histogram", tuple(waits)),
        Family("shop_orphans", "gauge", tuple(nameless)),
    ]


def bundle(dest: Path, interval: float, span: float) -> Path:
    return write_bundle(dest, scenario(span), render(families(interval, span)))


def window(span: float, before: float = 600.0) -> Window:
    """The last ``before`` seconds of the data, with everything earlier as the baseline."""
    return Window(start=T0 + span - before, end=T0 + span, baseline_start=T0)


def by(frame: pd.DataFrame, role: str, service: str, detail: str | None = None) -> pd.DataFrame:
    rows = frame[(frame["role"] == role) & (frame["service"] == service)]
    if detail is not None:
        rows = rows[rows["detail"] == detail]
    return rows


# ----------------------------------------------------------------------------- time scales


@pytest.mark.parametrize(
    ("step", "interval", "expected"),
    [(15, 15, 60), (15, 60, 240), (60, 15, 75), (1, 1, 4), (2, 1, 4), (30, None, 120)],
)
def test_rate_range_is_grafanas_rate_interval(
    step: float, interval: float | None, expected: float
) -> None:
    assert promql.rate_range(step, interval) == expected


@pytest.mark.parametrize(
    ("span", "interval", "expected"),
    [
        (900, 1, 1),  # 1 s data over 15 min: every sample
        (4500, 1, 4),  # 75 min of 1 s data: bounded, a whole multiple of the interval
        (4500, 15, 15),
        (4500, 60, 60),  # never finer than the data
        (30 * 86400, 60, 1740),
        (4500, None, 15),
    ],
)
def test_step_follows_the_interval_and_bounds_the_points(
    span: float, interval: float | None, expected: float
) -> None:
    step = promql.choose_step(span, interval)
    assert step == expected
    assert span / step <= promql.MAX_POINTS


def test_sample_interval_is_robust_to_gaps_and_jitter() -> None:
    arrays = [np.array(times(60, 7200, jitter=1.5)), np.array(times(60, 3600))]
    assert promql.sample_interval(arrays) == 60.0
    assert promql.sample_interval([np.array([T0])]) is None


@pytest.mark.parametrize(("interval", "step"), [(1.0, 1.0), (15.0, 15.0), (60.0, 15.0)])
def test_bundle_learns_the_interval_and_rates_are_never_empty(
    tmp_path: Path, interval: float, step: float
) -> None:
    span = 900.0 if interval == 1 else 7200.0
    backend = BundleBackend(bundle(tmp_path / "b", interval, span))
    w = window(span, before=300.0 if interval == 1 else 600.0)
    assert backend.interval(w) == interval
    result = backend.signals(default_catalog(), w, step)
    frame = result.frame
    assert result.interval == interval and result.step == step
    rate = by(frame, "request_rate", "frontend")
    grid = np.arange(w.baseline_start, w.end + step / 2, step)
    # Every grid point past the first rate range has a rate (the gap included) ...
    settled = grid[grid >= w.baseline_start + promql.rate_range(step, interval)]
    assert set(settled) <= set(rate["ts"])
    # ... and it is the true rate (10/s), not an artefact of a too-short range.
    assert rate["value"].median() == pytest.approx(10.0, rel=0.05)


def test_the_old_fixed_range_left_60s_rates_empty(tmp_path: Path) -> None:
    """What the learned interval fixes: ``max(4 * step, 60 s)`` at step 15 s on 60 s data."""
    from correlator.adapters import bundle as bundle_module

    backend = BundleBackend(bundle(tmp_path / "b", 60.0, 7200.0))
    w = window(7200.0)
    learned = backend.signals(default_catalog(), w, 15.0).frame
    metrics = backend.bundles()[0].metrics_for(None)
    spec = default_catalog().specs("request_rate")[1]  # calls_total
    plan = bundle_module._plan(metrics, spec)
    grid = np.arange(w.baseline_start, w.end + 7.5, 15.0)
    old = bundle_module._rates(metrics, plan, grid, 60.0)
    assert np.mean(~np.isnan(old)) < 0.5
    assert len(by(learned, "request_rate", "frontend")) >= 0.95 * len(grid)


# ----------------------------------------------------------------------------- catalog breadth


def test_summary_quantiles_are_latency(tmp_path: Path) -> None:
    backend = BundleBackend(bundle(tmp_path / "b", 15.0, 7200.0))
    frame = backend.signals(default_catalog(), window(7200.0), 15.0).frame
    latency = by(frame, "latency", "orders")
    assert len(latency) and latency["value"].median() == pytest.approx(0.080)  # the p99
    assert by(frame, "request_rate", "orders")["value"].median() == pytest.approx(1.0, rel=0.02)


def test_container_label_names_the_service_without_pods(tmp_path: Path) -> None:
    backend = BundleBackend(bundle(tmp_path / "b", 15.0, 7200.0))
    frame = backend.signals(default_catalog(), window(7200.0), 15.0).frame
    memory = frame[frame["role"] == "memory"]
    assert set(memory["service"]) == {"cart", "orders", "wishlist"}
    assert by(frame, "memory", "orders")["value"].median() == 5e8
    assert by(frame, "cpu", "cart")["value"].median() == pytest.approx(0.25, rel=0.02)
    # The old cAdvisor labels: the container is the service, its pause container is not.
    assert by(frame, "memory", "wishlist")["value"].median() == 2e8
    assert by(frame, "cpu", "wishlist")["value"].median() == pytest.approx(0.5, rel=0.02)


def test_default_catalog_knows_the_common_runtimes_and_protocols() -> None:
    cat = default_catalog()
    metrics = {s.metric for s in cat.all_specs()}
    for needed in (
        "container_memory_usage_bytes",
        "container_memory_rss",
        "container_memory_cache",
        "container_cpu_cfs_throttled_seconds_total",
        "container_network_receive_bytes_total",
        "http_server_duration_milliseconds",
        "http_server_request_duration_seconds",
        "rpc_server_duration_milliseconds",
        "http_client_request_duration_seconds",
        "grpc_server_handled_total",
        "jvm_gc_pause_seconds_sum",
        "jvm_memory_used_bytes",
        "go_goroutines",
        "process_open_fds",
    ):
        assert needed in metrics, needed
    errors = {(m.label, m.op, m.value) for s in cat.specs("error_rate") for m in s.matchers}
    assert ("outcome", "=", "SERVER_ERROR") in errors
    assert ("grpc_code", "!~", "OK|") in errors
    assert ("rpc_grpc_status_code", "!~", "0|") in errors


# ----------------------------------------------------------------------------- no catalog


def test_uncatalogued_series_reach_the_frame_as_series(tmp_path: Path) -> None:
    backend = BundleBackend(bundle(tmp_path / "b", 15.0, 7200.0))
    frame = backend.signals(default_catalog(), window(7200.0), 15.0).frame
    generic = frame[frame["role"] == "series"]
    details = set(zip(generic["service"], generic["detail"], strict=True))
    # A counter as a per-second rate summed over instances, a gauge as its value, a
    # histogram as its p95 and its _count as a rate; _sum and nameless series are not sent.
    assert by(frame, "series", "cart", "shop_queue_jobs_total")["value"].median() == (
        pytest.approx(6.0, rel=0.02)
    )
    assert by(frame, "series", "cart", "shop_pool_active")["value"].median() == 7.0
    p95 = by(frame, "series", "cart", "shop_wait_seconds")["value"].median()
    assert 0.1 < p95 < 1.0
    assert by(frame, "series", "cart", "shop_wait_seconds_count")["value"].median() == (
        pytest.approx(1.0, rel=0.02)
    )
    assert ("cart", "shop_wait_seconds_sum") not in details
    assert not any(d == "shop_orphans" for _, d in details)
    # What a role already took is not sent twice (spanmetrics, cAdvisor, the summary).
    assert not any(
        d.startswith(("calls_total", "container_", "http_server_requests")) for _, d in details
    )


# ----------------------------------------------------------------------------- Prometheus


@pytest.fixture(scope="module")
def prom60(prometheus_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = bundle(tmp_path_factory.mktemp("b60") / "b", 60.0, 7200.0)
    yield str(prometheus_server(path / "metrics.om").url)


@pytest.mark.prometheus
def test_prometheus_learns_the_interval_from_the_data(prom60: str) -> None:
    adapter = PrometheusAdapter(HttpSettings(name="prometheus", url=prom60))
    try:
        w = window(7200.0)
        assert adapter.interval(w, default_catalog()) == 60.0
        result = adapter.signals(default_catalog(), w, 15.0)
    finally:
        adapter.close()
    frame = result.frame
    assert result.interval == 60.0
    assert "[240s]" in result.queries["request_rate"]  # max(15 + 60, 4 * 60)
    rate = by(frame, "request_rate", "frontend")
    assert len(rate) >= 0.95 * len(np.arange(w.baseline_start, w.end + 7.5, 15.0))
    assert rate["value"].median() == pytest.approx(10.0, rel=0.05)


@pytest.mark.prometheus
def test_prometheus_and_bundle_send_the_same_series(prom60: str, tmp_path: Path) -> None:
    w = window(7200.0)
    adapter = PrometheusAdapter(HttpSettings(name="prometheus", url=prom60))
    try:
        remote = adapter.signals(default_catalog(), w, 60.0).frame
    finally:
        adapter.close()
    local = (
        BundleBackend(bundle(tmp_path / "b", 60.0, 7200.0))
        .signals(default_catalog(), w, 60.0)
        .frame
    )
    keys = ["role", "service", "detail", "ts"]

    def table(frame: pd.DataFrame) -> pd.DataFrame:
        f = frame[frame["role"] == "series"][[*keys, "value"]].astype({"detail": str})
        return f.astype({"role": str, "service": str}).sort_values(keys).reset_index(drop=True)

    got, want = table(remote), table(local)
    assert len(want) > 0
    pd.testing.assert_frame_equal(got[keys], want[keys])
    assert got["value"].to_numpy() == pytest.approx(want["value"].to_numpy(), rel=1e-9)


@pytest.fixture
def scraping(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping itself every second (no backfill): a live setup."""
    import socket
    import subprocess
    import time

    import httpx

    from correlator import lab

    if not Path(lab.PROMETHEUS_BIN).exists():
        pytest.skip("prometheus is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    )
    proc = subprocess.Popen(
        [
            lab.PROMETHEUS_BIN,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=error",
        ]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.prometheus
def test_prometheus_interval_from_live_scrapes_and_the_targets_api(scraping: str) -> None:
    import time

    adapter = PrometheusAdapter(HttpSettings(name="prometheus", url=scraping))
    try:
        started = time.monotonic()
        while not adapter.instant("up") and time.monotonic() - started < 30:
            time.sleep(0.5)  # service discovery takes a few seconds to hand over the target
        # Long before any data: only the targets API can tell (scrapeInterval "1s").
        assert adapter.interval(Window(start=T0, end=T0 + 60, baseline_start=T0 - 600)) == 1.0
        time.sleep(11)
        now = time.time()
        w = Window(start=now, end=now, baseline_start=now - 10)
        # From the data: `up` is written once per scrape.
        rows = adapter.instant("count_over_time(up[10s])", at=now)
        assert rows and 9 <= rows[0][1] <= 11
        assert adapter.interval(w) == 1.0
    finally:
        adapter.close()
