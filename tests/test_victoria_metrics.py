"""PrometheusAdapter against a real VictoriaMetrics (Debian victoria-metrics) as a second PromQL backend."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from correlator.adapters.prometheus import PrometheusAdapter

from correlator.catalog import Catalog, Matcher, SignalSpec, default_catalog
from correlator.http import HttpSettings
from test_prometheus_adapter import FILLER, HOSTILE, SERVICES, WINDOW, write_metrics

pytest_plugins = ["servers"]


@pytest.fixture(scope="module")
def vm_url(victoria_metrics_server, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    path = write_metrics(tmp_path_factory.mktemp("om-vm") / "metrics.om")
    return str(victoria_metrics_server(path).url)


@pytest.fixture
def sent() -> list[httpx.Request]:
    return []


@pytest.fixture
def vm(vm_url: str, sent: list[httpx.Request]) -> Iterator[PrometheusAdapter]:
    with httpx.Client(event_hooks={"request": [sent.append]}) as client:
        # No probes and no uncatalogued series: one request per spec, as asserted below.
        yield PrometheusAdapter(
            HttpSettings(name="victoriametrics", url=vm_url),
            client,
            interval=60.0,
            generic=False,
            probe=False,
        )


def test_signals_match_prometheus_semantics(
    vm: PrometheusAdapter, sent: list[httpx.Request]
) -> None:
    catalog = default_catalog()
    frame = vm.signals(catalog, WINDOW, 60).frame
    assert len(sent) == len(list(catalog.all_specs()))
    req = frame[frame.role == "request_rate"].groupby("service")["value"].median()
    assert set(req.index) == set(SERVICES) | set(FILLER)
    assert req["checkout"] == pytest.approx(10.0, rel=0.02)
    assert req[HOSTILE] == pytest.approx(5.0, rel=0.02)
    mem = frame[frame.role == "memory"]
    assert set(mem.service) == {"checkout", "orders-db"}


def test_hostile_value_selects_only_its_series(vm: PrometheusAdapter) -> None:
    spec = SignalSpec(
        "request_rate", "traces_span_metrics_calls_total", "counter",
        matchers=(Matcher("service_name", "=", HOSTILE),),
    )  # fmt: skip
    frame = vm.signals(Catalog({"request_rate": (spec,)}), WINDOW, 60).frame
    assert set(frame.service) == {HOSTILE}
