"""AlertmanagerAdapter against a real Alertmanager 0.25 started by the fixture."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from correlator.adapters.alertmanager import AlertmanagerAdapter, AmbiguousFingerprintError

from correlator.fingerprint import alert_fingerprint
from correlator.http import HttpSettings
from correlator.lab import prepare_alerts
from correlator.sources import AlertSource, SourceError

pytest_plugins = ["servers"]
pytestmark = pytest.mark.alertmanager

ALERTS = [
    {
        "labels": {"alertname": "HighErrorRate", "service": "checkout", "severity": "page"},
        "annotations": {"summary": "checkout 5xx above 5%"},
        "startsAt": "2026-03-02T10:33:00Z",
        "endsAt": "2026-03-02T10:50:00Z",
    },
    {
        "labels": {"alertname": "HighLatency", "service": 'pay"ment\\', "severity": "warn"},
        "startsAt": "2026-03-02T10:34:00Z",
    },
]


@pytest.fixture
def am(alertmanager_server) -> Iterator[AlertmanagerAdapter]:  # type: ignore[no-untyped-def]
    adapter = AlertmanagerAdapter(HttpSettings(name="alertmanager", url=alertmanager_server.url))
    adapter.post_alerts(prepare_alerts(ALERTS))
    yield adapter
    adapter.close()


def test_posted_alerts_keep_their_fingerprints(am: AlertmanagerAdapter) -> None:
    assert isinstance(am, AlertSource)
    by_fp = {a.fingerprint: a for a in am.alerts()}
    for raw in ALERTS:
        fp = alert_fingerprint(raw["labels"])  # type: ignore[arg-type]
        assert fp in by_fp
        assert by_fp[fp].labels == raw["labels"]
    checkout = by_fp[alert_fingerprint(ALERTS[0]["labels"])]  # type: ignore[arg-type]
    assert checkout.starts_at == 1772447580.0  # startsAt kept as in the bundle
    assert checkout.annotations["summary"] == "checkout 5xx above 5%"
    assert checkout.status == "firing"


def test_find_by_fingerprint_and_prefix(am: AlertmanagerAdapter) -> None:
    fp = alert_fingerprint(ALERTS[1]["labels"])  # type: ignore[arg-type]
    assert am.alert(fp) is not None
    hit = am.alert(fp[:8])
    assert hit is not None and hit.fingerprint == fp
    assert hit.labels["service"] == 'pay"ment\\'
    assert am.alert("ffffffffffffffff" if not fp.startswith("ffff") else "0000000000000000") is None


def test_ambiguous_prefix_is_an_error() -> None:
    body = [
        {"fingerprint": fp, "labels": {"alertname": fp}, "startsAt": "2026-03-02T10:33:00Z"}
        for fp in ("abc1000000000000", "abc2000000000000")
    ]
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=body))
    with httpx.Client(transport=transport) as client:
        adapter = AlertmanagerAdapter("http://am:9093", client)
        with pytest.raises(
            AmbiguousFingerprintError, match=r"'abc' matches 2 alerts.*give more digits"
        ):
            adapter.alert("abc")
        hit = adapter.alert("ABC2")
        assert hit is not None and hit.fingerprint == "abc2000000000000"


def test_filter_matchers_with_hostile_values(am: AlertmanagerAdapter) -> None:
    hits = am.alerts({"service": 'pay"ment\\'})
    assert [a.labels["alertname"] for a in hits] == ["HighLatency"]
    assert am.alerts({"service": "nobody"}) == []


def test_not_alertmanager_body_is_a_clear_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"data": []}))
    with httpx.Client(transport=transport) as client:
        adapter = AlertmanagerAdapter(
            HttpSettings(name="alertmanager", url="http://am:9093"), client
        )
        with pytest.raises(
            SourceError, match=r"Alertmanager at http://am:9093/api/v2/alerts: expected a list"
        ):
            adapter.alerts()


def test_a_firing_alerts_end_is_unknown_unless_stated(am: AlertmanagerAdapter) -> None:
    by_fp = {a.fingerprint: a for a in am.alerts()}
    latency = by_fp[alert_fingerprint(ALERTS[1]["labels"])]  # type: ignore[arg-type]
    # Alertmanager answers endsAt a day ahead (the lab's renewal deadline): not an end.
    assert latency.ends_at is None
    checkout = by_fp[alert_fingerprint(ALERTS[0]["labels"])]  # type: ignore[arg-type]
    # The lab keeps the bundle's end in an annotation; the adapter reads it.
    assert checkout.ends_at == 1772448600.0  # 2026-03-02T10:50:00Z
    assert checkout.annotations["correlator_ends_at"] == "2026-03-02T10:50:00Z"


def _one(alert: dict[str, object], now: float) -> AlertmanagerAdapter:
    body = [{"fingerprint": "abc1000000000000", "labels": {"alertname": "A"}} | alert]
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=body))
    client = httpx.Client(transport=transport)
    return AlertmanagerAdapter("http://am:9093", client, clock=lambda: now)


@pytest.mark.parametrize(
    ("alert", "expected"),
    [
        # Firing: endsAt is the renewal deadline, after "now".
        ({"startsAt": "2026-03-02T10:33:00Z", "endsAt": "2026-03-02T11:05:00Z"}, None),
        # Already past: a real end.
        ({"startsAt": "2026-03-02T10:33:00Z", "endsAt": "2026-03-02T10:50:00Z"}, 1772448600.0),
        ({"startsAt": "2026-03-02T10:33:00Z", "endsAt": "0001-01-01T00:00:00Z"}, None),
        # A stated end wins over the deadline; a garbled or inverted one is ignored.
        ({"startsAt": "2026-03-02T10:33:00Z", "endsAt": "2026-03-02T11:05:00Z",
          "annotations": {"correlator_ends_at": "2026-03-02T10:50:00Z"}}, 1772448600.0),
        ({"startsAt": "2026-03-02T10:33:00Z", "endsAt": "2026-03-02T11:05:00Z",
          "annotations": {"correlator_ends_at": "soon"}}, None),
        ({"startsAt": "2026-03-02T10:33:00Z", "endsAt": "2026-03-02T11:05:00Z",
          "annotations": {"correlator_ends_at": "2026-03-02T10:00:00Z"}}, None),
    ],
)  # fmt: skip
def test_end_times(alert: dict[str, object], expected: float | None) -> None:
    now = 1772449200.0  # 2026-03-02T11:00:00Z
    adapter = _one(alert, now)
    found = adapter.alert("abc1")
    adapter.http.client.close()
    assert found is not None and found.ends_at == expected
