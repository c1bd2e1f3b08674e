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
