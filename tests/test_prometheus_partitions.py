"""Service attribution by partition (render_promql) gives what the label_replace chain gives.

A real Prometheus 2.42 holds series whose service comes from different labels:
``service_name``, ``service`` only, or only a pod name (Deployment,
StatefulSet and odd pod names), with one service ("mixed") spread over all
three. :func:`render_promql` (partitioned, the query the adapter sends) and
:func:`render_chain` (one aggregation, every series through a ``label_replace``
chain) must give the same frame for every spec; where the partitions cannot be
combined client-side (a histogram quantile, an average) the adapter asks again
with the chain, once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from correlator.adapters.prometheus import (
    POD_REGEX,
    PrometheusAdapter,
    render_chain,
    render_promql,
)

from correlator.catalog import Catalog, Matcher, SignalSpec, service_from_pod
from correlator.http import HttpSettings
from correlator.model import SIGNAL_COLUMNS, Window

pytest_plugins = ["servers"]

T0 = 1_767_312_000  # 2026-01-02T00:00:00Z
SPAN = 3600
STEP = 15
WINDOW = Window(start=T0 + 1800, end=T0 + 3000, baseline_start=T0 + 600)
PODS = [
    "mixed-7d9f8b6c5d-x2k4q",
    "orders-db-0",
    "a-bbbbb-ccccc-ddddd",
    "-abcde-fghij",
    "web-1-abcde-fghij",
    "x-12",
    "plain",
    "line\nbreak-0",
]
KEYS = ["role", "service", "peer", "pod", "node", "zone", "version", "detail", "ts"]


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _lbl(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())


def write_metrics(path: Path) -> Path:
    """Counters, histograms and gauges whose service comes from different labels."""
    n = SPAN // STEP + 1
    lines = ["# TYPE calls counter"]
    callers = [
        ({"service_name": "mixed"}, 1.0),
        ({"service": "mixed"}, 2.0),
        ({"pod": "mixed-7d9f8b6c5d-x2k4q"}, 4.0),
        ({"service_name": "plain"}, 3.0),
        ({"job": "only-job", "service_name": ""}, 0.5),
        *[({"pod": pod}, 0.25) for pod in PODS[1:]],
    ]
    for labels, rate in callers:
        for i in range(n):
            lines.append(f"calls_total{{{_lbl(labels)}}} {rate * STEP * i:g} {T0 + i * STEP}")
    lines.append("# TYPE lat histogram")
    for labels, shares in (
        ({"service_name": "mixed"}, (8, 9, 10)),  # mostly fast
        ({"service": "mixed"}, (1, 2, 10)),  # mostly slow
        ({"service_name": "plain"}, (5, 9, 10)),
    ):
        for le, share in zip(("0.1", "0.5", "+Inf"), shares, strict=True):
            for i in range(n):
                lines.append(
                    f"lat_bucket{{{_lbl(labels | {'le': le})}}} {share * STEP * i} {T0 + i * STEP}"
                )
    lines.append("# TYPE mem gauge")
    gauges = [
        ({"service": "mixed", "pod": "mixed-7d9f8b6c5d-aaaaa"}, 100.0),
        ({"app": "mixed", "pod": "mixed-7d9f8b6c5d-bbbbb"}, 250.0),
        ({"pod": "mixed-7d9f8b6c5d-x2k4q"}, 40.0),
        *[({"pod": pod}, 10.0 + k) for k, pod in enumerate(PODS[1:])],
    ]
    for labels, value in gauges:
        for i in range(n):
            lines.append(f"mem{{{_lbl(labels)}}} {value:g} {T0 + i * STEP}")
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")
    return path


def _spec(kind: str, metric: str, agg: str = "sum", **kw: object) -> SignalSpec:
    return SignalSpec("x", metric, kind, agg=agg, **kw)  # type: ignore[arg-type]


SPECS = {
    "counter": _spec("counter", "calls_total", service_labels=("service_name", "service", "job")),
    "histogram": _spec("histogram", "lat", service_labels=("service_name", "service", "job")),
    "gauge-sum": _spec("gauge", "mem", service_labels=("service", "app")),
    "gauge-sum-per-pod": _spec("gauge", "mem", service_labels=("service", "app"), dims={"pod": "pod"}),
    "gauge-max": _spec("gauge", "mem", agg="max", service_labels=("service", "app")),
    "gauge-min": _spec("gauge", "mem", agg="min", service_labels=("service", "app")),
    "gauge-avg": _spec("gauge", "mem", agg="avg", service_labels=("service", "app")),
    "gauge-avg-per-pod": _spec("gauge", "mem", agg="avg", service_labels=("service", "app"), dims={"pod": "pod"}),
    "pod-only": _spec("gauge", "mem", agg="max", service_labels=(), matchers=(Matcher("service", "=", ""),)),
}  # fmt: skip
#: Specs whose "mixed" service spans partitions and cannot be combined client-side.
FALLBACK = {"histogram", "gauge-avg"}


@pytest.fixture(scope="module")
def prom(prometheus_server, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    return str(prometheus_server(write_metrics(tmp_path_factory.mktemp("om") / "m.om")).url)


@pytest.fixture
def adapter(prom: str) -> Iterator[PrometheusAdapter]:
    a = PrometheusAdapter(HttpSettings(name="prometheus", url=prom), generic=False)
    yield a
    a.close()


def _chain_frame(adapter: PrometheusAdapter, spec: SignalSpec) -> pd.DataFrame:
    """The spec through render_chain, shaped as the adapter shapes its frames."""
    from correlator.adapters.prometheus import _to_frame

    step = 60.0
    query = render_chain(spec, step, adapter.interval(WINDOW))
    series = adapter.query_range(query, WINDOW.baseline_start, WINDOW.end, step)
    frame = _to_frame(spec, series)
    assert frame is not None, "one aggregation never needs combining"
    return frame


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    blank = {c: "" for c in KEYS if c not in ("role", "service", "ts")}
    return frame.fillna(blank).sort_values(KEYS).reset_index(drop=True)


@pytest.mark.prometheus
@pytest.mark.parametrize("name", sorted(SPECS))
def test_partitioned_query_gives_what_the_chain_gives(
    adapter: PrometheusAdapter, name: str
) -> None:
    spec = SPECS[name]
    result = adapter.signals(Catalog({"x": (spec,)}), WINDOW, 60)
    frame = result.frame
    expected = _chain_frame(adapter, spec)
    assert len(expected), f"{name}: the chain finds data"
    assert "mixed" in set(frame.service)
    got, want = _sorted(frame), _sorted(expected)
    pd.testing.assert_frame_equal(got[KEYS], want[KEYS], check_dtype=False)
    assert got["value"].to_numpy() == pytest.approx(want["value"].to_numpy(), rel=1e-9)
    assert adapter.fallbacks == (1 if name in FALLBACK else 0)
    used = result.queries["x"]
    render = render_chain if name in FALLBACK else render_promql
    present = adapter._labels(WINDOW.baseline_start, WINDOW.end, time.monotonic() + 30)
    assert used == render(spec, 60.0, result.interval, present=present)


@pytest.mark.prometheus
def test_services_spread_over_partitions_add_up(adapter: PrometheusAdapter) -> None:
    frame = adapter.signals(Catalog({"x": (SPECS["counter"],)}), WINDOW, 60).frame
    rates = frame.groupby("service")["value"].median()
    assert rates["mixed"] == pytest.approx(1.0 + 2.0 + 4.0)
    assert rates["plain"] == pytest.approx(3.0 + 0.25), "service_name=plain and pod plain"
    assert rates["only-job"] == pytest.approx(0.5)
    assert rates["orders-db"] == pytest.approx(0.25)
    assert rates["-abcde-fghij"] == pytest.approx(0.25), "a pod name with no prefix is kept"
    mx = adapter.signals(Catalog({"x": (SPECS["gauge-max"],)}), WINDOW, 60).frame
    assert mx.groupby("service")["value"].median()["mixed"] == 250.0


@pytest.mark.prometheus
def test_one_request_per_spec_unless_a_fallback_is_needed(prom: str) -> None:
    sent: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [sent.append]}) as client:
        adapter = PrometheusAdapter(
            HttpSettings(name="prometheus", url=prom), client, interval=60.0, generic=False
        )
        adapter.signals(Catalog({"x": (SPECS["counter"], SPECS["gauge-max"])}), WINDOW, 60)
        ranges = [r for r in sent if r.url.path == "/api/v1/query_range"]
        assert len(ranges) == 2
        sent.clear()
        adapter.signals(Catalog({"x": (SPECS["histogram"],)}), WINDOW, 60)
        ranges = [r for r in sent if r.url.path == "/api/v1/query_range"]
        assert len(ranges) == 2, "the partitioned query, then the chain"
        assert len(sent) == 3, "and the label names, asked once per call"


def _chain_service(pod: str) -> str:
    """The label_replace chain on a pod name, in Python (RE2 and re agree on these)."""
    out = pod
    for rx in ("(?s)(.+)-[0-9]+", "(?s)(.+)-[0-9a-z]{5,10}-[0-9a-z]{5}"):
        m = re.fullmatch(rx, pod)
        if m:
            out = m.group(1)
    return out


@pytest.mark.parametrize(
    "pod",
    [*PODS, "a-1-2", "svc-abcdefghij-abcde", "svc-abcdefghijk-abcde", "svc-abcd-abcde",
     "svc-ABCDE-abcde", "7-12345-67890", "a--0", "a-0-0", "ä-abcde-fghij", "a-b\n-0"],
)  # fmt: skip
def test_one_pod_regex_equals_the_chain(pod: str) -> None:
    m = re.fullmatch(POD_REGEX, pod)
    assert m is not None
    assert m.group(1) == _chain_service(pod)


def test_pod_regex_agrees_with_service_from_pod_on_kubernetes_names() -> None:
    for pod in ("checkout-7d9f8b6c5d-x2k4q", "orders-db-0", "web-1-abcde-fghij", "plain"):
        m = re.fullmatch(POD_REGEX, pod)
        assert m is not None and m.group(1) == service_from_pod(pod)


def test_frames_have_the_signal_columns(adapter: PrometheusAdapter) -> None:
    frame = adapter.signals(Catalog({"x": (SPECS["gauge-sum-per-pod"],)}), WINDOW, 60).frame
    assert list(frame.columns) == list(SIGNAL_COLUMNS)
    assert set(frame[frame.service == "mixed"].pod) == {
        "mixed-7d9f8b6c5d-aaaaa",
        "mixed-7d9f8b6c5d-bbbbb",
        "mixed-7d9f8b6c5d-x2k4q",
    }
