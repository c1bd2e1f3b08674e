"""Webhook payload validation: what is accepted, what is refused and with which status."""

from __future__ import annotations

import json

import pytest

from correlator.fingerprint import alert_fingerprint
from correlator.service.payload import Limits, PayloadError, parse_payload, to_alerts
from service_support import payload, webhook_alert


def _body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_valid_payload_becomes_alerts_with_fingerprints() -> None:
    a = webhook_alert(starts=1_772_000_000.5)
    b = webhook_alert(service="db")
    b["fingerprint"] = "ABCDEF0123456789"
    alerts = to_alerts(parse_payload(_body(payload(a, b))))
    assert alerts[0].fingerprint == alert_fingerprint(a["labels"])
    assert alerts[0].starts_at == 1_772_000_000.5
    assert alerts[0].ends_at is None  # Go's zero time means "not ended"
    assert alerts[0].service == "checkout"
    assert alerts[0].source == "webhook:correlator"
    assert alerts[1].fingerprint == "abcdef0123456789"


def test_unknown_fields_of_newer_alertmanagers_are_ignored() -> None:
    a = webhook_alert()
    a["notification_reason"] = "new"
    body = payload(a, routeLabels={"team": "x"}, notification_reason="repeat")
    assert len(parse_payload(_body(body)).alerts) == 1


def test_nanosecond_times_and_resolved_alerts() -> None:
    a = webhook_alert(status="resolved")
    a["startsAt"] = "2026-03-02T09:31:00.123456789Z"
    a["endsAt"] = "2026-03-02T10:41:00Z"
    [alert] = to_alerts(parse_payload(_body(payload(a, status="resolved"))))
    assert alert.status == "resolved"
    assert alert.starts_at == 1772443860.123456
    assert alert.ends_at == alert.starts_at - 0.123456 + 4200


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"version": "4", "alerts": [', 400, "not valid JSON"),
        (b"\xff\xfe{}", 400, "not valid UTF-8"),
        (b"   ", 400, "empty"),
        (b"[]", 422, "(top level)"),
        (_body({"status": "firing", "alerts": []}), 422, "version: required field is missing"),
        (_body(payload(version="5")), 422, "version '5' is not supported"),
        (_body(payload(version=4)), 422, "version: Input should be a valid string"),
        (_body(payload(webhook_alert(), status="burning")), 422, "status"),
        (
            _body(payload({"status": "firing", "labels": {"a": "b"}})),
            422,
            "alerts.0.startsAt: required field is missing",
        ),
        (
            _body(payload({**webhook_alert(), "labels": {"alertname": 3}})),
            422,
            "alerts.0.labels.alertname: Input should be a valid string",
        ),
        (_body(payload({**webhook_alert(), "labels": {}})), 422, "at least one label"),
        (_body(payload({**webhook_alert(), "startsAt": "yesterday"})), 422, "not an RFC 3339 time"),
        (_body(payload({**webhook_alert(), "fingerprint": "zz;drop"})), 422, "hex fingerprint"),
        (_body({**payload(), "alerts": {"a": 1}}), 422, "alerts: Input should be a valid array"),
    ],
)
def test_malformed_payloads_are_refused_with_a_clear_message(
    body: bytes, status: int, needle: str
) -> None:
    with pytest.raises(PayloadError) as info:
        parse_payload(body)
    assert info.value.status == status
    assert needle in info.value.message


def test_limits_bound_alert_count_label_size_and_label_count() -> None:
    many = payload(*[webhook_alert(starts=1_772_000_000 + i) for i in range(11)])
    with pytest.raises(PayloadError) as info:
        parse_payload(_body(many), Limits(max_alerts=10))
    assert info.value.status == 413 and "max_alerts" in info.value.message
    assert len(parse_payload(_body(many), Limits(max_alerts=11)).alerts) == 11

    huge = webhook_alert(big="x" * 20000)
    with pytest.raises(PayloadError) as info:
        parse_payload(_body(payload(huge)))
    assert info.value.status == 422 and "'big' is 20000 bytes" in info.value.message

    wide = webhook_alert(**{f"l{i}": "v" for i in range(300)})
    with pytest.raises(PayloadError) as info:
        parse_payload(_body(payload(wide)))
    assert "at most 256" in info.value.message
