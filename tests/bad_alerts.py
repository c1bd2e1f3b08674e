"""A corpus of bad webhook requests: every kind answers 4xx with a message naming the problem.

Used by tests/test_service_hardening.py and scripts/bench_webhook.py. Each case
is ``(name, body, content_type, statuses, needle)``: ``needle`` must appear in
the error message (case-insensitive).
"""

from __future__ import annotations

import json
from typing import Any

from service_support import payload, webhook_alert

Case = tuple[str, bytes, str, tuple[int, ...], str]
JSON = "application/json"


def _p(**alert_changes: Any) -> bytes:
    alert = webhook_alert()
    for key, value in alert_changes.items():
        if value is _DROP:
            alert.pop(key, None)
        else:
            alert[key] = value
    return json.dumps(payload(alert)).encode()


def _top(**changes: Any) -> bytes:
    body = payload(webhook_alert())
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode()


_DROP = object()


def _labels(labels: Any) -> bytes:
    return _p(labels=labels)


def _nested(depth: int) -> bytes:
    junk = "[" * depth + "]" * depth
    return (
        b'{"version":"4","status":"firing","junk":'
        + junk.encode()
        + b',"alerts":'
        + json.dumps([webhook_alert()]).encode()
        + b"}"
    )


def corpus() -> list[Case]:
    """Every bad request kind (more than 50)."""
    v = "value"
    cases: list[Case] = [
        # -- not JSON / not UTF-8
        ("empty body", b"", JSON, (400,), "empty"),
        ("whitespace body", b"   \n ", JSON, (400,), "empty"),
        ("truncated json", b'{"version": "4", "alerts": [', JSON, (400,), "not valid JSON"),
        ("trailing garbage", _p() + b"}}", JSON, (400,), "not valid JSON"),
        ("single quotes", b"{'version': '4'}", JSON, (400,), "not valid JSON"),
        ("NaN literal", b'{"version": NaN}', JSON, (400, 422), "version"),
        ("latin-1 bytes", b'{"version": "4\xe9"}', JSON, (400,), "UTF-8"),
        ("invalid utf-8 sequence", b'{"version": "4\xc3\x28"}', JSON, (400,), "UTF-8"),
        (
            "utf-16 body",
            json.dumps(payload(webhook_alert())).encode("utf-16"),
            JSON,
            (400,),
            "UTF-8",
        ),
        ("bare number", b"42", JSON, (422,), "webhook payload"),
        ("bare string", b'"hello"', JSON, (422,), "webhook payload"),
        ("top-level list", json.dumps([webhook_alert()]).encode(), JSON, (422,), "webhook"),
        ("null", b"null", JSON, (422,), "webhook"),
        ("deeply nested junk", _nested(20000), JSON, (400, 422), "JSON"),
        # -- content type
        ("text/plain", _p(), "text/plain", (415,), "application/json"),
        ("form encoded", b"version=4", "application/x-www-form-urlencoded", (415,), "Content-Type"),
        ("xml", b"<alerts/>", "application/xml", (415,), "Content-Type"),
        ("multipart", _p(), "multipart/form-data; boundary=x", (415,), "Content-Type"),
        # -- top level fields
        ("missing version", _top(version=_DROP), JSON, (422,), "version: required"),
        ("missing alerts", _top(alerts=_DROP), JSON, (422,), "alerts: required"),
        ("missing status", _top(status=_DROP), JSON, (422,), "status: required"),
        ("version as number", _top(version=4), JSON, (422,), "version"),
        ("unknown version", _top(version="3"), JSON, (422,), "not supported"),
        ("status unknown", _top(status="exploding"), JSON, (422,), "status"),
        ("alerts not a list", _top(alerts={"a": 1}), JSON, (422,), "alerts"),
        ("alert is a string", _top(alerts=["boom"]), JSON, (422,), "alerts.0"),
        ("alerts null", _top(alerts=None), JSON, (422,), "alerts"),
        ("truncatedAlerts text", _top(truncatedAlerts="many"), JSON, (422,), "truncatedAlerts"),
        ("truncatedAlerts huge", _top(truncatedAlerts=2**80), JSON, (422,), "truncatedAlerts"),
        ("groupLabels list", _top(groupLabels=["a"]), JSON, (422,), "groupLabels"),
        ("receiver object", _top(receiver={"x": 1}), JSON, (422,), "receiver"),
        ("receiver with NUL", _top(receiver="am\u0000x"), JSON, (422,), "NUL"),
        (
            "too many alerts",
            _top(alerts=[webhook_alert(n=str(i)) for i in range(1001)]),
            JSON,
            (413,),
            "max_alerts",
        ),
        # -- alert fields
        ("alert missing labels", _p(labels=_DROP), JSON, (422,), "labels: required"),
        ("alert missing startsAt", _p(startsAt=_DROP), JSON, (422,), "startsAt: required"),
        ("alert missing status", _p(status=_DROP), JSON, (422,), "status: required"),
        ("alert status unknown", _p(status="pending"), JSON, (422,), "status"),
        ("labels empty", _labels({}), JSON, (422,), "at least one label"),
        ("labels list", _labels(["alertname"]), JSON, (422,), "labels"),
        ("label value number", _labels({"alertname": 5}), JSON, (422,), "labels.alertname"),
        ("label value null", _labels({"alertname": None}), JSON, (422,), "labels.alertname"),
        ("label value object", _labels({"alertname": {"a": "b"}}), JSON, (422,), "labels"),
        ("label value list", _labels({"alertname": ["a"]}), JSON, (422,), "labels"),
        ("empty label name", _labels({"": v, "alertname": "X"}), JSON, (422,), "empty label"),
        ("label with NUL", _labels({"alertname": "X\u0000Y"}), JSON, (422,), "NUL"),
        ("label name with NUL", _labels({"a\u0000b": v, "alertname": "X"}), JSON, (422,), "NUL"),
        (
            "label lone surrogate",
            b'{"version":"4","status":"firing","alerts":[{"status":"firing",'
            b'"labels":{"alertname":"X\\ud800"},"startsAt":"2026-03-02T10:31:00Z"}]}',
            JSON,
            (400,),
            "not valid JSON",
        ),
        (
            "huge label value",
            _labels({"alertname": "X", "big": "v" * 200_000}),
            JSON,
            (422,),
            "200000 bytes",
        ),
        ("huge label name", _labels({"alertname": "X", "k" * 20000: v}), JSON, (422,), "bytes"),
        (
            "too many labels",
            _labels({f"l{i}": v for i in range(300)} | {"alertname": "X"}),
            JSON,
            (422,),
            "at most 256",
        ),
        ("annotations list", _p(annotations=["a"]), JSON, (422,), "annotations"),
        ("annotation number", _p(annotations={"summary": 1}), JSON, (422,), "annotations"),
        ("huge annotation", _p(annotations={"summary": "s" * 100_000}), JSON, (422,), "bytes"),
        ("startsAt number", _p(startsAt=1772000000), JSON, (422,), "startsAt"),
        ("startsAt null", _p(startsAt=None), JSON, (422,), "startsAt"),
        ("startsAt not a time", _p(startsAt="yesterday"), JSON, (422,), "RFC 3339"),
        ("startsAt year 1", _p(startsAt="0001-01-01T00:00:00Z"), JSON, (422,), "1970-2999"),
        ("startsAt year 999", _p(startsAt="0999-12-31T23:59:59Z"), JSON, (422,), "1970-2999"),
        ("startsAt year 1969", _p(startsAt="1969-12-31T23:59:59Z"), JSON, (422,), "1970-2999"),
        ("startsAt year 9999", _p(startsAt="9999-12-31T23:59:59Z"), JSON, (422,), "1970-2999"),
        ("startsAt year 3000", _p(startsAt="3000-01-01T00:00:00Z"), JSON, (422,), "1970-2999"),
        ("startsAt Feb 30", _p(startsAt="2026-02-30T00:00:00Z"), JSON, (422,), "RFC 3339"),
        ("startsAt hour 25", _p(startsAt="2026-03-02T25:00:00Z"), JSON, (422,), "RFC 3339"),
        ("startsAt empty", _p(startsAt=""), JSON, (422,), "RFC 3339"),
        (
            "startsAt huge offset",
            _p(startsAt="2026-03-02T10:00:00+99:00"),
            JSON,
            (422,),
            "RFC 3339",
        ),
        ("startsAt 5-digit year", _p(startsAt="12026-03-02T10:00:00Z"), JSON, (422,), "startsAt"),
        ("startsAt with NUL", _p(startsAt="2026-03-02T10:00:00Z\u0000"), JSON, (422,), "NUL"),
        ("endsAt not a time", _p(endsAt="soon"), JSON, (422,), "endsAt"),
        ("endsAt year 500", _p(endsAt="0500-01-01T00:00:00Z"), JSON, (422,), "1970-2999"),
        ("endsAt number", _p(endsAt=5), JSON, (422,), "endsAt"),
        ("generatorURL number", _p(generatorURL=5), JSON, (422,), "generatorURL"),
        ("generatorURL with NUL", _p(generatorURL="http://x/\u0000"), JSON, (422,), "NUL"),
        ("fingerprint not hex", _p(fingerprint="zz-not-hex"), JSON, (422,), "fingerprint"),
        ("fingerprint too long", _p(fingerprint="a" * 200), JSON, (422,), "fingerprint"),
        ("fingerprint number", _p(fingerprint=123), JSON, (422,), "fingerprint"),
        ("alert is null", _top(alerts=[None]), JSON, (422,), "alerts.0"),
        ("alert is a list", _top(alerts=[[1, 2]]), JSON, (422,), "alerts.0"),
        ("body too large", b"[" + b"1," * (3 * 1024 * 1024) + b"1]", JSON, (413,), "larger than"),
    ]
    return cases
