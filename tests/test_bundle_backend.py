"""The bundle backend: PromQL-equivalent signals, alerts by prefix, logs, spans, topology."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from correlator.adapters.bundle import BundleBackend, default_library

from correlator.catalog import default_catalog
from correlator.errors import UserInputError
from correlator.fingerprint import alert_fingerprint
from correlator.model import SIGNAL_COLUMNS, Window
from correlator.openmetrics import Family, render
from correlator.sources import AlertSource, LogSource, MetricSource, TopologySource, TraceSource

T0 = 1772442000
N = 480  # two hours at 15 s
LABELS = {"alertname": "HighErrorRate", "service": "checkout"}
WINDOW = Window(start=T0 + 3600, end=T0 + 7200, baseline_start=T0)


def scenario(labels: dict[str, str] = LABELS) -> dict[str, Any]:
    return {
        "format": "correlator-scenario/1",
        "name": "t",
        "window": {"start": T0, "end": T0 + 7200},
        "alerts": [
            {
                "labels": labels,
                "startsAt": "2026-03-02T10:35:00Z",
                "fingerprint": alert_fingerprint(labels),
            }
        ],
    }


def families() -> list[Family]:
    calls = []
    for i in range(N):
        v = 2.0 * i if i < 200 else 2.0 * (i - 200) + 2  # the process restarted at i=200
        calls.append(
            (
                "calls_total",
                {"service_name": "checkout", "span_kind": "SPAN_KIND_SERVER"},
                T0 + 15 * i,
                v,
            )
        )
    buckets = []
    per_instance = {"1": (1, 3, 4, 4), "2": (0, 1, 4, 4)}  # increments per 15 s, by le
    for inst, incs in per_instance.items():
        for i in range(N):
            for le, inc in zip(("0.1", "0.5", "1", "+Inf"), incs, strict=True):
                buckets.append(
                    (
                        "req_seconds_bucket",
                        {"service": "api", "instance": inst, "le": le},
                        T0 + 15 * i,
                        inc * i,
                    )
                )
    micrometer = [
        (
            "http_server_requests_seconds_count",
            {"application": "shop", "status": status},
            T0 + 15 * i,
            rate * i,
        )
        for status, rate in (("500", 1), ("503", 2), ("200", 10))
        for i in range(N)
    ]
    memory = [
        (
            "container_memory_working_set_bytes",
            {"pod": pod, "container": container},
            T0 + 15 * i,
            value,
        )
        for pod, container, value in (
            ("payment-7d9f8b6c5d-x2k4q", "app", 100.0),
            ("payment-7d9f8b6c5d-x2k4q", "POD", 1e9),
            ("payment-7d9f8b6c5d-abcde", "app", 50.0),
        )
        for i in range(N)
    ]
    info = [
        (name, {"service": svc, "version": ver}, T0 + 15 * i, 1)
        for name, svc, ver in (
            ("checkout_build_info", "checkout", "1.2"),
            ("payment_build_info", "payment", "2.0"),
            ("payment_info", "nope", "9"),
        )
        for i in range(N)
    ]
    graph = [
        (
            "traces_service_graph_request_total",
            {"client": "frontend", "server": "checkout"},
            T0 + 15 * i,
            i,
        )
        for i in range(N)
    ]
    return [
        Family("calls", "counter", tuple(calls)),
        Family("req_seconds", "histogram", tuple(buckets)),
        Family("http_server_requests_seconds", "summary", tuple(micrometer)),
        Family("container_memory_working_set_bytes", "gauge", tuple(memory)),
        Family(
            "checkout_build_info", "gauge", tuple(x for x in info if x[0] == "checkout_build_info")
        ),
        Family(
            "payment_build_info", "gauge", tuple(x for x in info if x[0] == "payment_build_info")
        ),
        Family("payment_info", "gauge", tuple(x for x in info if x[0] == "payment_info")),
        Family("traces_service_graph_request", "counter", tuple(graph)),
    ]


CATALOG = {
    "signals": [
        {
            "role": "latency",
            "metric": "req_seconds",
            "kind": "histogram",
            "service_labels": ["service"],
        }
    ]
}


def span(
    tid: str,
    sid: str,
    parent: str | None,
    service: str,
    kind: int,
    status: int,
    start: int,
    dur: float,
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "traceId": tid,
        "spanId": sid,
        "name": "op",
        "kind": kind,
        "startTimeUnixNano": str(start * 10**9),
        "endTimeUnixNano": str(start * 10**9 + int(dur * 1e9)),
        "status": {"code": status},
    }
    if parent:
        s["parentSpanId"] = parent
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeSpans": [{"spans": [s]}],
            }
        ]
    }


def traces() -> list[dict[str, Any]]:
    out = []
    for n in range(5):
        tid = f"{n:032x}"
        start = T0 + 4000 + n
        failed = 2 if n == 3 else 0
        out.append(span(tid, f"{n:015x}a", None, "frontend", 3, failed, start, 0.1 * (n + 1)))
        out.append(span(tid, f"{n:015x}b", f"{n:015x}a", "checkout", 2, failed, start, 0.05))
    return out


def logs() -> list[dict[str, Any]]:
    recs = [
        {
            "timeUnixNano": str((T0 + 4000 + i) * 10**9),
            "severityNumber": sev,
            "body": {"stringValue": f"m{i}"},
        }
        for i, sev in enumerate((9, 13, 17, 17))
    ]
    return [
        {
            "resourceLogs": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": "checkout"}}
                        ]
                    },
                    "scopeLogs": [{"logRecords": recs}],
                }
            ]
        }
    ]


@pytest.fixture
def backend(tmp_path: Path) -> BundleBackend:
    from correlator.bundle import write_bundle

    write_bundle(
        tmp_path / "one",
        scenario(),
        render(families()),
        logs=logs(),
        traces=traces(),
        topology={
            "nodes": [{"id": "orders-db", "kind": "database"}],
            "edges": [{"source": "checkout", "target": "orders-db"}],
        },
        catalog=CATALOG,
    )
    return BundleBackend(tmp_path / "one")


def _series(df: Any, role: str, service: str) -> Any:
    return df[(df["role"] == role) & (df["service"] == service)]


def test_protocols(backend: BundleBackend) -> None:
    for proto in (AlertSource, MetricSource, LogSource, TraceSource, TopologySource):
        assert isinstance(backend, proto)


def test_counter_rate_survives_reset(backend: BundleBackend) -> None:
    df = backend.signals(default_catalog(), WINDOW, 60).frame
    assert tuple(df.columns) == SIGNAL_COLUMNS
    rate = _series(df, "request_rate", "checkout")
    full = rate[rate["ts"] >= T0 + 240]
    assert len(rate) == 120 and len(full) == 117  # the first rate needs two samples (T0+60)
    assert full["value"].min() == pytest.approx(2 / 15) and full["value"].max() == pytest.approx(
        2 / 15
    )


def test_histogram_quantile_matches_hand_computation(backend: BundleBackend) -> None:
    df = backend.signals(default_catalog(), WINDOW, 60).frame
    lat = _series(df, "latency", "api")
    # Summed bucket rates per 15 s: le 0.1 -> 1, 0.5 -> 4, 1 -> 8, +Inf -> 8.
    # p95 rank 7.6 falls in (0.5, 1]: 0.5 + 0.5 * (7.6 - 4) / (8 - 4) = 0.95.
    assert lat["value"].iloc[-1] == pytest.approx(0.95)


def test_regex_matchers(backend: BundleBackend) -> None:
    df = backend.signals(default_catalog(), WINDOW, 60).frame
    errors = _series(df, "error_rate", "shop")
    assert errors["value"].iloc[-1] == pytest.approx(3 / 15)  # status =~ "5..": 500 + 503
    assert _series(df, "request_rate", "shop")["value"].iloc[-1] == pytest.approx(13 / 15)
    versions = df[df["role"] == "version"]
    assert set(zip(versions["service"], versions["version"], strict=True)) == {
        ("checkout", "1.2"),
        ("payment", "2.0"),
    }


def test_pod_name_attribution(backend: BundleBackend) -> None:
    df = backend.signals(default_catalog(), WINDOW, 60).frame
    mem = _series(df, "memory", "payment")
    assert set(mem["pod"]) == {"payment-7d9f8b6c5d-x2k4q", "payment-7d9f8b6c5d-abcde"}
    by_pod = mem.groupby("pod")["value"].max()
    assert by_pod["payment-7d9f8b6c5d-x2k4q"] == 100.0  # the POD container is excluded


def test_grid_and_queries(backend: BundleBackend) -> None:
    result = backend.signals(default_catalog(), WINDOW, 60)
    ts = sorted(set(result.frame["ts"]))
    assert ts[0] == T0 and ts[-1] == T0 + 7200 and ts[1] - ts[0] == 60
    assert result.step == 60 and result.interval == 15 and not result.warnings
    # The bundle's own catalog (catalog.json) names the series of its roles; the rate range
    # follows the data's 15 s interval: max(step + 15 s, 4 * 15 s) at step 60 s.
    assert result.queries["latency"].startswith(
        "histogram_quantile(0.95, sum by (le, service) (rate(req_seconds_bucket"
        '{service!=""}[75s]))) or '
    )
    q = result.queries["error_rate"]
    assert 'status_code="STATUS_CODE_ERROR"' in q


def test_alert_prefix_and_ambiguity(tmp_path: Path) -> None:
    from correlator.bundle import write_bundle

    for name in ("a", "b"):
        write_bundle(tmp_path / name, scenario(), render(families()))
    other = {"alertname": "Other", "service": "x"}
    write_bundle(tmp_path / "c", scenario(other), render(families()))
    be = BundleBackend(tmp_path)
    assert len(be.alerts()) == 3
    fp = alert_fingerprint(other)
    found = be.alert(fp[:6].upper())
    assert found is not None and found.fingerprint == fp
    assert be.bundle_for(found).path == tmp_path / "c"
    with pytest.raises(UserInputError, match="too short: give at least 6 characters"):
        be.alert(fp[:5])
    assert be.alert("ffffffffffff") is None
    with pytest.raises(UserInputError, match="ambiguous") as info:
        be.alert(alert_fingerprint(LABELS)[:8])
    assert "(HighErrorRate, a)" in str(info.value) and "(HighErrorRate, b)" in str(info.value)


def test_logs_spans_edges(backend: BundleBackend) -> None:
    logs_df = backend.logs(WINDOW)
    assert logs_df["severity"].tolist() == [13, 17, 17]
    # Over the limit a period keeps evenly spaced records/traces, not the worst ones first
    # (detectors compare the periods like with like), and says what it left out.
    cut = backend.logs(WINDOW, min_severity=17, limit=1)
    assert cut["body"].tolist() == ["m2"]
    assert cut.attrs["warnings"] == [
        "logs: 1 of 2 records in the window kept (limit 1), evenly spaced in time"
    ]
    spans = backend.spans(WINDOW, limit=2)
    assert set(spans["trace_id"]) == {f"{0:032x}", f"{2:032x}"}
    assert "3 of 5" not in spans.attrs["warnings"][0] and "2 of 5" in spans.attrs["warnings"][0]
    edges, kinds = backend.edges(WINDOW)
    assert ("checkout", "orders-db") in edges and ("frontend", "checkout") in edges
    assert kinds["orders-db"] == "database" and kinds["frontend"] == "service"


def test_default_library_is_the_scenarios_package() -> None:
    root = default_library()
    assert (root / "__init__.py").exists()
    assert root.resolve() == (Path(__file__).parents[1] / "fixtures" / "scenarios").resolve()
    json.dumps([str(p) for p in BundleBackend().bundles()])  # reads whatever ships


def test_pod_gone_before_the_window_is_left_out(tmp_path: Path) -> None:
    """A pod whose samples all end before the look-back (replaced long ago) has no
    point to keep; its name must not break the frame (it once raised KeyError)."""
    from correlator.bundle import write_bundle

    gone = Family(
        "container_memory_working_set_bytes",
        "gauge",
        tuple(
            ("container_memory_working_set_bytes", {"pod": pod, "container": "app"}, T0 + 15 * i, v)
            for pod, v, last in (
                ("payment-5c4b3a2f1e-oldpd", 70.0, 10),
                ("payment-7d9f8b6c5d-x2k4q", 100.0, N),
            )
            for i in range(last)
        ),
    )
    write_bundle(tmp_path / "gone", scenario(), render([gone]))
    window = Window(start=T0 + 3600, end=T0 + 7200, baseline_start=T0 + 1800)
    df = BundleBackend(tmp_path / "gone").signals(default_catalog(), window, 60).frame
    mem = _series(df, "memory", "payment")
    assert set(mem["pod"]) == {"payment-7d9f8b6c5d-x2k4q"}
    assert mem["value"].max() == 100.0 and mem["ts"].min() >= T0 + 1800
