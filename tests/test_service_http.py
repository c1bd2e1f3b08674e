"""The service over real HTTP (uvicorn on loopback): bad requests, auth, results API,
failures, deadlines, notifications, metrics and traces."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from correlator.config import Settings
from correlator.model import Alert
from correlator.service import Authenticator, ServiceConfig, WorkerSettings, create_app
from correlator.service.notify import NotifySettings
from correlator.service.payload import Limits
from service_support import (
    dumps,
    payload,
    serve_in_thread,
    slow_investigator,
    wait_for,
    webhook_alert,
)

TOKEN = "t0ken-" + "x" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(tmp_path: Path, **kw: Any) -> ServiceConfig:
    base: dict[str, Any] = {
        "store": str(tmp_path / "store.db"),
        "auth": Authenticator(token=TOKEN),
        "workers": WorkerSettings(concurrency=2, deadline=10, lease=5, poll=0.1),
        "limits": Limits(max_alerts=1000),
        "max_body": 2 * 1024 * 1024,
    }
    base.update(kw)
    return ServiceConfig(**base)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    app = create_app(_config(tmp_path), slow_investigator(Settings()))
    with serve_in_thread(app) as url:
        yield url


def _done(url: str, inv_id: str, headers: dict[str, str] = AUTH) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def check() -> bool:
        r = httpx.get(f"{url}/api/v1/investigations/{inv_id}", headers=headers)
        out.update(r.json())
        return r.status_code == 200 and out["status"] in ("done", "failed")

    wait_for(check, 20, f"investigation {inv_id}")
    return out


def _huge_alerts() -> bytes:
    return dumps(payload(*[webhook_alert(starts=1_772_000_000 + i) for i in range(5000)]))


def _chunks(size: int) -> Iterator[bytes]:
    for _ in range(size // 65536):
        yield b" " * 65536


BAD: list[tuple[str, Callable[[], Any], dict[str, str], int, str]] = [
    (
        "truncated json",
        lambda: b'{"version": "4", "status": "firing", "alerts": [{"status"',
        AUTH,
        400,
        "not valid JSON",
    ),
    (
        "wrong types",
        lambda: dumps(payload({**webhook_alert(), "labels": ["a"]})),
        AUTH,
        422,
        "alerts.0.labels",
    ),
    ("missing fields", lambda: dumps({"version": "4"}), AUTH, 422, "required field is missing"),
    (
        "unknown version",
        lambda: dumps(payload(webhook_alert(), version="3")),
        AUTH,
        422,
        "version '3' is not supported",
    ),
    ("10 MB body", lambda: b"[" + b"1," * (5 * 1024 * 1024) + b"1]", AUTH, 413, "larger than"),
    ("10 MB chunked body", lambda: _chunks(10 * 1024 * 1024), AUTH, 413, "larger than"),
    ("5000 alerts", _huge_alerts, AUTH, 413, "max_alerts"),
    (
        "huge label value",
        lambda: dumps(payload(webhook_alert(big="v" * 200_000))),
        AUTH,
        422,
        "'big' is 200000 bytes",
    ),
    ("invalid utf-8", lambda: b'{"version": "4\xc3\x28"}', AUTH, 400, "not valid UTF-8"),
    ("empty body", lambda: b"", AUTH, 400, "empty"),
    (
        "missing credentials",
        lambda: dumps(payload(webhook_alert())),
        {},
        401,
        "credentials missing",
    ),
    (
        "wrong token",
        lambda: dumps(payload(webhook_alert())),
        {"Authorization": "Bearer nope"},
        401,
        "credentials wrong",
    ),
    (
        "basic instead of bearer",
        lambda: dumps(payload(webhook_alert())),
        {"Authorization": "Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode()},
        401,
        "credentials wrong",
    ),
    (
        "token without scheme",
        lambda: dumps(payload(webhook_alert())),
        {"Authorization": TOKEN},
        401,
        "credentials wrong",
    ),
]


def test_bad_requests_get_the_right_4xx_and_the_service_keeps_serving(service: str) -> None:
    statuses = {}
    with httpx.Client(timeout=30) as client:
        for i, (name, body, headers, status, needle) in enumerate(BAD):
            r = client.post(f"{service}/webhook", content=body(), headers=headers)
            statuses[name] = r.status_code
            assert r.status_code == status, (name, r.text[:300])
            assert needle in r.json()["error"], (name, r.json())
            if status == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
            # Still serving after each bad request: a good one is accepted.
            good = client.post(
                f"{service}/webhook",
                content=dumps(payload(webhook_alert(starts=1_700_000_000 + i))),
                headers=AUTH,
            )
            assert good.status_code == 200, (name, good.text)
        assert client.get(f"{service}/healthz").json() == {"status": "ok"}
        listed = client.get(f"{service}/api/v1/investigations?limit=1000", headers=AUTH).json()
        # Only the good posts were stored: one per bad request, nothing from the bad ones.
        assert listed["count"] == len(BAD)
        metrics = client.get(f"{service}/metrics").text
    assert 'correlator_webhook_requests_total{code="413"} 3.0' in metrics
    assert 'correlator_webhook_requests_total{code="401"} 4.0' in metrics


def test_alert_is_investigated_once_and_readable_as_json_and_html(service: str) -> None:
    alert = webhook_alert(service="pay<ments>")
    with httpx.Client(timeout=10) as c:
        first = c.post(f"{service}/webhook", content=dumps(payload(alert)), headers=AUTH).json()
        again = c.post(f"{service}/webhook", content=dumps(payload(alert)), headers=AUTH).json()
        assert (first["new"], again["duplicate"]) == (1, 1)
        assert first["investigations"] == again["investigations"]
        inv_id = first["investigations"][0]
        record = _done(service, inv_id)
        assert record["status"] == "done" and record["attempts"] == 1
        assert record["investigation"]["findings"][0]["service"] == "pay<ments>"
        fp = record["fingerprint"]
        by_fp = c.get(f"{service}/api/v1/alerts/{fp}", headers=AUTH).json()
        assert by_fp["id"] == inv_id
        listed = c.get(
            f"{service}/api/v1/investigations",
            params={"service": "pay<ments>", "status": "done"},
            headers=AUTH,
        ).json()
        assert [i["id"] for i in listed["investigations"]] == [inv_id]
        assert "investigation" not in listed["investigations"][0]  # lists stay small
        for params in (
            {"service": "nope"},
            {"status": "queued"},
            {"alertname": "Other"},
            {"since": "2030-01-01T00:00:00Z"},
            {"until": "1000"},
        ):
            got = c.get(f"{service}/api/v1/investigations", params=params, headers=AUTH).json()
            assert got["count"] == 0, params
        bad = c.get(f"{service}/api/v1/investigations?status=bogus", headers=AUTH)
        assert bad.status_code == 400 and "queued" in bad.json()["error"]
        missing = c.get(f"{service}/api/v1/investigations/ffff", headers=AUTH)
        assert missing.status_code == 404
        assert c.get(f"{service}/api/v1/investigations").status_code == 401
        page = c.get(f"{service}/investigations/{inv_id}", headers=AUTH)
        assert page.headers["content-type"].startswith("text/html")
        assert "pay&lt;ments&gt;" in page.text and "pay<ments>" not in page.text
        index = c.get(f"{service}/investigations", headers=AUTH)
        assert inv_id in index.text and "pay&lt;ments&gt;" in index.text
        # Resolved marks the same investigation resolved.
        resolved = webhook_alert(service="pay<ments>", status="resolved")
        r = c.post(
            f"{service}/webhook", content=dumps(payload(resolved, status="resolved")), headers=AUTH
        ).json()
        assert (r["resolved"], r["investigations"]) == (1, [inv_id])
        after = c.get(f"{service}/api/v1/investigations/{inv_id}", headers=AUTH).json()
        assert after["resolved"] is True and after["status"] == "done"
        assert after["resolvedAt"] == "2026-02-25T06:23:20Z"


def test_failures_and_deadlines_are_stored_and_workers_go_on(tmp_path: Path) -> None:
    def investigate(alert: Alert) -> dict[str, Any]:
        if alert.labels.get("mode") == "raise":
            raise ValueError("backend said no")
        if alert.labels.get("mode") == "hang":
            time.sleep(3)
        if alert.labels.get("mode") == "junk":
            return 42  # type: ignore[return-value]
        return {"findings": [], "gaps": [], "timings": {}}

    cfg = _config(tmp_path, workers=WorkerSettings(concurrency=1, deadline=0.5, lease=5, poll=0.1))
    with serve_in_thread(create_app(cfg, investigate)) as url:
        ids = {}
        for i, mode in enumerate(["raise", "hang", "junk", "ok"]):
            body = payload(webhook_alert(starts=1_772_000_000 + i, mode=mode))
            r = httpx.post(f"{url}/webhook", content=dumps(body), headers=AUTH)
            ids[mode] = r.json()["investigations"][0]
        got = {mode: _done(url, i) for mode, i in ids.items()}
        metrics = httpx.get(f"{url}/metrics").text
        ready = httpx.get(f"{url}/readyz")
    assert got["raise"]["status"] == "failed"
    assert got["raise"]["error"] == "ValueError: backend said no"
    assert got["hang"]["status"] == "failed" and "deadline of 0.5s exceeded" in got["hang"]["error"]
    assert got["junk"]["status"] == "failed" and "returned int" in got["junk"]["error"]
    assert got["ok"]["status"] == "done"
    assert 'correlator_investigations_finished_total{outcome="failed"} 3.0' in metrics
    assert ready.status_code == 200


def test_basic_auth(tmp_path: Path) -> None:
    cfg = _config(tmp_path, auth=Authenticator(username="am", password="pässword"))
    good = "Basic " + base64.b64encode("am:pässword".encode()).decode()
    bad = "Basic " + base64.b64encode(b"am:password").decode()
    with serve_in_thread(create_app(cfg, slow_investigator(Settings()))) as url:
        body = dumps(payload(webhook_alert()))
        assert (
            httpx.post(f"{url}/webhook", content=body, headers={"Authorization": good}).status_code
            == 200
        )
        r = httpx.post(f"{url}/webhook", content=body, headers={"Authorization": bad})
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="correlator"'
        assert (
            httpx.post(
                f"{url}/webhook", content=body, headers={"Authorization": "Basic !!notbase64"}
            ).status_code
            == 401
        )
        assert httpx.post(f"{url}/webhook", content=body, headers=AUTH).status_code == 401


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
        else:
            cls.bodies.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("fmt", ["json", "slack"])
def test_finished_investigations_are_notified_with_retries(tmp_path: Path, fmt: str) -> None:
    handler = type("Recv", (_Receiver,), {"bodies": [], "fail_first": 2})
    hook = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    notify = NotifySettings(
        f"http://127.0.0.1:{hook.server_address[1]}/hook", fmt, retries=3, backoff=0.05
    )
    cfg = _config(tmp_path, notify=notify, public_url="https://correlator.example")
    try:
        with serve_in_thread(create_app(cfg, slow_investigator(Settings()))) as url:
            r = httpx.post(f"{url}/webhook", content=dumps(payload(webhook_alert())), headers=AUTH)
            inv_id = r.json()["investigations"][0]
            wait_for(lambda: bool(handler.bodies), 20, "the notification")
            metrics = httpx.get(f"{url}/metrics").text
    finally:
        hook.shutdown()
        hook.server_close()
    [body] = handler.bodies
    link = f"https://correlator.example/investigations/{inv_id}"
    if fmt == "json":
        assert body["id"] == inv_id and body["status"] == "done" and body["url"] == link
        assert body["investigation"]["findings"][0]["cause"] == "test"
    else:
        assert set(body) == {"text"}
        assert "*HighErrorRate* on `checkout`: 1 probable cause(s)" in body["text"]
        assert "1. test in `checkout` (50%)" in body["text"] and link in body["text"]
    assert 'correlator_notifications_total{outcome="sent"} 1.0' in metrics


def test_every_stage_is_traced(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(_config(tmp_path), slow_investigator(Settings()), tracer_provider=provider)
    with serve_in_thread(app) as url:
        r = httpx.post(f"{url}/webhook", content=dumps(payload(webhook_alert())), headers=AUTH)
        _done(url, r.json()["investigations"][0])
        wait_for(
            lambda: any(s.name == "store_result" for s in exporter.get_finished_spans()), 5, "spans"
        )
        time.sleep(0.2)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {
        "webhook",
        "store_alerts",
        "investigation",
        "stage.collect",
        "stage.rank",
        "store_result",
    } <= set(spans)
    inv = spans["investigation"]
    assert spans["stage.collect"].parent is not None
    assert spans["stage.collect"].parent.span_id == inv.context.span_id
    assert spans["store_alerts"].parent.span_id == spans["webhook"].context.span_id  # type: ignore[union-attr]
    assert inv.attributes is not None and inv.attributes["correlator.alert.name"] == "HighErrorRate"
