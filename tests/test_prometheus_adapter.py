"""PrometheusAdapter against a real Prometheus 2.42 backfilled with promtool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from correlator.adapters.prometheus import (
    SERVICE_LABEL,
    PrometheusAdapter,
    choose_step,
    render_chain,
    render_promql,
)

from correlator.catalog import SERVICE_LABELS, Catalog, Matcher, SignalSpec, default_catalog
from correlator.escape import regex_alternation
from correlator.http import HttpSettings
from correlator.model import SIGNAL_COLUMNS, Window
from correlator.promql import render_generic

pytest_plugins = ["servers"]
pytestmark = pytest.mark.prometheus

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
SPAN = 3600
STEP = 15
HOSTILE = '"} or vector(1) # \\ \n.*'
#: Label values PromQL must quote exactly: a tab (escaped as \t) and a backslash followed
#: by "t" (two characters, not a tab), unicode, a closing brace and a quote.
AWKWARD = {
    "tab\there": 1.5,
    "back\\tslash": 2.5,
    "zürich ✓ 東京": 3.5,
    "brace}": 4.5,
    'quo"te': 5.5,
}
SERVICES = {"checkout": 10.0, "payment": 2.0, "a.b": 1.0, "aXb": 3.0, HOSTILE: 5.0, **AWKWARD}
FILLER = [f"svc-{i:03d}" for i in range(60)]


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_metrics(path: Path) -> Path:
    """Counters, a histogram and a per-pod gauge; every sample timestamped."""
    lines = ["# TYPE traces_span_metrics_calls counter"]
    rates = dict(SERVICES) | {s: 1.0 for s in FILLER}
    for svc, rate in rates.items():
        for status, share in (("STATUS_CODE_UNSET", 0.9), ("STATUS_CODE_ERROR", 0.1)):
            lbl = f'service_name="{_esc(svc)}",span_kind="SPAN_KIND_SERVER",status_code="{status}"'
            for i in range(SPAN // STEP + 1):
                lines.append(
                    f"traces_span_metrics_calls_total{{{lbl}}} {rate * share * STEP * i:g} {T0 + i * STEP}"
                )
    lines.append("# TYPE traces_span_metrics_duration_seconds histogram")
    for le in ("0.1", "0.5", "+Inf"):
        lbl = f'service_name="checkout",span_kind="SPAN_KIND_SERVER",le="{le}"'
        for i in range(SPAN // STEP + 1):
            lines.append(
                f"traces_span_metrics_duration_seconds_bucket{{{lbl}}} {10 * STEP * i} {T0 + i * STEP}"
            )
    lines.append("# TYPE container_memory_working_set_bytes gauge")
    for pod, value in (("checkout-7d9f8b6c5d-x2k4q", 100.0), ("orders-db-0", 50.0)):
        lbl = f'pod="{pod}",container="app",namespace="shop"'
        for i in range(SPAN // STEP + 1):
            lines.append(f"container_memory_working_set_bytes{{{lbl}}} {value:g} {T0 + i * STEP}")
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def prom(prometheus_server, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    path = write_metrics(tmp_path_factory.mktemp("om") / "metrics.om")
    return str(prometheus_server(path).url)


@pytest.fixture
def adapter(prom: str) -> Iterator[PrometheusAdapter]:
    # The catalog's roles only (the uncatalogued-series path has tests of its own).
    a = PrometheusAdapter(HttpSettings(name="prometheus", url=prom), generic=False)
    yield a
    a.close()


WINDOW = Window(start=T0 + 1800, end=T0 + 3000, baseline_start=T0 + 600)


def test_signals_gives_per_service_rates(prom: str, adapter: PrometheusAdapter) -> None:
    result = adapter.signals(default_catalog(), WINDOW, 60)
    frame = result.frame
    assert list(frame.columns) == list(SIGNAL_COLUMNS)
    req = frame[frame.role == "request_rate"].groupby("service")["value"].median()
    assert req["checkout"] == pytest.approx(10.0, rel=1e-6)
    assert req["payment"] == pytest.approx(2.0, rel=1e-6)
    assert req[HOSTILE] == pytest.approx(5.0, rel=1e-6)
    err = frame[frame.role == "error_rate"].groupby("service")["value"].median()
    assert err["checkout"] == pytest.approx(1.0, rel=1e-6)
    lat = frame[frame.role == "latency"]
    assert set(lat.service) == {"checkout"}
    assert lat.value.median() == pytest.approx(0.095, rel=1e-6)
    mem = frame[frame.role == "memory"]
    # Attributed from the pod name (Deployment and StatefulSet suffixes removed).
    assert set(mem.service) == {"checkout", "orders-db"}
    assert set(mem.pod) == {"checkout-7d9f8b6c5d-x2k4q", "orders-db-0"}
    ts = sorted(frame[frame.role == "request_rate"].ts.unique())
    assert ts[0] >= WINDOW.baseline_start - 60 and ts[-1] <= WINDOW.end
    assert "request_rate" in result.queries
    assert result.links["request_rate"].startswith(prom + "/graph?g0.expr=")
    assert result.step == 60 and result.warnings == ()


def test_one_request_per_spec_regardless_of_service_count(prom: str) -> None:
    sent: list[httpx.Request] = []
    catalog = default_catalog()
    with httpx.Client(event_hooks={"request": [sent.append]}) as client:
        adapter = PrometheusAdapter(HttpSettings(name="prometheus", url=prom), client)
        frame = adapter.signals(catalog, WINDOW, 60).frame
    assert frame[frame.role == "request_rate"].service.nunique() == len(SERVICES) + len(FILLER)
    # One range query per spec, two per service label for the uncatalogued series (their
    # sums and how many series each sum had), and
    # instant probes: for the sample interval, two picks (up, then catalog series) and
    # the raw samples of three series (or the targets API), the label names, and one
    # count of the uncatalogued series. None of it grows with the number of services.
    ranges = [r for r in sent if r.url.path == "/api/v1/query_range"]
    # (one per service label the data has, not per service label the catalog knows)
    partitions = render_generic(present=_label_names(prom))
    assert len(partitions) < len(SERVICE_LABELS)
    assert len(ranges) == len(list(catalog.all_specs())) + 2 * len(partitions)
    probes = [r for r in sent if r.url.path != "/api/v1/query_range"]
    assert len(probes) <= 8
    assert {r.url.path for r in probes} <= {"/api/v1/query", "/api/v1/targets", "/api/v1/labels"}


def _only(spec: SignalSpec) -> Catalog:
    return Catalog({spec.role: (spec,)})


@pytest.mark.parametrize("value", [HOSTILE, "a.b", "checkout", *AWKWARD])
def test_hostile_label_values_select_only_their_series(
    adapter: PrometheusAdapter, value: str
) -> None:
    spec = SignalSpec(
        "request_rate",
        "traces_span_metrics_calls_total",
        "counter",
        matchers=(
            Matcher("service_name", "=", value),
            Matcher("status_code", "=", "STATUS_CODE_UNSET"),
        ),
    )
    frame = adapter.signals(_only(spec), WINDOW, 60).frame
    assert set(frame.service) == {value}
    assert frame.value.median() == pytest.approx(SERVICES[value] * 0.9, rel=1e-6)


def test_the_adapter_sends_exactly_what_promql_renders(prom: str) -> None:
    """One renderer: the text on the wire is promql.render's, tab escaped as in PromQL."""
    from correlator import promql

    sent: list[httpx.Request] = []
    spec = SignalSpec(
        "request_rate",
        "traces_span_metrics_calls_total",
        "counter",
        matchers=(Matcher("service_name", "=", "tab\there"),),
    )
    with httpx.Client(event_hooks={"request": [sent.append]}) as client:
        adapter = PrometheusAdapter(
            HttpSettings(name="prometheus", url=prom), client, interval=15.0, generic=False
        )
        frame = adapter.signals(_only(spec), WINDOW, 60).frame
    assert set(frame.service) == {"tab\there"}
    present = _label_names(prom)
    rendered = promql.render(spec, 60, 15.0, present=present)
    assert present and "service_name" in present
    assert 'service_name="tab\\there"' in rendered and "\t" not in rendered  # no raw tab
    forms = [
        dict(httpx.QueryParams(r.content.decode()))
        for r in sent
        if r.url.path == "/api/v1/query_range"
    ]
    assert [f["query"] for f in forms] == [rendered]
    assert spec.selector() == promql.selector(spec)


def test_regex_matcher_escapes_metacharacters(prom: str, adapter: PrometheusAdapter) -> None:
    regex = regex_alternation(["a.b", HOSTILE])  # the spec quotes it when rendering
    spec = SignalSpec(
        "request_rate",
        "traces_span_metrics_calls_total",
        "counter",
        matchers=(Matcher("service_name", "=~", regex),),
    )
    frame = adapter.signals(_only(spec), WINDOW, 60).frame
    # "aXb" would match an unescaped "a.b"; ".*" in the hostile value would match all.
    assert set(frame.service) == {"a.b", HOSTILE}


def test_instant_query_and_query_for(prom: str, adapter: PrometheusAdapter) -> None:
    rows = adapter.instant(
        'sum by (service_name) (rate(traces_span_metrics_calls_total{service_name="payment"}[5m]))',
        at=T0 + 1800,
    )
    assert rows == [({"service_name": "payment"}, pytest.approx(2.0))]
    text = adapter.query_for(default_catalog(), "request_rate")
    assert text is not None and "traces_span_metrics_calls_total" in text
    assert SERVICE_LABEL in text


def test_choose_step_respects_point_limit() -> None:
    w = Window(start=0, end=30 * 86400, baseline_start=-86400)
    step = choose_step(w)
    assert (w.end - w.baseline_start) / step < 11_000
    assert choose_step(Window(start=0, end=600, baseline_start=-600)) == 15.0


def test_render_promql_shapes() -> None:
    counter = render_promql(default_catalog().specs("request_rate")[0], 60)
    # One partition per service label, in precedence order, then the pod name.
    assert counter.startswith(
        "sum by (service_name) (rate(traces_span_metrics_calls_total"
        '{span_kind="SPAN_KIND_SERVER",service_name!=""}[240s])) or sum by (service) ('
    )
    assert 'service_name="",service="",k8s_deployment_name="",' in counter
    assert 'app="",pod!=""' in counter  # the pod name before container and job
    assert counter.count("label_replace(") == 1  # only the pod partition needs a regex
    assert "[240s]" in counter  # promql.rate_range with the interval unknown: 4 * step
    istio = next(s for s in default_catalog().specs("latency") if s.source == "istio")
    hist = render_promql(istio, 30)
    assert hist.startswith("(histogram_quantile(0.95, sum by (le, destination_workload) (")
    assert hist.endswith(") * 0.001")
    chain = render_chain(istio, 30)
    assert chain.startswith("(histogram_quantile(0.95, sum by (le, correlator_service) (")
    assert chain.count("label_replace(") == 5


def _label_names(prom: str) -> frozenset[str] | None:
    """The label names the server has over ``WINDOW`` (as the adapter asks for them)."""
    import time

    probe = PrometheusAdapter(HttpSettings(name="prometheus", url=prom))
    try:
        return probe._labels(WINDOW.baseline_start, WINDOW.end, time.monotonic() + 30)
    finally:
        probe.close()
