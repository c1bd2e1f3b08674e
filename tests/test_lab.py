"""correlator.lab: bundle backfill, alert preparation and run_lab with real servers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from correlator.adapters.alertmanager import AlertmanagerAdapter

from correlator import lab
from correlator.fingerprint import alert_fingerprint
from test_prometheus_adapter import T0, write_metrics


def test_openmetrics_to_prometheus_text_uses_milliseconds() -> None:
    text = io.StringIO(
        "# TYPE x counter\n"
        'x_total{a="q # }"} 3 1767225600.5\n'
        'y 1.5 1767225601 # {trace_id="1"} 1 1767225601\n'
        "# EOF\n"
    )
    assert list(lab.openmetrics_to_prometheus_text(text)) == [
        'x_total{a="q # }"} 3 1767225600500\n',
        "y 1.5 1767225601000\n",
    ]


def test_prepare_alerts_keeps_labels_and_start_and_moves_end_ahead() -> None:
    raw = [{"labels": {"alertname": "A"}, "startsAt": "2026-03-02T10:33:00Z",
            "endsAt": "2026-03-02T10:50:00Z", "fingerprint": "x", "status": {"state": "active"}},
           {"labels": {"alertname": "B"}, "annotations": {"summary": "s"},
            "startsAt": "2026-03-02T10:34:00Z", "endsAt": "0001-01-01T00:00:00Z"}]  # fmt: skip
    out = lab.prepare_alerts(raw, now=2_000_000_000)
    # The bundle's end survives as an annotation, which the adapter reads as the end.
    assert out == [{"labels": {"alertname": "A"},
                    "annotations": {"correlator_ends_at": "2026-03-02T10:50:00Z"},
                    "endsAt": "2033-05-19T03:33:20Z", "startsAt": "2026-03-02T10:33:00Z"},
                   {"labels": {"alertname": "B"}, "annotations": {"summary": "s"},
                    "endsAt": "2033-05-19T03:33:20Z", "startsAt": "2026-03-02T10:34:00Z"}]  # fmt: skip


def test_missing_bundle_parts_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(lab.UserInputError, match=r"no metrics\.om"):
        lab.bundle_metrics_file(tmp_path)


@pytest.mark.prometheus
@pytest.mark.alertmanager
def test_run_lab_serves_metrics_and_alerts(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    write_metrics(bundle / "metrics.om")
    labels = {"alertname": "HighErrorRate", "service": "checkout"}
    alert = {"labels": labels, "annotations": {}, "startsAt": "2026-01-01T00:30:00Z",
             "endsAt": "2026-01-01T00:40:00Z", "fingerprint": alert_fingerprint(labels)}  # fmt: skip
    (bundle / "scenario.json").write_text(json.dumps({"alerts": [alert]}))
    with lab.run_lab(bundle) as urls:
        assert urls.alerts == (alert_fingerprint(labels),)
        r = httpx.post(
            urls.prometheus + "/api/v1/query",
            data={
                "query": 'count(traces_span_metrics_calls_total{service_name="checkout"})',
                "time": str(T0 + 600),
            },
        )
        assert r.json()["data"]["result"][0]["value"][1] == "2"
        am = AlertmanagerAdapter(urls.alertmanager)
        found = am.alert(alert_fingerprint(labels)[:6])
        am.close()
        assert found is not None and found.labels == labels
        # The bundle's times, not Alertmanager's renewal deadline a day ahead.
        assert (found.starts_at, found.ends_at) == (T0 + 1800, T0 + 2400)
        prom_url = urls.prometheus
    with pytest.raises(httpx.ConnectError):
        httpx.get(prom_url + "/-/ready")


def test_free_ports_are_distinct_and_outside_the_outgoing_range() -> None:
    # Ports picked before their servers start must not be taken in between by
    # an outgoing connection (those get ephemeral ports) or handed out twice.
    low = lab._ephemeral_low()
    ports = [lab._free_port() for _ in range(60)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < low for p in ports)
